"""Evaluation (SPEC §1) against brute-force per-user references in plain Python."""

from __future__ import annotations

import math
import random

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from seqcl.data.dataset import SequenceData, eval_set
from seqcl.evaluation import (
    EvalResult,
    count_ranks,
    evaluate,
    history_mask,
    history_pairs,
    metrics_from_ranks,
)
from seqcl.interfaces import Encoder

# --------------------------------------------------------------------------- fakes


class LinearWindowEncoder(Encoder):
    """h = Σ_t W[t] · items[:, t] — a fixed, known function of the left-padded window.

    With small integer weights and tables every score is an exact small integer
    in fp32, so ties are exact and the reference can recompute the scores.
    """

    def __init__(self, table: Tensor, weights: Tensor):
        super().__init__()
        self.hidden_size = table.shape[1]
        self.table = nn.Parameter(table.clone())  # requires grad: inference mode must stop the graph
        self.weights = nn.Parameter(weights.clone())  # (T, d)
        self.seen_windows: list[Tensor] = []
        self.modes: list[tuple[bool, bool, bool]] = []

    def embed(self, items: Tensor) -> Tensor:  # pragma: no cover - encode is overridden
        return self.table[items]

    def contextualize(self, h_in: Tensor, items: Tensor) -> Tensor:  # pragma: no cover
        return h_in

    def item_table(self) -> Tensor:
        return self.table

    def encode(self, items: Tensor) -> Tensor:
        # the core trims all-padding leading columns: column j is slot T-W+j
        items = torch.nn.functional.pad(items, (self.weights.shape[0] - items.shape[1], 0))
        self.seen_windows.append(items.clone())
        self.modes.append((self.training, torch.is_inference_mode_enabled(), torch.is_grad_enabled()))
        return items.to(self.weights.dtype) @ self.weights


def make_data(lengths: list[int], num_items: int, rng: random.Random, repeat_targets: bool = True) -> SequenceData:
    """Random sequences; some users see their valid/test targets earlier in their history."""
    seqs = []
    for n in lengths:
        seq = [rng.randint(1, num_items) for _ in range(n)]
        if repeat_targets and n >= 3 and rng.random() < 0.5:
            seq[rng.randrange(n - 2)] = seq[-1]  # test target also in the history
        if repeat_targets and n >= 4 and rng.random() < 0.5:
            seq[rng.randrange(n - 3)] = seq[-2]  # valid target also in the history
        seqs.append(seq)
    flat = torch.tensor([i for s in seqs for i in s], dtype=torch.long)
    offsets = torch.tensor([0] + list(torch.tensor(lengths).cumsum(0).tolist()), dtype=torch.long)
    return SequenceData(flat, offsets, num_items)


def reference_ranks(
    data: SequenceData, split: str, table: list[list[float]], weights: list[list[float]], num_items: int,
    max_len: int, exclude_history: bool,
) -> list[int]:
    """Per-user brute force: own window, own scores, own exclusion, own counting."""
    items = data.items.tolist()
    offs = data.offsets.tolist()
    held = 2 if split == "valid" else 1
    d = len(table[0])
    out = []
    for u in range(len(offs) - 1):
        seq = items[offs[u] : offs[u + 1]]
        history, target = seq[: len(seq) - held], seq[len(seq) - held]
        kept = history[-max_len:]
        window = [0] * (max_len - len(kept)) + kept
        h = [sum(window[t] * weights[t][j] for t in range(max_len)) for j in range(d)]
        score = {c: sum(h[j] * table[c][j] for j in range(d)) for c in range(len(table))}
        excluded = {0} | set(range(num_items + 1, len(table)))
        if exclude_history:
            excluded |= set(history)  # the FULL history, not only the window
        excluded.discard(target)
        rank = 0
        for c in range(1, num_items + 1):
            if c != target and c not in excluded and score[c] >= score[target]:
                rank += 1
        out.append(rank)
    return out


