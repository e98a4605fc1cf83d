"""CL4SRec augmenters (SPEC §9): two data-level views of each sequence, ``v1`` and ``v2``.

``crop``, ``mask``, ``reorder`` apply that operator independently to each view;
``random`` gives each sequence two different operators, one per view. Both
views go through the shared encoder (one call on the stacked ``(2B, W)`` batch)
and are contrasted by the generic ``cl`` term (NT-Xent, dot product, τ = 1,
weight 0.1 — the DuoRec repository's CL4SRec, the baseline of DuoRec, MCLRec
and ACLSRec). ``random`` ships cosine similarity with τ = 0.5 instead, chosen
on Beauty's validation split (:class:`RandomAugmenter`); ``crop``, ``mask`` and
``reorder`` were not searched and keep the paper's setting.

Randomness comes from a ``torch.Generator`` owned by the augmenter and seeded
from the run's seed, so a run repeats exactly and the operators do not shift
the global RNG stream the encoder's dropout draws from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from einops import rearrange
from torch import Tensor

from seqcl.data.dataset import trim_padding
from seqcl.errors import ConfigError
from seqcl.interfaces import Augmenter, Batch, BuildContext, Encoder, Views
from seqcl.rng import DeviceGenerators, OwnsGenerators

from . import operators as ops

#: offset of the augmenter's RNG stream from the run's seed (the batch shuffle uses the seed itself)
SEED_OFFSET = 0xC145


def _check_ratio(section: str, name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{section}.{name} must be in [0, 1], got {value}")


@dataclass
class CropOptions:
    """``crop``: keep ``max(1, floor(crop_ratio·n))`` contiguous items."""

    crop_ratio: float = 0.6

    def validate(self) -> None:
        _check_ratio("crop", "crop_ratio", self.crop_ratio)


@dataclass
class MaskOptions:
    """``mask``: ``floor(mask_ratio·n)`` items → the mask token (``token``) or padding 0 (ICLRec)."""

    mask_ratio: float = 0.3
    mask_with: Literal["token", "padding"] = "token"

    def validate(self) -> None:
        _check_ratio("mask", "mask_ratio", self.mask_ratio)


@dataclass
class ReorderOptions:
    """``reorder``: shuffle a contiguous window of ``floor(reorder_ratio·n)`` items."""

    reorder_ratio: float = 0.6

    def validate(self) -> None:
        _check_ratio("reorder", "reorder_ratio", self.reorder_ratio)


@dataclass
class RandomOptions:
    """``random``: two different operators per sequence (``independent``: two free draws)."""

    crop_ratio: float = 0.6
    mask_ratio: float = 0.3
    reorder_ratio: float = 0.6
    mask_with: Literal["token", "padding"] = "token"
    independent: bool = False

    def validate(self) -> None:
        for name in ("crop_ratio", "mask_ratio", "reorder_ratio"):
            _check_ratio("random", name, getattr(self, name))


class CL4SRecAugmenter(OwnsGenerators, Augmenter):
    """Base: views ``v1``, ``v2`` = encode(augment(items)); pair (v1, v2). Subclasses pick the operator."""

    default_terms = {"cl": {"weight": 0.1, "tau": 1.0}}  # dot product is the cl term's default
    pairs = [("v1", "v2")]
    uses_mask = False  # True: the augmenter may emit the mask token
    hidden_slots = "last"  # views are encodings of their own; the main pass is read at its last slot only
    reads_embedding = False

    def __init__(self, options, ctx: BuildContext) -> None:
        super().__init__()
        self.options = options
        self.mask_token = 0
        if self.uses_mask and getattr(options, "mask_with", "token") == "token":
            self.mask_token = ctx.num_items + 1  # the extra item row the core adds for us
            self.extra_rows = 1
        self.generators = DeviceGenerators(int(ctx.seed) + SEED_OFFSET)

    def augment(self, items: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """(B, W) → two augmented copies, each (B, W). The input is not modified."""
        raise NotImplementedError

    def forward(self, batch: Batch, encoder: Encoder, h_in: Tensor, hidden: Tensor) -> Views:
        h1, h2 = encode_pair(encoder, *self.augment(batch.items, self.generator(batch.items.device)))
        return Views({"v1": h1, "v2": h2}, list(self.pairs))


def encode_pair(encoder: Encoder, v1: Tensor, v2: Tensor) -> tuple[Tensor, Tensor]:
    """Two (B, W) augmented copies → their user representations, each (B, d), in one encoder call."""
    both = torch.cat([v1, v2])  # (2B, W)
    if both.device.type == "cpu":  # cropped views are shorter; trimming is exact (slot positions)
        both = trim_padding(both)
    h1, h2 = rearrange(encoder.encode(both), "(two b) d -> two b d", two=2)
    return h1, h2


class CropAugmenter(CL4SRecAugmenter):
    """CL4SRec item crop, applied independently to each view."""

    def augment(self, items, generator):
        r = self.options.crop_ratio
        return ops.crop(items, r, generator), ops.crop(items, r, generator)


class MaskAugmenter(CL4SRecAugmenter):
    """CL4SRec item mask (mask token ``num_items + 1``, or padding 0 as ICLRec), per view."""

    uses_mask = True

    def augment(self, items, generator):
        r, t = self.options.mask_ratio, self.mask_token
        return ops.mask(items, r, t, generator), ops.mask(items, r, t, generator)


class ReorderAugmenter(CL4SRecAugmenter):
    """CL4SRec item reorder, applied independently to each view."""

    def augment(self, items, generator):
        r = self.options.reorder_ratio
        return ops.reorder(items, r, generator), ops.reorder(items, r, generator)


class RandomAugmenter(CL4SRecAugmenter):
    """Two different operators per sequence, one per view (``independent``: two free draws).

    Its ``cl`` term: cosine similarity, τ = 0.5, weight 0.1 — chosen on Beauty's validation
    split (docs/results.md §2: at CL4SRec's dot product and τ = 1 it trailed plain SASRec, valid
    MRR@10 0.0437 against 0.0537 after 10 epochs; cos τ 0.5 0.0536, and to early stopping 0.0575
    against τ 0.2's 0.0567). ``loss.cl.sim=dot loss.cl.tau=1`` is the paper's setting.
    """

    default_terms = {"cl": {"weight": 0.1, "tau": 0.5, "sim": "cos"}}
    uses_mask = True

    def augment(self, items, generator):
        o = self.options
        first, second = ops.draw_operators(items.shape[0], generator, items.device, o.independent)
        kwargs = dict(crop_ratio=o.crop_ratio, mask_ratio=o.mask_ratio, reorder_ratio=o.reorder_ratio,
                      mask_token=self.mask_token)
        return (ops.apply_operators(items, first, generator, **kwargs),
                ops.apply_operators(items, second, generator, **kwargs))
