"""BERT4Rec's cloze objective ``cloze``: predict masked items of the sequence, bidirectionally.

Per training sample (input window ``items``, next item ``target``):

1. **Sequence.** The target is appended after the window: the window moves
   left by one slot and the target takes the last slot, ``T - 1`` — the slot
   where :meth:`BERT4Rec.encode` puts ``[mask]`` at inference. (A window
   narrower than ``T`` grows by one column instead; exact, see the encoder.)
2. **Positions.** With probability ``last_only`` the sample is a *last-only*
   instance: only the last slot (the target) is masked — the official code's
   extra ``mask_last`` instance per window and RecBole's ``ft_ratio`` (per
   sample here, per batch there), the instances whose absence cost RecBole much
   accuracy (RecBole #1522/#1530). Otherwise it is a *cloze* instance:
   ``k = clamp(floor(mask_ratio · n + 1/2), 1, n)`` of its ``n`` real positions
   (target included), drawn uniformly without replacement — the official count
   ``max(1, round(len · masked_lm_prob))``, rounding half up as its Python 2 did.
3. Every chosen position is replaced by ``[mask]`` (the official Beauty
   ``mask_prob = 1.0`` and RecBole: no 80/10/10 split).
4. **Loss.** All-item softmax cross-entropy of each masked position's output
   against the real item rows ``1..num_items`` of ``encoder.item_table()``
   (never the padding, augmenter or ``[mask]`` rows), averaged over all
   masked positions of the batch (official and RecBole).

The positions come from the objective's own generators (``seqcl.rng``), seeded
from the run's seed, so dropout's global stream does not shift with them and
``--resume`` continues the same stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from seqcl.errors import ConfigError, PluginError
from seqcl.interfaces import Batch, BuildContext, Encoder, Objective
from seqcl.rng import DeviceGenerators, OwnsGenerators

#: offset of the masking stream from the run's seed (the batch shuffle uses the seed itself)
SEED_OFFSET = 0xB4E7


@dataclass
class ClozeOptions:
    """``mask_ratio``: share of a cloze instance's positions that are masked (RecBole 0.2;
    the official Beauty run uses 0.6). ``last_only``: probability that a sample masks
    only its last position, the target (RecBole's ``ft_ratio`` 0.5)."""

    mask_ratio: float = 0.2
    last_only: float = 0.5

    def validate(self) -> None:
        if not 0.0 < self.mask_ratio <= 1.0:
            raise ConfigError(f"cloze.mask_ratio must be in (0, 1], got {self.mask_ratio}")
        if not 0.0 <= self.last_only <= 1.0:
            raise ConfigError(f"cloze.last_only must be in [0, 1], got {self.last_only}")


def append_targets(items: Tensor, targets: Tensor, max_len: int) -> Tensor:
    """(B, W) windows, (B,) targets → (B, min(W + 1, T)): each target appended in the last slot."""
    return torch.cat([items, targets.view(-1, 1).to(items.dtype)], dim=1)[:, -max_len:]


def mask_counts(real: Tensor, mask_ratio: float) -> Tensor:
    """(B, L) bool real positions → (B,) long ``clamp(floor(mask_ratio · n + 1/2), 1, n)``."""
    n = real.sum(dim=1)
    k = torch.floor(n.to(torch.float64) * mask_ratio + 0.5).to(torch.long)
    return torch.minimum(k.clamp(min=1), n)


def draw_positions(seq: Tensor, mask_ratio: float, last_only: float, generator: torch.Generator,
                   max_len: int | None = None) -> Tensor:
    """(B, L) sequences (last slot real) → (B, L) bool: the positions to mask (see the module doc).

    Draws ``B`` then ``B·max_len`` uniforms from ``generator`` (``max_len`` defaults
    to L), whatever the options and the batch's width: slot ``s`` always gets the
    same key, so a trimmed batch masks exactly the positions its full-width
    version would, and the stream advances the same way for every batch.
    """
    b, length = seq.shape
    width = length if max_len is None else max_len
    if width < length:
        raise ValueError(f"sequences of width {length} are longer than max_len {width}")
    real = seq > 0
    last = torch.rand(b, generator=generator, device=seq.device) < last_only
    keys = torch.rand(b, width, generator=generator, device=seq.device)[:, width - length:]
    keys = keys.masked_fill(~real, 2.0)  # padding sorts after every real position
    rank = keys.argsort(dim=1).argsort(dim=1)  # rank of each position's key within its row
    chosen = rank < mask_counts(real, mask_ratio).unsqueeze(1)
    only_last = torch.zeros_like(chosen)
    only_last[:, -1] = True
    return torch.where(last.unsqueeze(1), only_last, chosen)


def cloze_loss(encoder: Encoder, seq: Tensor, chosen: Tensor, num_items: int) -> Tensor:
    """Mean all-item softmax CE over the ``chosen`` positions of ``seq`` (B, L), which are
    replaced by the encoder's ``[mask]`` first; scored against item rows ``1..num_items``."""
    inputs = seq.masked_fill(chosen, encoder.mask_token)
    h = encoder.outputs_at(inputs, chosen)  # (M, d)
    labels = seq[chosen]  # (M,) in 1..num_items
    table = encoder.item_table()[1:num_items + 1]
    return F.cross_entropy(h @ table.T, labels - 1)


class ClozeObjective(OwnsGenerators, Objective):
    """BERT4Rec's masked-item (cloze) objective; runs its own encoder pass on the masked sequence."""

    uses_main_pass = False

    def __init__(self, options: ClozeOptions | None, ctx: BuildContext) -> None:
        super().__init__()
        options = options or ClozeOptions()
        self.mask_ratio = float(options.mask_ratio)
        self.last_only = float(options.last_only)
        self.num_items = ctx.num_items
        self.max_len = ctx.max_len
        self.generators = DeviceGenerators(int(ctx.seed) + SEED_OFFSET)

    def forward(self, encoder: Encoder, batch: Batch, h: Tensor | None = None) -> Tensor:
        if not (hasattr(encoder, "mask_token") and callable(getattr(encoder, "outputs_at", None))):
            raise PluginError(f"objective cloze needs a bidirectional encoder with a [mask] token "
                              f"(bert4rec), got {type(encoder).__name__}")
        seq = append_targets(batch.items, batch.targets, self.max_len)
        chosen = draw_positions(seq, self.mask_ratio, self.last_only, self.generator(seq.device),
                                self.max_len)
        return cloze_loss(encoder, seq, chosen, self.num_items)