def int_setup(seed: int, n_users: int, num_items: int, max_len: int, d: int, extra_rows: int, max_seq: int):
    rng = random.Random(seed)
    lengths = [rng.randint(3, max_seq) for _ in range(n_users)]
    data = make_data(lengths, num_items, rng)
    g = torch.Generator().manual_seed(seed)
    table = torch.randint(0, 2, (num_items + 1 + extra_rows, d), generator=g).float()  # few values → ties
    table[num_items + 1 :] = 50.0  # extra rows would win everything if they were ranked
    table[0] = 40.0  # so would padding
    weights = torch.randint(-1, 2, (max_len, d), generator=g).float()
    return data, table, weights


# --------------------------------------------------------------------------- metrics


def test_metrics_from_ranks_hand_computed():
    ranks = torch.tensor([0, 1, 4, 9, 10])
    m = metrics_from_ranks(ranks, [5, 10])
    assert list(m) == ["hr@5", "ndcg@5", "mrr@5", "hr@10", "ndcg@10", "mrr@10"]
    assert m["hr@5"] == pytest.approx(3 / 5, abs=1e-15)
    assert m["hr@10"] == pytest.approx(4 / 5, abs=1e-15)
    ndcg5 = (1 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(6)) / 5
    assert m["ndcg@5"] == pytest.approx(ndcg5, abs=1e-15)
    assert m["ndcg@10"] == pytest.approx(ndcg5 + 1 / math.log2(11) / 5, abs=1e-15)
    assert m["mrr@5"] == pytest.approx((1 + 1 / 2 + 1 / 5) / 5, abs=1e-15)
    assert m["mrr@10"] == pytest.approx((1 + 1 / 2 + 1 / 5 + 1 / 10) / 5, abs=1e-15)


def test_metrics_from_ranks_rejects_bad_input():
    with pytest.raises(ValueError):
        metrics_from_ranks(torch.tensor([], dtype=torch.long), [5])
    with pytest.raises(ValueError):
        metrics_from_ranks(torch.tensor([0]), [0])
    with pytest.raises(ValueError):
        metrics_from_ranks(torch.tensor([-1]), [5])


@given(st.lists(st.integers(0, 50), min_size=1, max_size=40), st.lists(st.integers(1, 60), min_size=1, max_size=4))
def test_metrics_from_ranks_matches_python(ranks, ks):
    m = metrics_from_ranks(torch.tensor(ranks), ks)
    n = len(ranks)
    for k in ks:
        assert m[f"hr@{k}"] == pytest.approx(sum(r < k for r in ranks) / n, rel=1e-12)
        assert m[f"ndcg@{k}"] == pytest.approx(sum(1 / math.log2(r + 2) for r in ranks if r < k) / n, rel=1e-12)
        assert m[f"mrr@{k}"] == pytest.approx(sum(1 / (r + 1) for r in ranks if r < k) / n, rel=1e-12)


# --------------------------------------------------------------------------- count_ranks


def brute_count(scores: list[list[float]], targets: list[int], exclude: list[list[bool]] | None) -> list[int]:
    out = []
    for b, row in enumerate(scores):
        t = targets[b]
        out.append(
            sum(
                1
                for c, s in enumerate(row)
                if c != t and not (exclude is not None and exclude[b][c]) and s >= row[t]
            )
        )
    return out


@settings(max_examples=60, deadline=None)
@given(
    b=st.integers(1, 8),
    c=st.integers(1, 30),
    levels=st.integers(1, 4),
    seed=st.integers(0, 2**31 - 1),
    with_exclude=st.booleans(),
)
def test_count_ranks_matches_brute_force(b, c, levels, seed, with_exclude):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, levels, (b, c), generator=g).float()  # few values → many ties
    targets = torch.randint(0, c, (b,), generator=g)
    exclude = torch.rand(b, c, generator=g) < 0.3 if with_exclude else None
    if exclude is not None:
        exclude[0, targets[0]] = True  # the target is never excluded, whatever the mask says
    got = count_ranks(scores, targets, exclude)
    assert got.dtype == torch.long
    assert got.tolist() == brute_count(scores.tolist(), targets.tolist(), None if exclude is None else exclude.tolist())


