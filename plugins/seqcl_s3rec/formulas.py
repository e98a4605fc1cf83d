"""S3Rec's masked item prediction (MIP) loss as a pure function (Zhou et al., CIKM 2020).

``M`` masked positions, ``d`` the hidden size.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def mip_loss(projected: Tensor, positives: Tensor, negatives: Tensor) -> Tensor:
    """Σ over the M masked positions of ``BCE(σ(s⁺ − s⁻), 1) = −log σ(s⁺ − s⁻)``, with
    ``s⁺ = σ(⟨W h, e_pos⟩)`` and ``s⁻ = σ(⟨W h, e_neg⟩)`` (the code's ``masked_item_prediction``).

    Args:
        projected: (M, d) ``W h + b``, the MIP projection of each masked position's output.
        positives: (M, d) embedding of the item that was masked.
        negatives: (M, d) embedding of its sampled negative.

    Returns:
        0-dim: a **sum** (the code's ``torch.sum(mip_loss * mip_mask)``), each term in
        ``[softplus(−1), softplus(1)] ≈ [0.313, 1.313]`` because ``s⁺ − s⁻ ∈ (−1, 1)``.
    """
    pos = (projected * positives).sum(dim=-1).sigmoid()  # (M,)
    neg = (projected * negatives).sum(dim=-1).sigmoid()  # (M,)
    return F.softplus(neg - pos).sum()
