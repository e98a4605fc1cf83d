"""DuoRec's model-level augmenter ``dropout`` (SPEC §9).

Views, each (B, d):

* ``h``       — the main pass, ``hidden[:, -1]`` (passed in by the core, not recomputed);
* ``h_prime`` — ``encoder.encode(batch.items)`` again: another dropout sample;
* ``h_sem``   — the encoding of another **training sample** with the same target
  item, drawn at random each step from the same-target index (the sample itself
  when no other has its target).

``mode`` picks the pair: ``unsupervised`` (h, h_prime), ``supervised`` (h, h_sem),
``duorec`` (default, DuoRec's ``us_x``) (h_prime, h_sem). Only the passes the mode
needs are computed; ``h_prime`` and ``h_sem`` share one encoder call.

The ``cl`` term ships with cosine similarity and τ = 0.5 (chosen on Beauty's
validation split), not DuoRec's dot product and τ = 1 (``loss.cl.sim=dot
loss.cl.tau=1``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from seqcl.data.dataset import trim_padding, windows
from seqcl.errors import ConfigError
from seqcl.interfaces import Augmenter, Batch, BuildContext, Encoder, Views
from seqcl.rng import DeviceGenerators, OwnsGenerators

from .index import draw_same_target, load_or_build

PAIRS = {
    "unsupervised": [("h", "h_prime")],
    "supervised": [("h", "h_sem")],
    "duorec": [("h_prime", "h_sem")],
}
#: offset of the augmenter's RNG stream from the run's seed (the batch shuffle uses the seed itself)
SEED_OFFSET = 0xD40


@dataclass
class DuoRecOptions:
    """``mode``: which pair is contrasted — unsupervised (h, h'), supervised (h, h_sem), duorec (h', h_sem)."""

    mode: Literal["unsupervised", "supervised", "duorec"] = "duorec"


class DuoRecAugmenter(OwnsGenerators, Augmenter):
    """Views ``h``, ``h_prime``, ``h_sem`` (those the mode needs); one pair."""

    #: cosine similarity, τ 0.5: chosen on Beauty's validation split (docs/results.md §2; at DuoRec's
    #: dot product and τ = 1, valid MRR@10 0.0341 after 10 epochs against cos τ 0.5's 0.0534 and plain
    #: SASRec's 0.0537). ``loss.cl.sim=dot loss.cl.tau=1`` is the paper's setting.
    default_terms = {"cl": {"weight": 0.1, "tau": 0.5, "sim": "cos"}}
    hidden_slots = "last"  # ``h`` is the main pass's last slot; the other views are encodings of their own
    reads_embedding = False

    @classmethod
    def pairs_for(cls, options: DuoRecOptions | None) -> list[tuple[str, str]]:
        """The pair of ``options.mode``, known before building (loss terms are checked against it)."""
        return list(PAIRS[(options or DuoRecOptions()).mode])

    def __init__(self, options: DuoRecOptions | None, ctx: BuildContext) -> None:
        super().__init__()
        options = options or DuoRecOptions()
        self.mode = options.mode
        self.pairs = self.pairs_for(options)
        self.needed = {name for pair in self.pairs for name in pair}
        self.max_len = ctx.max_len
        self.generators = DeviceGenerators(int(ctx.seed) + SEED_OFFSET)
        if "h_sem" in self.needed:
            samples = ctx.train
            if samples is None:
                raise ConfigError(f"dropout (mode {self.mode}) needs the training samples; none were given")
            index = load_or_build(ctx.cache_dir, ctx.data_key, samples.targets, ctx.num_items)
            # non-persistent buffers: they follow .to(device) but stay out of checkpoints
            for name, value in (("order", index.order), ("counts", index.counts), ("position", index.position),
                                ("group_start", index.group_start), ("targets", samples.targets),
                                ("flat_items", samples.data.items), ("starts", samples.starts),
                                ("ends", samples.ends)):
                self.register_buffer(name, value.to(torch.long).clone(), persistent=False)

    def same_target_samples(self, sample_ids: Tensor) -> Tensor:
        """(B,) sample ids → (B,) ids of random other training samples with the same targets."""
        ids = sample_ids.to(self.order.device)
        return draw_same_target(self.order, self.counts, self.position, self.group_start, self.targets, ids,
                                self.generator(ids.device))

    def forward(self, batch: Batch, encoder: Encoder, h_in: Tensor, hidden: Tensor) -> Views:
        views: dict[str, Tensor] = {}
        if "h" in self.needed:
            views["h"] = hidden[:, -1]
        passes: list[tuple[str, Tensor]] = []
        if "h_prime" in self.needed:
            passes.append(("h_prime", batch.items))
        if "h_sem" in self.needed:
            other = self.same_target_samples(batch.sample_ids)
            sem = windows(self.flat_items, self.starts[other], self.ends[other], self.max_len)
            sem = sem.to(batch.items.device)
            passes.append(("h_sem", trim_padding(sem) if sem.device.type == "cpu" else sem))
        width = max(x.shape[1] for _, x in passes)
        stacked = torch.cat([F.pad(x, (width - x.shape[1], 0)) for _, x in passes])  # left-pad to one width
        if stacked.device.type == "cpu":  # trimming is exact (slot positions) but syncs: CPU only
            stacked = trim_padding(stacked)
        encoded = encoder.encode(stacked).split(batch.size)
        views.update({name: h for (name, _), h in zip(passes, encoded)})
        return Views(views, list(self.pairs))