def test_count_ranks_ties_count_against_target():
    scores = torch.tensor([[1.0, 2.0, 2.0, 2.0, 3.0]])
    assert count_ranks(scores, torch.tensor([2])).tolist() == [3]  # 2, 2 (ties) and 3
    assert count_ranks(scores, torch.tensor([4])).tolist() == [0]
    assert count_ranks(scores, torch.tensor([0])).tolist() == [4]


def test_count_ranks_nan_target_is_worst():
    scores = torch.tensor([[float("nan"), 2.0, 1.0, 0.0]])
    exclude = torch.tensor([[False, False, True, False]])
    assert count_ranks(scores, torch.tensor([0]), exclude).tolist() == [2]


# --------------------------------------------------------------------------- history mask


def test_history_pairs_full_untruncated_and_target_dropped():
    # user 0: history [5, 3, 5, 7, 2, 9] (6 > T), valid target 4, test target 8
    # user 1: history [4, 1], valid target 4 (also in history), test 6
    data = SequenceData(
        torch.tensor([5, 3, 5, 7, 2, 9, 4, 8, 4, 1, 4, 6]), torch.tensor([0, 8, 12]), num_items=9
    )
    ev = eval_set(data, "valid")
    r, item = history_pairs(ev, torch.tensor([1, 0]))
    pairs = sorted(zip(r.tolist(), item.tolist()))
    assert pairs == sorted([(0, 1)] + [(1, i) for i in [5, 3, 5, 7, 2, 9]])
    x = torch.zeros(2, 12)  # columns 10, 11: extra rows
    history_mask(x, ev, torch.tensor([1, 0]), num_items=9)
    ninf = float("-inf")
    assert x[0].tolist() == [ninf, ninf, 0, 0, 0, 0, 0, 0, 0, 0, ninf, ninf]
    assert x[1].tolist() == [ninf, 0, ninf, ninf, 0, ninf, 0, ninf, 0, ninf, ninf, ninf]
    # column chunk 4..7 of the same, as a bool mask; without history only 0 and > num_items
    xb = torch.zeros(2, 4, dtype=torch.bool)
    history_mask(xb, ev, torch.tensor([1, 0]), num_items=9, col_start=4, value=True)
    assert xb.tolist() == [[False] * 4, [False, True, False, True]]
    xn = torch.zeros(2, 12)
    history_mask(xn, ev, torch.tensor([1, 0]), num_items=9, exclude_history=False)
    assert (xn[:, 1:10] == 0).all() and (xn[:, [0, 10, 11]] == ninf).all()


# --------------------------------------------------------------------------- evaluate


@pytest.mark.parametrize("exclude_history", [True, False])
@pytest.mark.parametrize("split", ["valid", "test"])
def test_evaluate_matches_brute_force(exclude_history, split):
    num_items, max_len = 40, 6
    data, table, weights = int_setup(seed=1, n_users=37, num_items=num_items, max_len=max_len, d=5,
                                     extra_rows=2, max_seq=20)
    assert int(data.lengths().max()) > max_len + 2  # some histories are longer than T
    enc = LinearWindowEncoder(table, weights)
    ev = eval_set(data, split)
    res = evaluate(enc, ev, num_items, max_len, ks=(1, 5, 10), exclude_history=exclude_history, batch_size=8)
    assert isinstance(res, EvalResult)
    ref = reference_ranks(data, split, table.tolist(), weights.tolist(), num_items, max_len, exclude_history)
    assert res.ranks.dtype == torch.long and res.ranks.shape == (37,)
    assert res.ranks.tolist() == ref
    assert res.metrics == metrics_from_ranks(torch.tensor(ref), (1, 5, 10))
    # windows are the last T items, left-padded
    assert all(w.shape[1] == max_len for w in enc.seen_windows)


