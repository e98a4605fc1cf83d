"""MCLRec's meta contrast as a pure function (Qin et al., SIGIR 2023; QinHsiu/MCLRec).

Shapes: ``N`` users in the batch, ``d`` the hidden size. Views: ``h1``, ``h2``
(the encoder on two data augmentations) and ``z1 = w1(h1)``, ``z2 = w2(h2)``
(the learnable augmenters' outputs, unit rows).
"""

from __future__ import annotations

import torch
from torch import Tensor

from seqcl_contrastive.formulas import Sim, dynamic_boundary, nt_xent


def meta_pairs(h1: Tensor, h2: Tensor, z1: Tensor, z2: Tensor) -> list[tuple[Tensor, Tensor]]:
    """The three pairs MCLRec contrasts: (h1, z2), (h2, z1), (z1, z2) — each view against the
    other sequence's learned view, and the learned views with each other."""
    return [(h1, z2), (h2, z1), (z1, z2)]


def meta_contrast(h1: Tensor, h2: Tensor, z1: Tensor, z2: Tensor, tau: float = 1.0, rl_weight: float = 0.1,
                  sim: Sim = "dot") -> Tensor:
    """``L_cl2 + rl_weight · R`` over :func:`meta_pairs` (all four (N, d)) → 0-dim.

    ``L_cl2 = Σ_pairs NT-Xent(a, b)`` at temperature ``tau`` (2N − 2 in-batch
    negatives per anchor), ``R = Σ_pairs R_row(a, b)``, the row-wise
    dynamic-boundary hinge: ACLSRec's ``boundary`` term with ``per_anchor``
    (:func:`seqcl_contrastive.formulas.dynamic_boundary`), no temperature —
    the code's ``meta_contrast_rl_1`` divides by its τ, 1 on every dataset.
    ``rl_weight`` 0.1 is the code's ``meta_rl`` factor (0: ``use_rl`` off).
    """
    pairs = meta_pairs(h1, h2, z1, z2)
    cl = torch.stack([nt_xent(a, b, tau, sim=sim) for a, b in pairs]).sum()
    if rl_weight == 0.0:
        return cl
    reg = torch.stack([dynamic_boundary(a, b, sim=sim, per_anchor=True) for a, b in pairs]).sum()
    return cl + rl_weight * reg
