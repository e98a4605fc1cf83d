"""Shipped plugin: the main training objectives ``ce``, ``sampled`` and ``bce`` (SPEC §3).

Each scores the main pass's user representation ``h`` (B, d) against the real
item rows ``1..num_items`` of ``encoder.item_table()``; extra rows (a mask
token) are never scored. The formulas are pure functions in :mod:`.formulas`.

* ``ce`` (default for SASRec): softmax over all real items.
  ``ce.include_pad_logit`` adds the padding logit, for RecBole parity only.
* ``sampled``: softmax over the target and ``sampled.negatives`` items drawn
  uniformly outside the user's input and the target; K = 1 is BPR.
* ``bce``: the original SASRec loss, one such negative, binary cross-entropy.

The sampled objectives draw from their own generator (seeded from the run's
seed), which checkpoints keep (``seqcl.rng``).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from seqcl.errors import ConfigError
from seqcl.hookspecs import hookimpl
from seqcl.interfaces import Batch, BuildContext, Encoder, Objective
from seqcl.rng import DeviceGenerators, OwnsGenerators

from . import formulas

#: offset of the negative-sampling stream from the run's seed
SEED_OFFSET = 0x5A4D


@dataclass
class CEOptions:
    include_pad_logit: bool = False  # RecBole's CE also scores the padding row: parity benchmarks only


class CrossEntropy(Objective):
    """Full softmax over all real items (SPEC §3 ``ce``)."""

    def __init__(self, options: CEOptions, ctx: BuildContext) -> None:
        super().__init__()
        self.num_items, self.include_pad_logit = ctx.num_items, options.include_pad_logit

    def forward(self, encoder: Encoder, batch: Batch, h: Tensor | None) -> Tensor:
        return formulas.full_softmax_ce(h, encoder.item_table(), batch.targets, self.num_items,
                                        self.include_pad_logit)


@dataclass
class SampledOptions:
    negatives: int = 1  # K; 1 = BPR

    def validate(self) -> None:
        if self.negatives < 1:
            raise ConfigError(f"sampled.negatives must be >= 1, got {self.negatives}")


class _Sampling(OwnsGenerators, Objective):
    k = 1

    def __init__(self, ctx: BuildContext) -> None:
        super().__init__()
        self.num_items = ctx.num_items
        self.generators = DeviceGenerators(int(ctx.seed) + SEED_OFFSET)

    def negatives(self, batch: Batch) -> Tensor:
        """(B, K) items outside each row's input and its target."""
        return formulas.sample_negatives(batch.items, batch.targets, self.num_items, self.k,
                                         self.generator(batch.items.device))


class SampledSoftmax(_Sampling):
    """Softmax over the target and K uniform negatives, no logQ correction (SPEC §3 ``sampled``)."""

    def __init__(self, options: SampledOptions, ctx: BuildContext) -> None:
        super().__init__(ctx)
        self.k = options.negatives

    def forward(self, encoder: Encoder, batch: Batch, h: Tensor | None) -> Tensor:
        return formulas.sampled_softmax_ce(h, encoder.item_table(), batch.targets, self.negatives(batch))


class BinaryCE(_Sampling):
    """Original SASRec: BCE of the target against one negative, at the last slot (SPEC §3 ``bce``)."""

    def __init__(self, options: None, ctx: BuildContext) -> None:
        super().__init__(ctx)

    def forward(self, encoder: Encoder, batch: Batch, h: Tensor | None) -> Tensor:
        return formulas.bce(h, encoder.item_table(), batch.targets, self.negatives(batch))


@hookimpl
def register_objectives(register):
    register("ce", CrossEntropy, "softmax cross-entropy over all real items (SPEC §3 default)", options=CEOptions)
    register("sampled", SampledSoftmax, "sampled softmax: target + K uniform negatives (K = 1: BPR)",
             options=SampledOptions)
    register("bce", BinaryCE, "original SASRec: binary cross-entropy with one negative")
