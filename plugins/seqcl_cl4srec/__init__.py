"""Shipped plugin: CL4SRec's augmenters ``crop``, ``mask``, ``reorder``, ``random`` (SPEC §9).

Each gives two data-level views ``v1``, ``v2`` of every sequence, contrasted by
the generic ``cl`` term (τ = 1, dot product, weight 0.1). The operators are
pure tensor functions in :mod:`seqcl_cl4srec.operators`.
"""

from __future__ import annotations

from seqcl.hookspecs import hookimpl

from .augmenter import (
    CL4SRecAugmenter,
    CropAugmenter,
    CropOptions,
    MaskAugmenter,
    MaskOptions,
    RandomAugmenter,
    RandomOptions,
    ReorderAugmenter,
    ReorderOptions,
)

__all__ = [
    "CL4SRecAugmenter", "CropAugmenter", "CropOptions", "MaskAugmenter", "MaskOptions",
    "RandomAugmenter", "RandomOptions", "ReorderAugmenter", "ReorderOptions",
]


@hookimpl
def register_augmenters(register):
    register("crop", CropAugmenter, "CL4SRec item crop: two views, each a random contiguous 60% window",
             options=CropOptions)
    register("mask", MaskAugmenter, "CL4SRec item mask: two views, 30% of the items replaced by a mask token",
             options=MaskOptions)
    register("reorder", ReorderAugmenter, "CL4SRec item reorder: two views, a random 60% window shuffled",
             options=ReorderOptions)
    register("random", RandomAugmenter, "CL4SRec: two different operators (crop/mask/reorder) per sequence",
             options=RandomOptions)