def test_evaluate_history_exclusion_is_untruncated_and_spares_target():
    # one user, T = 2; history [1, 2, 3, 4]; target 1 (also in the history)
    num_items = 6
    data = SequenceData(torch.tensor([1, 2, 3, 4, 1, 5]), torch.tensor([0, 6]), num_items)
    ev = eval_set(data, "valid")  # history 1 2 3 4, target 1
    table = torch.zeros(num_items + 2, 1)
    table[:, 0] = torch.tensor([9.0, 1.0, 5.0, 5.0, 5.0, 1.0, 0.0, 9.0])  # pad and extra row score highest
    weights = torch.ones(2, 1)  # h = 3 + 4 = 7 > 0: scores ordered like the table
    enc = LinearWindowEncoder(table, weights)
    # excluded: 2, 3 (outside the window!), 4; candidates 5 (tie → counts), 6 (below): rank 1
    assert evaluate(enc, ev, num_items, 2).ranks.tolist() == [1]
    # without history exclusion: 2, 3, 4 (score 5 > 1) and 5 (tie) count: rank 4
    assert evaluate(enc, ev, num_items, 2, exclude_history=False).ranks.tolist() == [4]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    n_users=st.integers(1, 25),
    num_items=st.integers(2, 30),
    max_len=st.integers(1, 8),
    d=st.integers(1, 4),
    extra_rows=st.integers(0, 2),
    batch_size=st.integers(1, 9),
    item_chunk=st.one_of(st.none(), st.integers(1, 35)),
    exclude_history=st.booleans(),
)
def test_evaluate_hypothesis(seed, n_users, num_items, max_len, d, extra_rows, batch_size, item_chunk,
                             exclude_history):
    data, table, weights = int_setup(seed, n_users, num_items, max_len, d, extra_rows, max_seq=14)
    enc = LinearWindowEncoder(table, weights)
    for split in ("valid", "test"):
        res = evaluate(enc, eval_set(data, split), num_items, max_len, exclude_history=exclude_history,
                       batch_size=batch_size, item_chunk=item_chunk)
        ref = reference_ranks(data, split, table.tolist(), weights.tolist(), num_items, max_len,
                              exclude_history)
        assert res.ranks.tolist() == ref


@pytest.mark.parametrize("item_chunk", [1, 3, 7, 16, 41, 1000])
def test_item_chunk_identical_ranks_exact_scores(item_chunk):
    num_items, max_len = 40, 6
    data, table, weights = int_setup(seed=5, n_users=60, num_items=num_items, max_len=max_len, d=5,
                                     extra_rows=1, max_seq=15)
    enc = LinearWindowEncoder(table, weights)
    ev = eval_set(data, "test")
    full = evaluate(enc, ev, num_items, max_len, batch_size=16)
    chunked = evaluate(enc, ev, num_items, max_len, batch_size=16, item_chunk=item_chunk)
    assert torch.equal(full.ranks, chunked.ranks)
    assert full.metrics == chunked.metrics


def test_item_chunk_identical_ranks_random_float_scores():
    # real-valued scores (no exact representation): chunks must still agree with one pass
    rng = random.Random(3)
    num_items, max_len, d = 3000, 10, 16
    data = make_data([rng.randint(3, 30) for _ in range(300)], num_items, rng)
    g = torch.Generator().manual_seed(3)
    table = torch.randn(num_items + 2, d, generator=g)
    table[7] = table[11]  # duplicate embeddings: exact ties between different items
    weights = torch.randn(max_len, d, generator=g) * 0.01
    enc = LinearWindowEncoder(table, weights)
    ev = eval_set(data, "test")
    full = evaluate(enc, ev, num_items, max_len, batch_size=128)
    for chunk in (500, 1024, 2999):
        assert torch.equal(full.ranks, evaluate(enc, ev, num_items, max_len, batch_size=128,
                                                item_chunk=chunk).ranks)


