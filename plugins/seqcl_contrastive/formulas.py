"""The contrastive formulas as pure tensor functions (SPEC §5, §6, §7).

Nothing here holds state or parameters: every function maps tensors to a 0-dim
tensor (the mean over the batch) or, for :func:`similarity` and
:func:`sample_negatives`, to a tensor of the documented shape. Components
(the loss terms in this package) wrap these functions and own the config.

Shapes use ``N`` for the number of users in a contrastive batch, ``B`` for the
batch of the main loss, ``d`` for the hidden size, ``R`` for the rows of the
item table (``num_items + 1`` plus any extra rows such as a mask token).

Numerics
--------
* Softmax losses go through ``F.cross_entropy`` / ``logsumexp`` on logits, so
  ``tau = 0.05`` with raw dot products of norm 1e3 (logits ~ 2e7) neither
  overflows nor produces NaN.
* The self-similarity in NT-Xent is masked with ``-inf``; that only happens
  for ``N >= 2``, where every row still has ``2N - 1 >= 3`` finite entries.
* ``N = 1`` (no negatives): :func:`nt_xent`, :func:`info_nce` and
  :func:`dynamic_boundary` return an exact 0 that is still attached to the
  inputs' graph, so ``backward()`` works and gives zero gradients (SPEC §5/§7:
  "the term is 0 and logged as skipped — never NaN"). Callers that want to log
  the skip can test ``a.shape[0] < 2``.
* Cosine similarity is ``x·y / (max(|x|, eps) · max(|y|, eps))``; a zero row
  has cosine 0 with everything and finite (zero) gradients.
"""

from __future__ import annotations

import functools

from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

__all__ = [
    "Sim",
    "ContrastiveKind",
    "similarity",
    "nt_xent",
    "info_nce",
    "contrastive",
    "alignment",
    "dynamic_boundary",
]

Sim = Literal["dot", "cos"]
ContrastiveKind = Literal["nt_xent", "info_nce"]

_SIMS = ("dot", "cos")
_KINDS = ("nt_xent", "info_nce")


# --------------------------------------------------------------------------- helpers


def _check_sim(sim: str) -> None:
    if sim not in _SIMS:
        raise ValueError(f"unknown similarity {sim!r}; expected one of {list(_SIMS)}")


