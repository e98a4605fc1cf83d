"""Property tests for the main losses, ``seqcl_objectives.formulas`` (SPEC §3).

References are written with explicit Python loops straight from the equations
(float64 inputs, tight tolerances); invariances, bounds, hand-built cases and
gradient finiteness are checked with Hypothesis.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from seqcl_objectives.formulas import bce, full_softmax_ce, sample_negatives, sampled_softmax_ce

from formula_refs import (
    FAST, _gen, close, grads_finite, logsumexp, ref_sim, rows, softplus,
)

def ref_full_ce(h, table, targets, num_items, include_pad):
    h, table = rows(h), rows(table)
    first = 0 if include_pad else 1
    total = 0.0
    for b, t in enumerate(targets.tolist()):
        logits = [ref_sim(h[b], table[v], "dot") for v in range(first, num_items + 1)]
        total += -ref_sim(h[b], table[t], "dot") + logsumexp(logits)
    return total / len(h)


def ref_sampled_ce(h, table, targets, negatives):
    h, table = rows(h), rows(table)
    total = 0.0
    for b, (t, negs) in enumerate(zip(targets.tolist(), negatives.tolist())):
        s_pos = ref_sim(h[b], table[t], "dot")
        total += -s_pos + logsumexp([s_pos] + [ref_sim(h[b], table[v], "dot") for v in negs])
    return total / len(h)


def ref_bce(h, table, targets, negatives):
    h, table = rows(h), rows(table)
    total = 0.0
    for b, (t, negs) in enumerate(zip(targets.tolist(), negatives.tolist())):
        s_pos = ref_sim(h[b], table[t], "dot")
        total += softplus(-s_pos)  # -log sigmoid(s_pos)
        for v in negs:
            total += softplus(ref_sim(h[b], table[v], "dot"))  # -log(1 - sigmoid(s_neg))
    return total / len(h)






# --------------------------------------------------------------------------- main losses (§3)


@st.composite
def main_batch(draw, max_b: int = 6, max_items: int = 12, max_k: int = 4):
    bsz = draw(st.integers(1, max_b))
    d = draw(st.integers(1, 5))
    num_items = draw(st.integers(1, max_items))
    extra = draw(st.integers(0, 2))
    k = draw(st.integers(1, max_k))
    seed = draw(st.integers(0, 2**31 - 1))
    g = _gen(seed)
    h = torch.randn(bsz, d, generator=g, dtype=torch.float64) * 2
    table = torch.randn(num_items + 1 + extra, d, generator=g, dtype=torch.float64)
    targets = torch.randint(1, num_items + 1, (bsz,), generator=g)
    negatives = torch.randint(1, num_items + 1, (bsz, k), generator=g)
    return h, table, targets, negatives, num_items


@FAST
@given(batch=main_batch(), include_pad=st.booleans())
def test_full_softmax_ce_matches_reference(batch, include_pad):
    h, table, targets, _, num_items = batch
    got = full_softmax_ce(h, table, targets, num_items, include_pad_logit=include_pad)
    close(got, ref_full_ce(h, table, targets, num_items, include_pad))


@FAST
@given(batch=main_batch(), include_pad=st.booleans(), n_extra=st.integers(1, 3))
def test_full_softmax_ce_never_scores_extra_rows(batch, include_pad, n_extra):
    h, table, targets, _, num_items = batch
    base = full_softmax_ce(h, table[: num_items + 1], targets, num_items, include_pad)
    huge = torch.full((n_extra, table.shape[1]), 1e6, dtype=table.dtype)
    with_extra = torch.cat([table[: num_items + 1], huge])  # e.g. a mask token row
    assert torch.equal(full_softmax_ce(h, with_extra, targets, num_items, include_pad), base)
    if not include_pad:  # padding row is not scored either
        table2 = table.clone()
        table2[0] = 1e6
        assert torch.equal(full_softmax_ce(h, table2, targets, num_items), full_softmax_ce(h, table, targets, num_items))


@FAST
@given(batch=main_batch())
def test_sampled_softmax_ce_matches_reference(batch):
    h, table, targets, negatives, _ = batch
    close(sampled_softmax_ce(h, table, targets, negatives), ref_sampled_ce(h, table, targets, negatives))


@FAST
@given(batch=main_batch(max_k=1))
def test_sampled_softmax_ce_with_one_negative_is_bpr(batch):
    h, table, targets, negatives, _ = batch
    s_pos = (h * table[targets]).sum(-1)
    s_neg = (h * table[negatives[:, 0]]).sum(-1)
    bpr = -F.logsigmoid(s_pos - s_neg).mean()
    close(sampled_softmax_ce(h, table, targets, negatives), bpr)
    by_hand = sum(softplus(-(p - n)) for p, n in zip(s_pos.tolist(), s_neg.tolist())) / len(h)
    close(sampled_softmax_ce(h, table, targets, negatives), by_hand)


@FAST
@given(batch=main_batch(max_k=2))
def test_bce_matches_reference(batch):
    h, table, targets, negatives, _ = batch
    close(bce(h, table, targets, negatives), ref_bce(h, table, targets, negatives))
    one = negatives[:, :1]
    close(bce(h, table, targets, one), ref_bce(h, table, targets, one))


def test_main_losses_stable_for_huge_scores():
    h = torch.tensor([[1e3, -1e3], [-1e3, 1e3]], requires_grad=True)
    table = torch.tensor([[0.0, 0.0], [1e3, 0.0], [0.0, 1e3], [5.0, 5.0]], requires_grad=True)
    targets = torch.tensor([2, 1])
    negs = torch.tensor([[1], [2]])
    for loss in (
        full_softmax_ce(h, table, targets, 2),
        full_softmax_ce(h, table, targets, 2, include_pad_logit=True),
        sampled_softmax_ce(h, table, targets, negs),
        bce(h, table, targets, negs),
    ):
        grads_finite(loss, (h, table))
        assert loss.item() > 1e5  # the target is ranked last by ~2e6: loss is huge, not inf


# --------------------------------------------------------------------------- negative sampling


@st.composite
def windows(draw):
    bsz = draw(st.integers(1, 8))
    t = draw(st.integers(1, 10))
    num_items = draw(st.integers(1, 30))
    k = draw(st.integers(1, 10))
    seed = draw(st.integers(0, 2**31 - 1))
    g = _gen(seed)
    # ids 0 (padding) .. num_items + 1 (e.g. a mask token, never a negative anyway)
    items = torch.randint(0, num_items + 2, (bsz, t), generator=g)
    targets = torch.randint(1, num_items + 1, (bsz,), generator=g)
    return items, targets, num_items, k, seed


@FAST
@given(w=windows(), max_rounds=st.sampled_from([0, 1, 32]))
def test_sample_negatives_valid(w, max_rounds):
    items, targets, num_items, k, seed = w
    excluded = [set(r) | {t} for r, t in zip(items.tolist(), targets.tolist())]
    n_valid = [len(set(range(1, num_items + 1)) - ex) for ex in excluded]
    if min(n_valid) == 0:
        with pytest.raises(ValueError):
            sample_negatives(items, targets, num_items, k, _gen(seed), max_rounds=max_rounds)
        return
    neg = sample_negatives(items, targets, num_items, k, _gen(seed), max_rounds=max_rounds)
    assert neg.shape == (items.shape[0], k) and neg.dtype == torch.long
    for row, ex, nv in zip(neg.tolist(), excluded, n_valid):
        for v in row:
            assert 1 <= v <= num_items and v not in ex
        if nv >= k:
            assert len(set(row)) == k  # distinct whenever possible
    again = sample_negatives(items, targets, num_items, k, _gen(seed), max_rounds=max_rounds)
    assert torch.equal(neg, again)  # reproducible from the generator


def test_sample_negatives_reaches_every_valid_item():
    items = torch.tensor([[0, 0, 2]]).repeat(400, 1)
    targets = torch.full((400,), 3)
    neg = sample_negatives(items, targets, 6, 1, _gen(0))
    assert set(neg.flatten().tolist()) == {1, 4, 5, 6}


def test_sample_negatives_errors():
    with pytest.raises(ValueError):
        sample_negatives(torch.tensor([[1, 2]]), torch.tensor([3]), 3, 1)  # nothing left
    with pytest.raises(ValueError):
        sample_negatives(torch.tensor([[1]]), torch.tensor([2]), 5, 0)