def test_sorting_by_length_returns_user_order():
    num_items, max_len = 30, 5
    data, table, weights = int_setup(seed=9, n_users=50, num_items=num_items, max_len=max_len, d=4,
                                     extra_rows=0, max_seq=25)
    enc = LinearWindowEncoder(table, weights)
    ev = eval_set(data, "test")
    base = evaluate(enc, ev, num_items, max_len, batch_size=7)
    # the encoder saw the users grouped by length (non-decreasing real-item counts)
    seen = torch.cat(enc.seen_windows)
    counts = (seen > 0).sum(1)
    assert bool((counts[1:] >= counts[:-1]).all())
    # permuting the users permutes the ranks the same way
    perm = torch.randperm(50, generator=torch.Generator().manual_seed(0))
    ev_p = type(ev)(ev.data, ev.starts[perm], ev.ends[perm], ev.targets[perm])
    permuted = evaluate(enc, ev_p, num_items, max_len, batch_size=7)
    assert torch.equal(permuted.ranks, base.ranks[perm])
    assert permuted.metrics == pytest.approx(base.metrics, abs=1e-12)


@pytest.mark.parametrize("training", [True, False])
def test_evaluate_mode_restored_and_no_graph(training):
    num_items, max_len = 20, 4
    data, table, weights = int_setup(seed=2, n_users=10, num_items=num_items, max_len=max_len, d=3,
                                     extra_rows=1, max_seq=9)
    enc = LinearWindowEncoder(table, weights)
    enc.train(training)
    res = evaluate(enc, eval_set(data, "valid"), num_items, max_len, batch_size=4)
    assert enc.training is training
    assert enc.modes and all(m == (False, True, False) for m in enc.modes)  # eval, inference, no grad
    assert res.ranks.grad_fn is None and not res.ranks.requires_grad
    assert not res.ranks.is_inference()  # usable afterwards in normal code
    assert all(p.grad is None for p in enc.parameters())
    # also restored after a failure inside the loop
    enc.train(training)
    with pytest.raises(ValueError):
        evaluate(enc, eval_set(data, "valid"), num_items + 5, max_len)  # table too small
    assert enc.training is training


def test_evaluate_nan_scores_give_worst_rank():
    num_items, max_len = 30, 3  # worst rank >= 30 - 1 - 5 > 10
    data, table, weights = int_setup(seed=4, n_users=6, num_items=num_items, max_len=max_len, d=2,
                                     extra_rows=0, max_seq=6)
    table = torch.full_like(table, float("nan"))
    enc = LinearWindowEncoder(table, weights)
    res = evaluate(enc, eval_set(data, "test"), num_items, max_len, ks=(5, 10))
    assert all(v == 0.0 for v in res.metrics.values())
    for u, rank in enumerate(res.ranks.tolist()):
        s, e = int(data.offsets[u]), int(data.offsets[u + 1])
        hist, target = set(data.items[s : e - 1].tolist()), int(data.items[e - 1])
        assert rank == num_items - 1 - len(hist - {target})


def test_evaluate_rejects_bad_arguments():
    data, table, weights = int_setup(seed=0, n_users=3, num_items=5, max_len=2, d=2, extra_rows=0, max_seq=5)
    enc = LinearWindowEncoder(table, weights)
    ev = eval_set(data, "test")
    for kwargs in ({"ks": ()}, {"ks": (0,)}, {"batch_size": 0}, {"item_chunk": 0}):
        with pytest.raises(ValueError):
            evaluate(enc, ev, 5, 2, **kwargs)
    with pytest.raises(ValueError):
        evaluate(enc, ev, 3, 2)  # targets beyond num_items
