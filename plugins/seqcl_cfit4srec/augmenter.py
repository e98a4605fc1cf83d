"""CFIT4SRec's augmenter ``cfit4srec``: six views from the frequency domain, contrasted flattened.

Read from the official code (zhangyichi1Z/CFIT4SRec, ``cfit4srec.py``, RecBole 0.x fork):

* ``X = LN(E + P)`` **before** the embedding dropout (``encoder.embed_without_dropout``), all T slots
  (the FFT mixes every slot, padding included: a trimmed batch is padded back to T columns);
* three filters on the centred 2-D spectrum over (T, d) (:mod:`.filters`): low-pass (radius ≤ T // 4),
  high-pass (radius ≥ T // 4), band-stop (width 2; its centre drawn uniformly in 0..min(T, d) // 2,
  **per view**, as the code's two ``random.choice`` calls);
* two views per filter: the filtered ``X``, the embedding dropout, the encoder's Transformer
  on every slot (``contextualize_padded``, one call for all six: the filtered padding slots are
  non-zero and read), the whole output sequence flattened to (B, T·d) — views of a declared shape
  (``view_shapes``);
* the generic ``cl`` term on the three pairs: Σ NT-Xent, dot product, τ = 1, weight λ = 0.1 (the code's
  ``ncelosss`` is NT-Xent with 2N − 2 in-batch negatives).

Low- and high-pass views of one filter differ only by dropout (the filter is deterministic), as in the
code, so the filter runs four times (low, high, two band-stops), not six, from one ``fft2``, with the
masks stored unshifted (:func:`.filters.filter_unshifted`, equal to :func:`.filters.frequency_filter`).
The core's main pass reads only ``H[:, -1]`` (``hidden_slots = "last"``), so it keeps the encoder's
shortcuts (SASRec: packed, trimmed, last layer for the last slot); only the views run every slot.

Dropout: the code's ``seq.yaml`` uses 0.5 / 0.5 (SASRec's defaults here); BASELINES.md lists 0.3
(the paper's) — the code is followed. The yaml's ``inner_size: 258`` is taken as SASRec's 256.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor

from seqcl.errors import ConfigError
from seqcl.interfaces import Augmenter, Batch, BuildContext, Encoder, Views
from seqcl.rng import DeviceGenerators, OwnsGenerators

from . import filters

SEED_OFFSET = 0xCF17
FILTERS = ("low", "high", "band")


@dataclass
class CFIT4SRecOptions:
    """Radii of the low- and high-pass filters (0: T // 4, the code's default) and the band-stop width."""

    low_radius: float = 0.0
    high_radius: float = 0.0
    band_width: float = 2.0

    def validate(self) -> None:
        if self.low_radius < 0 or self.high_radius < 0 or self.band_width <= 0:
            raise ConfigError(f"cfit4srec: radii must be >= 0 and band_width > 0, got {self.low_radius}, "
                              f"{self.high_radius}, {self.band_width}")


class CFIT4SRecAugmenter(OwnsGenerators, Augmenter):
    """Views ``low1``, ``low2``, ``high1``, ``high2``, ``band1``, ``band2``, each (B, T·d)."""

    default_terms = {"cl": {"weight": 0.1, "tau": 1.0}}
    pairs = [(f"{f}1", f"{f}2") for f in FILTERS]
    hidden_slots = "last"  # the views are passes of their own; the main pass is read at its last slot
    reads_embedding = False
    encoder_methods = ("embed_without_dropout", "embedding_dropout", "contextualize_padded")

    def __init__(self, options: CFIT4SRecOptions, ctx: BuildContext) -> None:
        super().__init__()
        t, d = ctx.max_len, ctx.hidden_size
        self.max_len = t
        low = options.low_radius or t // 4
        high = options.high_radius or t // 4
        self.register_buffer("low", filters.low_pass(t, d, low), persistent=False)
        self.register_buffer("high", filters.high_pass(t, d, high), persistent=False)
        self.register_buffer("bands", filters.band_stops(t, d, options.band_width), persistent=False)
        # the same masks on the unshifted spectrum (what the filter multiplies; see filters.filter_unshifted)
        self.register_buffer("low_high_u", filters.unshift(torch.stack([self.low, self.high])), persistent=False)
        self.register_buffer("bands_u", filters.unshift(self.bands), persistent=False)
        self.view_shapes = {name: (t * d,) for pair in self.pairs for name in pair}
        self.generators = DeviceGenerators(int(ctx.seed) + SEED_OFFSET)

    def band_centres(self, device: torch.device) -> Tensor:
        """(2,) the two band-stop views' centres, drawn afresh from the augmenter's stream."""
        return torch.randint(len(self.bands), (2,), generator=self.generator(device), device=device)

    def masks(self, device: torch.device) -> Tensor:
        """(6, T, d) on the centred spectrum: low, low, high, high, band(c1), band(c2), centres drawn afresh."""
        c = self.band_centres(device)
        return torch.stack([self.low, self.low, self.high, self.high, self.bands[c[0]], self.bands[c[1]]])

    def forward(self, batch: Batch, encoder: Encoder, h_in: Tensor | None, hidden: Tensor) -> Views:
        items = F.pad(batch.items, (self.max_len - batch.items.shape[1], 0))  # (B, T): trimmed columns back
        x = encoder.embed_without_dropout(items)  # (B, T, d)
        c = self.band_centres(x.device)
        four = filters.filter_unshifted(x, torch.cat([self.low_high_u, self.bands_u[c]]))  # (4, B, T, d)
        six = four[torch.tensor([0, 0, 1, 1, 2, 3], device=x.device)]  # low, low, high, high, band1, band2
        flat = rearrange(six, "v b t d -> (v b) t d")
        out = encoder.contextualize_padded(encoder.embedding_dropout(flat), repeat(items, "b t -> (v b) t", v=6))
        views = rearrange(out, "(v b) t d -> v b (t d)", v=6)
        names = [name for pair in self.pairs for name in pair]
        return Views(dict(zip(names, views)), list(self.pairs))