def _check_pair(a: Tensor, b: Tensor, what: str = "views") -> int:
    """Both (N, d), same shape, N >= 1. Returns N."""
    if a.dim() != 2 or b.dim() != 2:
        raise ValueError(f"{what} must be 2-D (N, d); got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape != b.shape:
        raise ValueError(f"{what} must have the same shape; got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape[0] < 1:
        raise ValueError(f"{what} are empty (N = 0)")
    return a.shape[0]


def _check_tau(tau: float) -> None:
    if not tau > 0:
        raise ValueError(f"temperature tau must be > 0; got {tau!r}")


def _graph_zero(*tensors: Tensor) -> Tensor:
    """An exact 0-dim zero that depends on ``tensors`` (zero gradients, never NaN
    for finite inputs), in the dtype/device of the first tensor."""
    zero = tensors[0].new_zeros(())
    for t in tensors:
        zero = zero + (t * 0).sum()
    return zero


def _normalize(x: Tensor, eps: float) -> Tensor:
    """Rows divided by ``max(|row|, eps)``; (n, d) -> (n, d)."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(eps)


@functools.lru_cache(maxsize=8)
def _excluded(n: int, value: float, device: torch.device, dtype: torch.dtype,
              offsets: tuple[int, ...] | None = None) -> Tensor:
    """(2N, 2N): ``value`` on the diagonals ``offsets`` (default 0, N, -N: S[i, i] and S[i, p(i)]),
    0 elsewhere. Added to S it takes those entries out of a max or a softmax (-inf) or of a
    relu(o - S) sum (+inf) in one pass, with a pass-through gradient. A constant of the batch
    size: built once per run."""
    out = torch.zeros(2 * n, 2 * n, device=device, dtype=dtype)
    for offset in (0, n, -n) if offsets is None else offsets:
        out.diagonal(offset).fill_(value)
    return out


def _partner(n: int, device: torch.device) -> Tensor:
    """Index of each row's partner in ``Z = [a; b]``: i <-> i + n. (2n,) long."""
    return (torch.arange(2 * n, device=device) + n) % (2 * n)


# --------------------------------------------------------------------------- similarity


def similarity(a: Tensor, b: Tensor, sim: Sim = "dot", eps: float = 1e-8) -> Tensor:
    """Pairwise similarity matrix.

    Args:
        a: (N, d).
        b: (M, d).
        sim: ``"dot"`` — raw dot product ``a_i · b_j``; ``"cos"`` — cosine
            ``a_i · b_j / (max(|a_i|, eps) · max(|b_j|, eps))``.
        eps: floor on the row norms for ``"cos"``.

    Returns:
        (N, M) tensor ``S[i, j] = sim(a_i, b_j)``.
    """
    _check_sim(sim)
    same = a is b
    if sim == "cos":
        a = _normalize(a, eps)
        b = a if same else _normalize(b, eps)
    return _Gram.apply(a) if same else torch.einsum("nd,md->nm", a, b)


def pair_similarity(a: Tensor, b: Tensor, sim: Sim = "dot") -> Tensor:
    """``sim(Z, Z)`` (2N, 2N) of ``Z = [a; b]``, both (N, d): the matrix NT-Xent and ``R`` read."""
    z = torch.cat([a, b], dim=0)
    return similarity(z, z, sim)


class _Gram(torch.autograd.Function):
    """``Z Zᵀ`` (N, N) of one (N, d) tensor (NT-Xent and R contrast ``Z = [a; b]`` with itself):
    plain matmuls (no einsum permute copies); backward ``G Z + Gᵀ Z``."""

    @staticmethod
    def forward(ctx, z):  # type: ignore[override]
        ctx.save_for_backward(z)
        return z @ z.T

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        (z,) = ctx.saved_tensors
        return torch.addmm(g @ z, g.T, z)  # two matmuls: cheaper than materialising G + Gᵀ


# --------------------------------------------------------------------------- contrastive (§5)


def nt_xent(a: Tensor, b: Tensor, tau: float, sim: Sim = "dot", s: Tensor | None = None) -> Tensor:
    """NT-Xent over two views (SPEC §5 default reading of eq. 17-18; CL4SRec/DuoRec).

    ``Z = [a; b]`` (2N, d), ``S = sim(Z, Z) / tau`` (2N, 2N). Each of the 2N rows
    ``i`` is an anchor; its positive is its partner ``p(i) = (i + N) mod 2N`` and
    its negatives are all other rows except itself (2N - 2 of them)::

        loss = mean_i [ -S[i, p(i)] + log sum_{j != i} exp S[i, j] ]

    With all similarities equal the loss is ``log(2N - 1)``. ``N = 1`` gives an
    exact 0 (no negatives) that still backpropagates (zero gradients).

    Args:
        a: (N, d) first view (e.g. ``o``), rows aligned with ``b``.
        b: (N, d) second view (e.g. ``pr``).
        tau: temperature > 0.
        sim: ``"dot"`` (default, as printed) or ``"cos"``.
        s: ``pair_similarity(a, b, sim)`` when the caller already has it (shared with ``R``).

    Returns:
        0-dim tensor.
    """
    n = _check_pair(a, b)
    _check_tau(tau)
    _check_sim(sim)
    if n == 1:
        return _graph_zero(a, b)
    if s is None:
        s = pair_similarity(a, b, sim)  # (2N, 2N)
    # S/τ with the diagonal (j = i) at -inf, in one pass with a pass-through gradient
    logits = torch.add(_excluded(n, float("-inf"), s.device, s.dtype, (0,)), s, alpha=1.0 / tau)
    return F.cross_entropy(logits, _partner(n, s.device))


def info_nce(a: Tensor, b: Tensor, tau: float, sim: Sim = "dot") -> Tensor:
    """One-sided InfoNCE (SPEC §5 option).

    Anchor ``a_u``, candidates ``b_v`` for all v, positive ``b_u``::

        loss = mean_u [ -sim(a_u, b_u)/tau + log sum_v exp sim(a_u, b_v)/tau ]

    With all similarities equal the loss is ``log N``. ``N = 1`` gives an exact
    0 that still backpropagates.

    Args:
        a: (N, d) anchors.
        b: (N, d) candidates, ``b_u`` is the positive of ``a_u``.
        tau: temperature > 0.
        sim: ``"dot"`` or ``"cos"``.

    Returns:
        0-dim tensor.
    """
    n = _check_pair(a, b)
    _check_tau(tau)
    _check_sim(sim)
    if n == 1:
        return _graph_zero(a, b)
    logits = similarity(a, b, sim) / tau  # (N, N)
    return F.cross_entropy(logits, torch.arange(n, device=a.device))


def contrastive(
    a: Tensor,
    b: Tensor,
    tau: float,
    sim: Sim = "dot",
    kind: ContrastiveKind = "nt_xent",
    s: Tensor | None = None,
) -> Tensor:
    """Dispatch to :func:`nt_xent` (default; ``s`` as there) or :func:`info_nce`. (N, d), (N, d) -> 0-dim."""
    if kind == "nt_xent":
        return nt_xent(a, b, tau, sim, s)
    if kind == "info_nce":
        return info_nce(a, b, tau, sim)
    raise ValueError(f"unknown contrastive loss kind {kind!r}; expected one of {list(_KINDS)}")


# --------------------------------------------------------------------------- alignment (§6)


def alignment(o: Tensor, pr: Tensor, p: Tensor, op: Tensor, tau: float, eps: float = 1e-8) -> Tensor:
    """Distance constraint ``L_align`` (SPEC §6, eq. 20-23).

    ``d1_u = (1 - cos(o_u, pr_u)) / tau``, ``d2_u = (1 - cos(p_u, op_u)) / tau``,
    ``L = mean_u (d1_u - d2_u)^2``; cosine with norms floored at ``eps``. The
    same ``tau`` as the contrastive loss (one knob for both, SPEC §6).

    Args:
        o, pr, p, op: (N, d) each, rows aligned by user.
        tau: temperature > 0.
        eps: floor on row norms inside the cosine.

    Returns:
        0-dim tensor, >= 0; 0 when the two distances coincide for every user.
    """
    _check_pair(o, pr, "o/pr")
    _check_pair(p, op, "p/op")
    _check_pair(o, p, "o/p")
    _check_tau(tau)
    cos1 = (_normalize(o, eps) * _normalize(pr, eps)).sum(dim=-1)  # (N,)
    cos2 = (_normalize(p, eps) * _normalize(op, eps)).sum(dim=-1)  # (N,)
    d1 = (1 - cos1) / tau
    d2 = (1 - cos2) / tau
    return ((d1 - d2) ** 2).mean()


# --------------------------------------------------------------------------- regularizer (§7)


def dynamic_boundary(
    a: Tensor,
    b: Tensor,
    sim: Sim = "dot",
    detach_bounds: bool = False,
    per_anchor: bool = False,
    s: Tensor | None = None,
) -> Tensor:
    """Dynamic-boundary regularizer ``R`` (SPEC §7, eq. 24-31), exactly as printed.

    ``Z = [a; b]`` (2N, d), ``S = sim(Z, Z)`` (2N, 2N), no temperature.
    Partner of row i is ``p(i) = (i + N) mod 2N``.

    Batch boundaries (default, ``per_anchor=False``)::

        sigma+ = {S[i, i+N] : i = 0..N-1}                        (N values)
        sigma- = {S[i, j] : j != i, |i - j| != N}  over all 2N rows (2N(2N-2) values)
        o_min  = min(min sigma+, max sigma-)
        o_max  = max(min sigma+, max sigma-)
        R      = mean_{s in sigma+} relu(s - o_min) + mean_{s in sigma-} relu(o_max - s)

    Per-anchor boundaries (``per_anchor=True``; MCLRec's ``meta_contrast_rl_1``
    without its temperature): for each of the 2N anchor rows i, with its own
    positive ``s+_i = S[i, p(i)]`` and its own 2N-2 negatives
    ``s-_ij = S[i, j]`` (j != i, j != p(i))::

        m_i     = max_j s-_ij
        o_min_i = min(s+_i, m_i),  o_max_i = max(s+_i, m_i)
        R_i     = relu(s+_i - o_min_i) + mean_j relu(o_max_i - s-_ij)
        R       = mean_{i in 0..2N-1} R_i

    (Every row has the same number of negatives, so this equals MCLRec's
    ``mean(all positive terms) + mean(all negative terms)``. Rows i >= N use
    ``S[i, i-N]``, which equals ``S[i-N, i]`` since S is symmetric.)

    This is NOT a margin loss: when every positive exceeds every negative,
    R > 0 and pulls positives down and negatives up (the paper's stated aim,
    against over-alignment). R = 0 only if every positive equals ``o_min`` and
    every negative equals ``o_max``. R >= 0 always.

    Gradients flow through ``o_min``/``o_max`` unless ``detach_bounds``. Ties in
    the min/max share the gradient evenly (``amin``/``amax``).

    Args:
        a: (N, d) first view.
        b: (N, d) second view.
        sim: ``"dot"`` (default, ``S = Z Zᵀ``) or ``"cos"``.
        detach_bounds: stop gradients through the boundaries.
        per_anchor: boundaries per anchor row instead of over the whole batch.
        s: ``pair_similarity(a, b, sim)`` when the caller already has it (shared with NT-Xent).

    Returns:
        0-dim tensor. ``N = 1`` (sigma- empty) gives an exact 0 that still
        backpropagates (zero gradients).
    """
    n = _check_pair(a, b)
    _check_sim(sim)
    if n == 1:
        return _graph_zero(a, b)
    if s is None:
        s = pair_similarity(a, b, sim)  # (2N, 2N)
    # sigma- read in place: S with each row's own entry and its partner's moved to -inf for the
    # max and to +inf where relu(o_max - s) must be 0 (no boolean-index gather of 2N(2N-2) values)
    low = s + _excluded(n, float("-inf"), s.device, s.dtype)
    high = s + _excluded(n, float("inf"), s.device, s.dtype)
    if not per_anchor:
        pos = torch.diagonal(s, offset=n)  # (N,)  S[i, i+N], i < N
        min_pos, max_neg = pos.amin(), low.amax()
        o_min, o_max = torch.minimum(min_pos, max_neg), torch.maximum(min_pos, max_neg)
        if detach_bounds:
            o_min, o_max = o_min.detach(), o_max.detach()
        return F.relu(pos - o_min).mean() + F.relu(o_max - high).sum() / (2 * n * (2 * n - 2))

    pos = s.gather(1, rearrange(_partner(n, s.device), "r -> r 1"))  # (2N, 1)
    max_neg = low.amax(dim=1, keepdim=True)  # (2N, 1)
    o_min, o_max = torch.minimum(pos, max_neg), torch.maximum(pos, max_neg)  # (2N, 1)
    if detach_bounds:
        o_min, o_max = o_min.detach(), o_max.detach()
    per_row = rearrange(F.relu(pos - o_min), "r 1 -> r") + F.relu(o_max - high).sum(dim=1) / (2 * n - 2)  # (2N,)
    return per_row.mean()
