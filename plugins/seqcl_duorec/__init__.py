"""Shipped plugin: DuoRec's model-level augmenter ``dropout`` (SPEC §9).

Views are a second dropout pass of the same sequence and the pass of another
training sample with the same target; the generic ``cl`` term contrasts them
(τ = 1, dot product, weight 0.1).
"""

from __future__ import annotations

from seqcl.hookspecs import hookimpl

from .augmenter import DuoRecAugmenter, DuoRecOptions
from .index import SameTargetIndex, build_index, draw_same_target, load_or_build

__all__ = ["DuoRecAugmenter", "DuoRecOptions", "SameTargetIndex", "build_index", "draw_same_target",
           "load_or_build"]


@hookimpl
def register_augmenters(register):
    register(
        "dropout",
        DuoRecAugmenter,
        "DuoRec: a second dropout pass and a same-target training sample (mode duorec|supervised|unsupervised)",
        options=DuoRecOptions,
    )
