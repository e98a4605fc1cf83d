"""Property tests for the contrastive formulas, ``seqcl_contrastive.formulas`` (SPEC §5, §6, §7).

References are written with explicit Python loops straight from the equations
(float64 inputs, tight tolerances); invariances, bounds, hand-built cases and
gradient finiteness are checked with Hypothesis.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from seqcl_contrastive.formulas import alignment, contrastive, dynamic_boundary, info_nce, nt_xent, similarity

from formula_refs import (
    DB_OPTIONS, FAST, SLOW, TIGHT, _gen, close, grads_finite, logsumexp, ref_sim, rows, sims, taus, views,
)

def ref_nt_xent(a, b, tau, sim):
    z = rows(a) + rows(b)
    n = a.shape[0]
    if n == 1:
        return 0.0
    total = 0.0
    for i in range(2 * n):
        partner = i + n if i < n else i - n
        logits = [ref_sim(z[i], z[j], sim) / tau for j in range(2 * n) if j != i]
        total += -ref_sim(z[i], z[partner], sim) / tau + logsumexp(logits)
    return total / (2 * n)


def ref_info_nce(a, b, tau, sim):
    a, b = rows(a), rows(b)
    n = len(a)
    if n == 1:
        return 0.0
    total = 0.0
    for u in range(n):
        logits = [ref_sim(a[u], b[v], sim) / tau for v in range(n)]
        total += -ref_sim(a[u], b[u], sim) / tau + logsumexp(logits)
    return total / n


def ref_alignment(o, pr, p, op, tau):
    o, pr, p, op = rows(o), rows(pr), rows(p), rows(op)
    total = 0.0
    for u in range(len(o)):
        d1 = (1 - ref_sim(o[u], pr[u], "cos")) / tau
        d2 = (1 - ref_sim(p[u], op[u], "cos")) / tau
        total += (d1 - d2) ** 2
    return total / len(o)


def ref_dynamic_boundary(a, b, sim, detach, per_anchor):
    """Eq. 24-31 with scalar torch ops in loops, so autograd gives a reference
    gradient too (``min``/``max`` pick one element: compare grads on tie-free data)."""
    z = list(torch.cat([a, b]))
    n = a.shape[0]
    if n == 1:
        return (a.sum() + b.sum()) * 0
    eps = 1e-8

    def s(i, j):
        if sim == "dot":
            return (z[i] * z[j]).sum()
        return (z[i] * z[j]).sum() / (z[i].norm().clamp_min(eps) * z[j].norm().clamp_min(eps))

    def partner(i):
        return i + n if i < n else i - n

    def negs_of(i):
        return [s(i, j) for j in range(2 * n) if j != i and abs(i - j) != n]

    def bounds(min_pos, max_neg):
        o_min, o_max = min(min_pos, max_neg), max(min_pos, max_neg)
        if detach:
            o_min, o_max = o_min.detach(), o_max.detach()
        return o_min, o_max

    if not per_anchor:
        sig_pos = [s(i, i + n) for i in range(n)]
        sig_neg = [v for i in range(2 * n) for v in negs_of(i)]
        o_min, o_max = bounds(min(sig_pos), max(sig_neg))
        return sum(F.relu(v - o_min) for v in sig_pos) / len(sig_pos) + sum(
            F.relu(o_max - v) for v in sig_neg
        ) / len(sig_neg)
    total = 0
    for i in range(2 * n):
        pos = s(i, partner(i))
        negs = negs_of(i)
        o_min, o_max = bounds(pos, max(negs))
        total = total + F.relu(pos - o_min) + sum(F.relu(o_max - v) for v in negs) / len(negs)
    return total / (2 * n)




# --------------------------------------------------------------------------- similarity


@FAST
@given(ab=views(), sim=sims)
def test_similarity_matches_reference(ab, sim):
    a, b = ab
    got = similarity(a, b, sim)
    assert got.shape == (a.shape[0], b.shape[0])
    want = torch.tensor([[ref_sim(x, y, sim) for y in rows(b)] for x in rows(a)], dtype=torch.float64)
    torch.testing.assert_close(got, want, **TIGHT)


def test_unknown_names_raise():
    a = torch.randn(3, 2)
    with pytest.raises(ValueError):
        similarity(a, a, "euclid")
    with pytest.raises(ValueError):
        nt_xent(a, a, 0.1, sim="l2")
    with pytest.raises(ValueError):
        contrastive(a, a, 0.1, kind="triplet")
    with pytest.raises(ValueError):
        nt_xent(a, a[:2], 0.1)


# --------------------------------------------------------------------------- contrastive (§5)


@FAST
@given(ab=views(max_n=10), tau=taus, sim=sims)
def test_nt_xent_matches_reference(ab, tau, sim):
    a, b = ab
    close(nt_xent(a, b, tau, sim), ref_nt_xent(a, b, tau, sim))


@FAST
@given(ab=views(max_n=10), tau=taus, sim=sims)
def test_info_nce_matches_reference(ab, tau, sim):
    a, b = ab
    close(info_nce(a, b, tau, sim), ref_info_nce(a, b, tau, sim))


@FAST
@given(ab=views(), tau=taus, sim=sims)
def test_contrastive_dispatch(ab, tau, sim):
    a, b = ab
    assert torch.equal(contrastive(a, b, tau, sim), nt_xent(a, b, tau, sim))
    assert torch.equal(contrastive(a, b, tau, sim, kind="info_nce"), info_nce(a, b, tau, sim))


@FAST
@given(ab=views(), tau=taus, sim=sims, seed=st.integers(0, 2**31 - 1))
def test_nt_xent_permutation_and_swap_invariant(ab, tau, sim, seed):
    a, b = ab
    perm = torch.randperm(a.shape[0], generator=_gen(seed))
    base = nt_xent(a, b, tau, sim)
    assert base >= 0
    close(nt_xent(a[perm], b[perm], tau, sim), base, rtol=1e-10, atol=1e-10)
    close(nt_xent(b, a, tau, sim), base, rtol=1e-10, atol=1e-10)


@FAST
@given(n=st.integers(1, 32), d=st.integers(1, 6), tau=taus, sim=sims, seed=st.integers(0, 2**31 - 1))
def test_contrastive_all_equal_similarities(n, d, tau, sim, seed):
    row = torch.randn(1, d, generator=_gen(seed), dtype=torch.float64)
    z = row.expand(n, d).clone()
    close(nt_xent(z, z.clone(), tau, sim), math.log(2 * n - 1), rtol=1e-9, atol=1e-9)
    close(info_nce(z, z.clone(), tau, sim), math.log(n), rtol=1e-9, atol=1e-9)


@FAST
@given(ab=views(modes=("normal",)), tau=taus, seed=st.integers(0, 2**31 - 1))
def test_cosine_variants_invariant_to_row_rescaling(ab, tau, seed):
    a, b = ab
    g = _gen(seed)
    sa = torch.rand(a.shape[0], 1, generator=g, dtype=torch.float64) * 9.9 + 0.1
    sb = torch.rand(b.shape[0], 1, generator=g, dtype=torch.float64) * 9.9 + 0.1
    tol = dict(rtol=1e-8, atol=1e-8)
    close(nt_xent(a * sa, b * sb, tau, "cos"), nt_xent(a, b, tau, "cos"), **tol)
    close(info_nce(a * sa, b * sb, tau, "cos"), info_nce(a, b, tau, "cos"), **tol)
    for detach, per_anchor in DB_OPTIONS:
        close(
            dynamic_boundary(a * sa, b * sb, "cos", detach, per_anchor),
            dynamic_boundary(a, b, "cos", detach, per_anchor),
            **tol,
        )
    close(alignment(a * sa, b * sb, b * sa, a * sb, tau), alignment(a, b, b, a, tau), **tol)


# --------------------------------------------------------------------------- alignment (§6)


@FAST
@given(ts=views(k=4), tau=taus)
def test_alignment_matches_reference(ts, tau):
    o, pr, p, op = ts
    close(alignment(o, pr, p, op, tau), ref_alignment(o, pr, p, op, tau))


@FAST
@given(ts=views(k=4), tau=taus, seed=st.integers(0, 2**31 - 1))
def test_alignment_invariances(ts, tau, seed):
    o, pr, p, op = ts
    base = alignment(o, pr, p, op, tau)
    assert base >= 0
    perm = torch.randperm(o.shape[0], generator=_gen(seed))
    close(alignment(o[perm], pr[perm], p[perm], op[perm], tau), base, rtol=1e-10, atol=1e-10)
    close(alignment(p, op, o, pr, tau), base, rtol=1e-10, atol=1e-10)


@FAST
@given(ts=views(k=2, modes=("normal",)), tau=taus, seed=st.integers(0, 2**31 - 1))
def test_alignment_zero_when_distances_coincide(ts, tau, seed):
    o, pr = ts
    d = o.shape[1]
    g = _gen(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))  # orthogonal
    c1 = torch.rand(o.shape[0], 1, generator=g, dtype=torch.float64) + 0.5
    c2 = torch.rand(o.shape[0], 1, generator=g, dtype=torch.float64) + 0.5
    p, op = (o @ q) * c1, (pr @ q) * c2  # same cosines, different vectors
    assert alignment(o, pr, p, op, tau).abs() < 1e-18
    assert alignment(o, pr, o, pr, tau) == 0


# --------------------------------------------------------------------------- dynamic boundary (§7)


@FAST
@given(ab=views(max_n=5, max_d=4), sim=sims)
def test_dynamic_boundary_matches_reference_all_options(ab, sim):
    a, b = ab
    for detach, per_anchor in DB_OPTIONS:
        got = dynamic_boundary(a, b, sim, detach, per_anchor)
        assert got >= 0
        close(got, ref_dynamic_boundary(a, b, sim, detach, per_anchor).item())


@SLOW
@given(ab=views(min_n=2, max_n=4, max_d=4, modes=("normal",)), sim=sims)
def test_dynamic_boundary_gradients_match_reference(ab, sim):
    """Tie-free data, so the reference's single-element min/max grads are exact.
    Catches a detach option that does nothing (or detaches by default)."""
    for detach, per_anchor in DB_OPTIONS:
        a1, b1 = (t.clone().requires_grad_() for t in ab)
        a2, b2 = (t.clone().requires_grad_() for t in ab)
        ga = torch.autograd.grad(dynamic_boundary(a1, b1, sim, detach, per_anchor), (a1, b1))
        gr = torch.autograd.grad(ref_dynamic_boundary(a2, b2, sim, detach, per_anchor), (a2, b2))
        for x, y in zip(ga, gr):
            torch.testing.assert_close(x, y, rtol=1e-8, atol=1e-10)


@FAST
@given(ab=views(), sim=sims, seed=st.integers(0, 2**31 - 1))
def test_dynamic_boundary_permutation_and_swap_invariant(ab, sim, seed):
    a, b = ab
    perm = torch.randperm(a.shape[0], generator=_gen(seed))
    for detach, per_anchor in DB_OPTIONS:
        base = dynamic_boundary(a, b, sim, detach, per_anchor)
        close(dynamic_boundary(a[perm], b[perm], sim, detach, per_anchor), base, rtol=1e-10, atol=1e-10)
        close(dynamic_boundary(b, a, sim, detach, per_anchor), base, rtol=1e-10, atol=1e-10)


def _orthonormal_rows(n: int, extra: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(n + extra, n + extra, generator=_gen(seed), dtype=torch.float64))
    return q[:n]  # (n, n + extra), orthonormal rows


@FAST
@given(n=st.integers(2, 12), extra=st.integers(0, 3), s=st.floats(0.1, 30.0), seed=st.integers(0, 2**31 - 1), sim=sims)
def test_dynamic_boundary_zero_when_pos_at_o_min_and_neg_at_o_max(n, extra, s, seed, sim):
    """a_i = s q_i, b_i = -s q_i: every positive is -s^2 (= o_min), every negative 0 (= o_max)."""
    a = s * _orthonormal_rows(n, extra, seed)
    for detach, per_anchor in DB_OPTIONS:
        r = dynamic_boundary(a, -a, sim, detach, per_anchor)
        assert 0 <= r < 1e-12 * max(s * s, 1.0)
        # all similarities equal is the other R = 0 case
        same = a[:1].expand(n, -1)
        r_same = dynamic_boundary(same, same.clone(), sim, detach, per_anchor)
        assert 0 <= r_same < 1e-12 * max(s * s, 1.0)  # BLAS may round equal entries differently


@FAST
@given(n=st.integers(2, 12), extra=st.integers(0, 3), s=st.floats(0.1, 30.0), seed=st.integers(0, 2**31 - 1), sim=sims)
def test_dynamic_boundary_positive_when_positives_exceed_negatives(n, extra, s, seed, sim):
    """a_i = b_i = s q_i: positives s^2 > negatives 0. As printed (not a margin
    loss), o_min = 0, o_max = s^2 and R = 2 s^2 (cos: 2)."""
    a = s * _orthonormal_rows(n, extra, seed)
    expected = 2 * s * s if sim == "dot" else 2.0
    for detach, per_anchor in DB_OPTIONS:
        r = dynamic_boundary(a, a.clone(), sim, detach, per_anchor)
        assert r > 0
        close(r, expected, rtol=1e-9, atol=1e-9)


# --------------------------------------------------------------------------- gradients and N = 1


@st.composite
def big_views(draw):
    """float32 (n, d) pair with row norms up to 1e3; n in 1..64; some zero rows."""
    n = draw(st.integers(1, 64))
    d = draw(st.integers(1, 16))
    max_norm = draw(st.sampled_from([1e-3, 1.0, 30.0, 1e3]))
    seed = draw(st.integers(0, 2**31 - 1))
    zero_rows = draw(st.booleans())
    g = _gen(seed)
    out = []
    for _ in range(4):
        x = torch.randn(n, d, generator=g)
        x = F.normalize(x, dim=1) * torch.rand(n, 1, generator=g) * max_norm
        x[0] = x[0] / x[0].norm().clamp_min(1e-12) * max_norm  # one row at the full norm
        if zero_rows and n > 1:
            x[-1] = 0
        out.append(x)
    return out




@SLOW
@given(ts=big_views(), tau=taus, sim=sims)
def test_gradients_finite(ts, tau, sim):
    o, pr, p, op = (t.requires_grad_() for t in ts)
    grads_finite(nt_xent(o, pr, tau, sim), (o, pr))
    grads_finite(info_nce(o, pr, tau, sim), (o, pr))
    grads_finite(alignment(o, pr, p, op, tau), (o, pr, p, op))
    for detach, per_anchor in DB_OPTIONS:
        grads_finite(dynamic_boundary(p, op, sim, detach, per_anchor), (p, op))


@FAST
@given(ts=big_views(), tau=taus, sim=sims)
def test_nt_xent_float32_close_to_float64(ts, tau, sim):
    """No overflow: at logits ~2e7 the fp32 loss still tracks the fp64 one."""
    a, b = ts[:2]
    lo = nt_xent(a, b, tau, sim)
    hi = nt_xent(a.double(), b.double(), tau, sim)
    assert torch.isfinite(lo)
    assert abs(lo.item() - hi.item()) <= 1e-3 * max(1.0, abs(hi.item())) + 1e-6 * (1e3 * 1e3 / tau)


@FAST
@given(d=st.integers(1, 8), tau=taus, sim=sims, scale=st.sampled_from([0.0, 1.0, 1e3]), seed=st.integers(0, 2**31 - 1))
def test_single_user_batch_is_exact_zero(d, tau, sim, scale, seed):
    g = _gen(seed)
    a = (torch.randn(1, d, generator=g) * scale).requires_grad_()
    b = (torch.randn(1, d, generator=g) * scale).requires_grad_()
    terms = [nt_xent(a, b, tau, sim), info_nce(a, b, tau, sim)]
    terms += [contrastive(a, b, tau, sim, kind) for kind in ("nt_xent", "info_nce")]
    terms += [dynamic_boundary(a, b, sim, detach, per) for detach, per in DB_OPTIONS]
    for loss in terms:
        assert loss.dim() == 0 and loss.item() == 0.0
        ga, gb = torch.autograd.grad(loss, (a, b))
        assert torch.equal(ga, torch.zeros_like(a)) and torch.equal(gb, torch.zeros_like(b))
