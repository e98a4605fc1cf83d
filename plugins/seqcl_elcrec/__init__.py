"""Shipped plugin: ELCRec (Liu et al., NeurIPS 2024) — augmenter ``elcrec``, terms ``intent`` and ``cluster``.

Learnable intent centres (k-means at fit start, normalised after every optimiser step: lifecycle
callbacks), the clustering loss, and intent-assisted contrastive terms on views of declared shapes.
Details and what differs from the official code: :mod:`.augmenter`.

    seqcl train --augmenter elcrec --objective bce --set sasrec.layers=1 --dataset ../shared/data/Beauty.txt
"""

from __future__ import annotations

from seqcl.hookspecs import hookimpl

from .augmenter import ClusterOptions, ClusterTerm, ELCRecAugmenter, ELCRecOptions, IntentOptions, IntentTerm
from .formulas import cluster_loss_rows, kmeans, shift_to_nearest, sq_distances

__all__ = ["ClusterOptions", "ClusterTerm", "ELCRecAugmenter", "ELCRecOptions", "IntentOptions", "IntentTerm",
           "cluster_loss_rows", "kmeans", "shift_to_nearest", "sq_distances"]


@hookimpl
def register_augmenters(register):
    register("elcrec", ELCRecAugmenter, "ELCRec: learnable intent centres (k-means init), centre-shifted "
             "flattened views, intent CL", options=ELCRecOptions)


@hookimpl
def register_loss_terms(register):
    register("intent", IntentTerm, "ELCRec intent CL: NT-Xent of each pooled view with its assigned centre",
             options=IntentOptions)
    register("cluster", ClusterTerm, "ELCRec clustering loss: sequences to all centres, centres apart",
             options=ClusterOptions)
