"""Shipped plugin: MCLRec (Qin et al., SIGIR 2023) — augmenter ``mclrec`` and its loss term ``mcl``.

Two data augmentations, two learnable augmenters with their own optimiser,
and three optimiser steps per batch, declared as an optimisation plan
(``seqcl.interfaces``, "Training-loop hooks"); details and what differs from
the official code in :mod:`.augmenter`.

    seqcl train --augmenter mclrec --dataset ../shared/data/Beauty.txt
"""

from __future__ import annotations

from seqcl.hookspecs import hookimpl

from .augmenter import Learner, MCLRecAugmenter, MCLRecOptions, MetaContrastOptions, MetaContrastTerm
from .formulas import meta_contrast, meta_pairs

__all__ = ["Learner", "MCLRecAugmenter", "MCLRecOptions", "MetaContrastOptions", "MetaContrastTerm",
           "meta_contrast", "meta_pairs"]


@hookimpl
def register_augmenters(register):
    register("mclrec", MCLRecAugmenter, "MCLRec: two augmentations, two learnable augmenters, 3 optimiser "
             "steps per batch", options=MCLRecOptions)


@hookimpl
def register_loss_terms(register):
    register("mcl", MetaContrastTerm, "MCLRec meta contrast: NT-Xent over (h1,z2),(h2,z1),(z1,z2) + 0.1 x "
             "row-wise boundary R", options=MetaContrastOptions)
