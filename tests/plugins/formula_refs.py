"""Shared pieces of the formula property tests: Hypothesis settings, strategies, loop references."""

from __future__ import annotations

import math

import torch
from hypothesis import settings
from hypothesis import strategies as st

FAST = settings(max_examples=40, deadline=None)
SLOW = settings(max_examples=15, deadline=None)
TIGHT = dict(rtol=1e-9, atol=1e-9)
SIMS = ["dot", "cos"]
DB_OPTIONS = [(False, False), (True, False), (False, True), (True, True)]  # (detach, per_anchor)


# --------------------------------------------------------------------------- strategies


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@st.composite
def views(draw, k: int = 2, min_n: int = 1, max_n: int = 8, max_d: int = 5, modes=("normal", "ties", "dup")):
    """``k`` float64 tensors (n, d). Modes: gaussian rows; small integer entries
    (many tied similarities, zero rows); duplicated rows within/between views."""
    n = draw(st.integers(min_n, max_n))
    d = draw(st.integers(1, max_d))
    seed = draw(st.integers(0, 2**31 - 1))
    mode = draw(st.sampled_from(modes))
    scale = draw(st.sampled_from([0.1, 1.0, 3.0]))
    g = _gen(seed)
    if mode == "ties":
        ts = [torch.randint(-1, 2, (n, d), generator=g).to(torch.float64) for _ in range(k)]
    else:
        ts = [torch.randn(n, d, generator=g, dtype=torch.float64) * scale for _ in range(k)]
    if mode == "dup":
        ts[1][::2] = ts[0][::2]
        ts[0][1::2] = ts[0][0]
    return ts


taus = st.floats(0.05, 1.0)
sims = st.sampled_from(SIMS)


# --------------------------------------------------------------------------- references (loops)


def rows(t: torch.Tensor) -> list[list[float]]:
    return t.tolist()


def ref_sim(x: list[float], y: list[float], sim: str, eps: float = 1e-8) -> float:
    dot = sum(xi * yi for xi, yi in zip(x, y))
    if sim == "dot":
        return dot
    nx = math.sqrt(sum(v * v for v in x))
    ny = math.sqrt(sum(v * v for v in y))
    return dot / (max(nx, eps) * max(ny, eps))


def logsumexp(vals: list[float]) -> float:
    m = max(vals)
    return m + math.log(sum(math.exp(v - m) for v in vals))


def softplus(x: float) -> float:  # log(1 + e^x), stable
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def grads_finite(loss: torch.Tensor, inputs) -> None:
    assert loss.dim() == 0 and torch.isfinite(loss), loss
    for g in torch.autograd.grad(loss, inputs, allow_unused=False):
        assert torch.isfinite(g).all()


def close(actual: torch.Tensor, expected, **tol) -> None:
    assert actual.dim() == 0
    expected = torch.as_tensor(expected, dtype=actual.dtype)
    torch.testing.assert_close(actual, expected, **(tol or TIGHT))
