"""Shipped plugin: generic contrastive loss terms over named view pairs.

``cl`` (NT-Xent / InfoNCE, SPEC §5), ``align`` (ACLSRec's distance constraint,
SPEC §6) and ``boundary`` (ACLSRec's dynamic-boundary regularizer, SPEC §7).
They read only ``Views.pairs``, so any augmenter can use them: ``R`` on
CL4SRec's two views is ``--augmenter crop --with boundary``. All three declare
``needs_global_batch``: under torchrun their negatives (and means) are the
global batch, gathered across ranks by the core.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from . import formulas
from seqcl.errors import ConfigError
from seqcl.hookspecs import hookimpl
from seqcl.interfaces import Batch, BuildContext, Views
from seqcl.registry import AugmenterInfo


def _check_weight(name: str, weight: float) -> None:
    if weight < 0:
        raise ConfigError(f"loss.{name}.weight must be >= 0, got {weight}")


def _check_tau(name: str, tau: float) -> None:
    if not tau > 0:
        raise ConfigError(f"loss.{name}.tau must be > 0, got {tau}")


def _require_pairs(term: str, augmenter: str, pairs: list[tuple[str, str]], exactly: int | None = None) -> None:
    shown = ", ".join(f"({a}, {b})" for a, b in pairs) or "no view pairs"
    if exactly is None and not pairs:
        raise ConfigError(f"loss term {term} needs at least one view pair; augmenter {augmenter!r} provides none")
    if exactly is not None and len(pairs) != exactly:
        raise ConfigError(
            f"loss term {term} needs exactly {exactly} view pairs (anchor, restored), (perturbed, perturbed'); "
            f"augmenter {augmenter!r} provides {len(pairs)}: {shown}"
        )


class _PairTerm:
    """The pair requirement, checked twice: at resolve time against the augmenter's declared
    pairs (``check``, so ``--dry-run`` reports it) and at build time against its actual ones."""

    term: str = ""
    exactly: int | None = None
    needs_global_batch = True  # negatives and means over all ranks' rows (seqcl.interfaces.LossTerm)

    @classmethod
    def check(cls, options: object, augmenter: AugmenterInfo) -> None:
        _require_pairs(cls.term, augmenter.name, augmenter.pairs, cls.exactly)

    @classmethod
    def _check_built(cls, ctx: BuildContext) -> None:
        _require_pairs(cls.term, ctx.augmenter, ctx.view_pairs, cls.exactly)


def _pair_similarities(views: Views, sim: str) -> list[Tensor]:
    """``pair_similarity`` of every pair, computed once per step and shared by ``cl`` and
    ``boundary`` (through ``views.shared``): same values, one matrix and one backward instead of two."""
    key = ("contrastive.pair_similarity", sim)
    if key not in views.shared:
        views.shared[key] = [formulas.pair_similarity(a, b, sim) for a, b in views.pair_tensors()]
    return views.shared[key]


def _zero_like(views: Views) -> Tensor:
    return next(iter(views.tensors.values())).sum() * 0.0


@dataclass
class ContrastiveOptions:
    """``cl``: Σ over view pairs of NT-Xent (default) or one-sided InfoNCE at temperature ``tau``."""

    weight: float = 0.1
    tau: float = 1.0
    sim: Literal["dot", "cos"] = "dot"
    kind: Literal["nt_xent", "info_nce"] = "nt_xent"

    def validate(self) -> None:
        _check_weight("cl", self.weight)
        _check_tau("cl", self.tau)


class ContrastiveTerm(_PairTerm):
    """L_cl = Σ_pairs contrastive(a, b): for ACLSRec L_or + L_pp (SPEC §5)."""

    needs_negatives = True
    term = "cl"

    def __init__(self, options: ContrastiveOptions, ctx: BuildContext) -> None:
        self._check_built(ctx)
        self.options = options

    def __call__(self, views: Views, batch: Batch) -> Tensor:
        o = self.options
        pairs = views.pair_tensors()
        shared = _pair_similarities(views, o.sim) if o.kind == "nt_xent" else [None] * len(pairs)
        values = [formulas.contrastive(a, b, o.tau, sim=o.sim, kind=o.kind, s=s)
                  for (a, b), s in zip(pairs, shared)]
        return torch.stack(values).sum() if values else _zero_like(views)


@dataclass
class AlignOptions:
    """``align``: (d(o, pr) − d(p, op))², d = (1 − cos)/τ with τ = ``tau``."""

    weight: float = 1.0
    tau: float = 1.0

    def validate(self) -> None:
        _check_weight("align", self.weight)
        _check_tau("align", self.tau)


class AlignTerm(_PairTerm):
    """L_align (SPEC §6): the two pairs' cosine distances should match."""

    needs_negatives = False
    term, exactly = "align", 2

    def __init__(self, options: AlignOptions, ctx: BuildContext) -> None:
        self._check_built(ctx)
        self.tau = options.tau

    def __call__(self, views: Views, batch: Batch) -> Tensor:
        (o, pr), (p, op) = views.pair_tensors()
        return formulas.alignment(o, pr, p, op, self.tau)


@dataclass
class BoundaryOptions:
    """``boundary``: Σ over view pairs of R (SPEC §7, read as printed; not a margin loss)."""

    weight: float = 0.005
    sim: Literal["dot", "cos"] = "dot"
    detach_bounds: bool = False
    per_anchor: bool = False

    def validate(self) -> None:
        _check_weight("boundary", self.weight)


class BoundaryTerm(_PairTerm):
    """R = R(o, pr) + R(p, op) for ACLSRec (a sum: a mean would halve γ's effect)."""

    needs_negatives = True
    term = "boundary"

    def __init__(self, options: BoundaryOptions, ctx: BuildContext) -> None:
        self._check_built(ctx)
        self.options = options

    def __call__(self, views: Views, batch: Batch) -> Tensor:
        o = self.options
        pairs = views.pair_tensors()
        shared = _pair_similarities(views, o.sim)
        values = [
            formulas.dynamic_boundary(a, b, sim=o.sim, detach_bounds=o.detach_bounds, per_anchor=o.per_anchor, s=s)
            for (a, b), s in zip(pairs, shared)
        ]
        return torch.stack(values).sum() if values else _zero_like(views)


@hookimpl
def register_loss_terms(register):
    register("cl", ContrastiveTerm, "contrastive loss over view pairs (NT-Xent default, InfoNCE option)",
             options=ContrastiveOptions)
    register("align", AlignTerm, "ACLSRec distance constraint L_align between two view pairs",
             options=AlignOptions)
    register("boundary", BoundaryTerm, "ACLSRec dynamic-boundary regularizer R (as printed, not a margin)",
             options=BoundaryOptions)
