"""MCLRec's augmenter ``mclrec`` (two data augmentations, two learnable augmenters) and term ``mcl``.

Read from the official code (QinHsiu/MCLRec, RecBole 0.x fork):

* **Data augmentations** — per sequence two *different* operators from
  {crop, mask, reorder} (CL4SRec's ``random``), drawn **once per batch** and
  re-encoded by each of the three optimiser steps. Crop keeps
  ``floor(0.5·n)`` items (the code's ``eta = 1 − crop_ratio``, crop_ratio 0.5),
  mask sets ``floor(0.5·n)`` items to padding 0 (the code's "semantic
  masking"), reorder shuffles a window of ``floor(0.8·n)``.
* **Learnable augmenters** ``w1``, ``w2``: MLP d → 32 → 16 → d, GELU after
  the first two layers, rows L2-normalised; PyTorch's default Linear init
  (they live outside the RecBole model, so its N(0, 0.02) init never reaches
  them). ``z1 = w1(h1)``, ``z2 = w2(h2)``.
* **Losses** — ``cl`` (the generic term on (h1, h2): ``L_cl1``, weight λ = 0
  on Beauty) and ``mcl`` (:func:`.formulas.meta_contrast`: ``L_cl2 + 0.1·R``,
  weight β).
* **Three optimiser steps per batch** (:meth:`MCLRecAugmenter.optim_plan`):
  (1) learners frozen, the encoder minimises CE + λ L_cl1 + β (L_cl2 + 0.1 R);
  (2) encoder frozen, the learners (their own Adam, the run's lr) minimise
  λ L_cl1 + L_cl2 + 0.1 R; (3) as (1). First-order alternation, as the code.
  Step (2) computes only the parts it minimises (``seqcl.optimplan``): no
  main pass, no CE (``hidden_slots = "none"``: the views never read them).

Where this follows BASELINES.md rather than the code's ``MCLRec.yaml``: β =
0.05 (the yaml's default is 0.01; the repository gives no Beauty command).
Not followed: the code ranks full-sort without masking history items (seqcl's
evaluation protocol is the framework's, ``eval.exclude_history``), and its
positions count from the oldest item of a right-padded sequence (seqcl's
SASRec uses slot positions).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from seqcl.errors import ConfigError
from seqcl.interfaces import Augmenter, Batch, BuildContext, Encoder, OptimPlan, ParamGroup, PlanStep, Views
from seqcl.registry import AugmenterInfo
from seqcl_cl4srec.augmenter import RandomAugmenter, RandomOptions, encode_pair

from . import formulas

LEARNERS = "learners"


@dataclass
class MCLRecOptions(RandomOptions):
    """The code's Beauty augmentation ratios (crop keeps 0.5, mask 0.5 with padding, reorder 0.8)
    and the learnable augmenters' hidden sizes."""

    crop_ratio: float = 0.5
    mask_ratio: float = 0.5
    reorder_ratio: float = 0.8
    mask_with: Literal["token", "padding"] = "padding"
    learner_sizes: list[int] = field(default_factory=lambda: [32, 16])

    def validate(self) -> None:
        super().validate()
        if not self.learner_sizes or any(s < 1 for s in self.learner_sizes):
            raise ConfigError(f"mclrec.learner_sizes must be a non-empty list of sizes >= 1, got {self.learner_sizes}")


class Learner(nn.Module):
    """A learnable augmenter: MLP d → sizes… → d, GELU between layers, unit-norm rows. (N, d) → (N, d)."""

    def __init__(self, d: int, sizes: list[int]) -> None:
        super().__init__()
        dims = [d, *sizes, d]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims, dims[1:]))

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers[:-1]:
            x = F.gelu(layer(x))
        return F.normalize(self.layers[-1](x), dim=-1)


class MCLRecAugmenter(RandomAugmenter):
    """Views ``h1``, ``h2`` (two data augmentations), ``z1 = w1(h1)``, ``z2 = w2(h2)``; pair (h1, h2)."""

    default_terms = {"cl": {"weight": 0.0, "tau": 1.0}, "mcl": {"weight": 0.05}}
    pairs = [("h1", "h2")]
    hidden_slots = "none"  # the views are encodings of their own: the learner step skips the main pass

    def __init__(self, options: MCLRecOptions, ctx: BuildContext) -> None:
        super().__init__(options, ctx)
        self.learner1 = Learner(ctx.hidden_size, list(options.learner_sizes))
        self.learner2 = Learner(ctx.hidden_size, list(options.learner_sizes))
        self._drawn: tuple[Tensor, Tensor, Tensor] | None = None  # (batch items, view 1, view 2)

    def forward(self, batch: Batch, encoder: Encoder, h_in: Tensor | None, hidden: Tensor | None) -> Views:
        if self._drawn is None or self._drawn[0] is not batch.items:  # once per batch, as the code's loader
            self._drawn = (batch.items, *self.augment(batch.items, self.generator(batch.items.device)))
        h1, h2 = encode_pair(encoder, self._drawn[1], self._drawn[2])
        return Views({"h1": h1, "h2": h2, "z1": self.learner1(h1), "z2": self.learner2(h2)}, list(self.pairs))

    def optim_plan(self, weights: dict[str, float]) -> OptimPlan:
        """Encoder step, learners step, encoder step (see the module doc)."""
        if "mcl" not in weights:
            raise ConfigError("augmenter mclrec needs its loss term mcl: it is what trains the learnable augmenters")
        encoder = PlanStep(update=("model",))
        learners = PlanStep(update=(LEARNERS,), weights={"cl": weights.get("cl", 0.0), "mcl": 1.0})
        params = [*self.learner1.parameters(), *self.learner2.parameters()]
        return OptimPlan([ParamGroup(LEARNERS, params)], [encoder, learners, encoder])


@dataclass
class MetaContrastOptions:
    """``mcl``: β · (L_cl2 + rl_weight · R); τ of the three NT-Xent terms (the code fixes 1)."""

    weight: float = 0.05
    tau: float = 1.0
    rl_weight: float = 0.1

    def validate(self) -> None:
        if self.weight < 0 or self.rl_weight < 0:
            raise ConfigError(f"loss.mcl.weight and loss.mcl.rl_weight must be >= 0, got {self.weight}, "
                              f"{self.rl_weight}")
        if not self.tau > 0:
            raise ConfigError(f"loss.mcl.tau must be > 0, got {self.tau}")


class MetaContrastTerm:
    """``L_cl2 + rl_weight · R`` on the views ``h1``, ``h2``, ``z1``, ``z2`` of augmenter ``mclrec``."""

    needs_negatives = True
    needs_global_batch = True  # in-batch negatives over all ranks' rows (seqcl.interfaces.LossTerm)

    def __init__(self, options: MetaContrastOptions, ctx: BuildContext) -> None:
        self.check(options, AugmenterInfo(ctx.augmenter, ctx.view_pairs))
        self.options = options

    @staticmethod
    def check(options: MetaContrastOptions, augmenter: AugmenterInfo) -> None:
        if augmenter.name != "mclrec":
            raise ConfigError(f"loss term mcl needs the views of augmenter mclrec (h1, h2, z1, z2); "
                              f"augmenter {augmenter.name!r} has none")

    def __call__(self, views: Views, batch: Batch) -> Tensor:
        t, o = views.tensors, self.options
        return formulas.meta_contrast(t["h1"], t["h2"], t["z1"], t["z2"], o.tau, o.rl_weight)
