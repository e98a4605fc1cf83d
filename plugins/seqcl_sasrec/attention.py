"""Attention kernels of both SASRec layouts: dropout, masked scaled dot-product attention, masks.

Each picks the fastest exact form for the device: on CPU an explicit product and
a uniform-draw dropout, elsewhere PyTorch's fused kernels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: additive mask for forbidden keys: finite, so a fully masked (padding) query row
#: gets a finite uniform softmax instead of NaN, and exp() of it underflows to an
#: exact 0 in every row that has at least one allowed key.
MASK_VALUE = -1e9


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Inverted dropout from a uniform draw.

    Same distribution as ``F.dropout``, but on CPU ``torch.rand`` + compare is
    about 2.5× faster than the ``bernoulli_`` kernel ``F.dropout`` uses, and
    dropout was a third of a SASRec training step's time. On other devices it is
    ``F.dropout`` (a fused kernel there).
    """
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, True)
    keep = torch.rand_like(x).ge_(p).mul_(1.0 / (1.0 - p))  # in place: 0 or 1/(1-p), no bool/cast copies
    return x * keep


class Dropout(nn.Module):
    """:func:`dropout` as a module."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)


def attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, p: float, training: bool) -> Tensor:
    """softmax(q kᵀ/√e + mask) v with dropout p on the probabilities; (B, h, T, e) each.

    Without dropout this is ``scaled_dot_product_attention``; with dropout on
    CPU the explicit form is faster (SDPA falls back to its math path and draws
    the mask with ``bernoulli_``). Off CPU, SDPA with ``dropout_p``.
    """
    if not training or p == 0.0:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    if q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
    scores = torch.matmul(q, k.transpose(-1, -2)).mul_(q.shape[-1] ** -0.5) + mask
    return torch.matmul(dropout(torch.softmax(scores, dim=-1), p, True), v)


def additive_mask(allowed: Tensor, dtype: torch.dtype) -> Tensor:
    """bool → 0 where allowed, :data:`MASK_VALUE` elsewhere, in ``dtype``."""
    zero = torch.zeros((), dtype=dtype, device=allowed.device)
    return torch.where(allowed, zero, torch.full((), MASK_VALUE, dtype=dtype, device=allowed.device))
