"""Shipped plugin: the ACLSRec augmenter (WWW '26), learnable perturbation + restoration.

Its loss terms (``cl``, ``align``, ``boundary``) are the generic ones of the
``contrastive`` plugin; ``aclsrec`` enables all three with the paper's weights
(λ = 0.1, β = 1, γ = 0.005) and τ = 0.1.
"""

from __future__ import annotations

from seqcl.hookspecs import hookimpl

from .augmenter import ACLSRecAugmenter, ACLSRecOptions

__all__ = ["ACLSRecAugmenter", "ACLSRecOptions"]


@hookimpl
def register_augmenters(register):
    register(
        "aclsrec",
        ACLSRecAugmenter,
        "ACLSRec: learnable perturbation/restoration MLPs around a shared Transformer (views o, p, pr, op)",
        options=ACLSRecOptions,
    )
