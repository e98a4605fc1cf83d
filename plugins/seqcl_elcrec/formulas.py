"""ELCRec's intent-clustering math as pure functions (Liu et al., NeurIPS 2024; yueliu1999/ELCRec).

Shapes: ``N`` rows, ``K`` cluster centres, ``d`` the hidden size, ``B``/``T`` batch and window.
"""

from __future__ import annotations

import torch
from torch import Tensor


def sq_distances(x: Tensor, c: Tensor) -> Tensor:
    """(N, d), (K, d) → (N, K) ``‖x_n‖² + ‖c_k‖² − 2 x_n·c_k`` (the code's ``distance``)."""
    return (x * x).sum(-1, keepdim=True) + (c * c).sum(-1).unsqueeze(0) - 2 * x @ c.T


def cluster_loss_rows(z: Tensor, c: Tensor) -> Tensor:
    """(N, d) unit rows, (K, d) centres → (N,): ``mean_k ‖z_n − c_k‖² − mean_{j,k} ‖c_j − c_k‖²``.

    Its mean over the rows is ELCRec's ``sample_distance_loss + center_distance_loss``: pull every
    sequence towards all centres, push the centres apart (the diagonal zeros are in the mean, as
    in the code).
    """
    return sq_distances(z, c).mean(dim=1) - sq_distances(c, c).mean()


def nearest(x: Tensor, c: Tensor) -> Tensor:
    """(N, d), (K, d) → (N,) long: the index of each row's nearest centre (lowest :func:`sq_distances`).

    No gradient flows through an argmin, so the (N, K) distances are computed without autograd
    recording them (same values: the same expression)."""
    with torch.no_grad():
        return sq_distances(x, c).argmin(dim=1)


def shift_to_nearest(h: Tensor, c: Tensor) -> Tensor:
    """(B, T, d), (K, d) → (B, T, d): each slot plus its nearest centre (the code's ``prototype = shift``)."""
    b, t, d = h.shape
    return h + c[nearest(h.reshape(b * t, d), c)].reshape(b, t, d)


def kmeans(x: Tensor, k: int, iters: int, generator: torch.Generator) -> Tensor:
    """(N, d), N ≥ k → (k, d): Lloyd's k-means from k distinct random rows; an empty cluster keeps its centre."""
    n = x.shape[0]
    if n < k:
        raise ValueError(f"k-means needs at least k = {k} points, got {n}")
    centres = x[torch.randperm(n, generator=generator, device=generator.device)[:k].to(x.device)].clone()
    for _ in range(iters):
        assign = sq_distances(x, centres).argmin(dim=1)  # (N,)
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).unsqueeze(1).to(x.dtype)
        centres = torch.where(counts > 0, sums / counts.clamp(min=1), centres)
    return centres
