"""Attention kernels of both SASRec layouts: dropout, masked scaled dot-product attention, masks.

Each picks the fastest exact form for the device: on CPU an explicit product and
a uniform-draw dropout, elsewhere PyTorch's fused kernels where no gradient flows.
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

    On CPU: ``scaled_dot_product_attention`` without dropout; with dropout the
    explicit form is faster (SDPA falls back to its math path and draws the mask
    with ``bernoulli_``). Elsewhere the fused kernels run only where no gradient
    flows through them: on CUDA, SDPA with an additive mask picks the
    memory-efficient kernel, whose backward returns NaN for some masks
    (pytorch/pytorch#109517, #119320, #178251). On an H200 with torch 2.11 it did so
    for CFIT4SRec resumed there (padding query rows fully masked; fresh CFIT4SRec and
    ELCRec went NaN too, cause not established: benchmarks/README.md, "GPU"). A
    differentiated pass takes the explicit form there too (at T ≤ 200 its (B, h, T, T)
    scores are small).
    """
    dropping = training and p > 0.0
    if q.device.type == "cpu":
        if not dropping:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    elif not (torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p if dropping else 0.0)
    scores = torch.matmul(q, k.transpose(-1, -2)).mul_(q.shape[-1] ** -0.5) + mask
    return torch.matmul(dropout(torch.softmax(scores, dim=-1), p, dropping), v)


def additive_mask(allowed: Tensor, dtype: torch.dtype) -> Tensor:
    """bool → 0 where allowed, :data:`MASK_VALUE` elsewhere, in ``dtype``."""
    zero = torch.zeros((), dtype=dtype, device=allowed.device)
    return torch.where(allowed, zero, torch.full((), MASK_VALUE, dtype=dtype, device=allowed.device))
