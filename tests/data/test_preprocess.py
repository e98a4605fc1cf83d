"""Preprocessing (SPEC §1): exact reference counts, and the vectorised pipeline
checked against a plain-Python reading of the spec on random tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seqcl.data import readers
from seqcl.data.dataset import SequenceData
from seqcl.data.options import DataOptions
from seqcl.data.preprocess import (
    drop_short_users,
    preprocess_interactions,
    preprocess_interactions_with_report,
    preprocess_sequences,
    preprocess_sequences_with_report,
    renumber_by_first_appearance,
)
from seqcl.data.readers import RawInteractions
from seqcl.errors import DataError

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def shared(name: str) -> Path:
    path = SHARED / name
    if not path.is_file():
        pytest.skip(f"{path} not available")
    return path


def sequences(data: SequenceData) -> list[list[int]]:
    off = data.offsets.tolist()
    items = data.items.tolist()
    return [items[a:b] for a, b in zip(off[:-1], off[1:])]


def table(rows: list[tuple[str, str, float]]) -> RawInteractions:
    """RawInteractions from (user, item, time) rows, coded by first appearance like the reader."""
    users = [r[0] for r in rows]
    items = [r[1] for r in rows]
    u_tok = list(dict.fromkeys(users))
    i_tok = list(dict.fromkeys(items))
    return RawInteractions(
        "t.csv",
        np.array([u_tok.index(u) for u in users], dtype=np.int64),
        np.array([i_tok.index(i) for i in items], dtype=np.int64),
        np.array([r[2] for r in rows], dtype=np.float64),
        np.array(u_tok),
        np.array(i_tok),
        True,
    )


def reference(rows: list[tuple[str, str, float]], k: int, min_items: int) -> list[list[int]]:
    """SPEC §1 literally, one step at a time, in plain Python."""
    ids: dict[str, int] = {}
    return [[ids.setdefault(i, len(ids) + 1) for i in s] for _, s in reference_tokens(rows, k, min_items)]


def reference_tokens(rows: list[tuple[str, str, float]], k: int, min_items: int) -> list[tuple[str, list[str]]]:
    """(user, item tokens) per kept user, in output order, before renumbering."""
    by_user: dict[str, list[tuple[float, int, str]]] = {}
    for n, (u, i, t) in enumerate(rows):
        by_user.setdefault(u, []).append((t, n, i))
    seqs = {u: [i for _, _, i in sorted(v)] for u, v in by_user.items()}  # by time, then file order
    seqs = {u: list(dict.fromkeys(s)) for u, s in seqs.items()}  # keep the earliest of each pair
    while True:
        item_count: dict[str, int] = {}
        for s in seqs.values():
            for i in s:
                item_count[i] = item_count.get(i, 0) + 1
        new = {u: [i for i in s if item_count[i] >= k] if len(s) >= k else [] for u, s in seqs.items()}
        new = {u: s for u, s in new.items() if s}
        if new == seqs:
            break
        seqs = new
    return [(u, s) for u, s in seqs.items() if len(s) >= min_items]  # dict keeps first-appearance user order


# ---------------------------------------------------------------- reference counts


def test_ml100k_reference_counts() -> None:
    raw = readers.read_csv(shared("ml-100k.csv"))
    data, report = preprocess_interactions_with_report(raw, DataOptions(), "ml-100k")
    assert (data.num_users, data.num_items, data.num_actions) == (943, 1349, 99287)
    assert report.kcore_rounds == 2  # as the data README says
    assert report.duplicates == 0
    assert int(data.items.min()) == 1 and torch.unique(data.items).numel() == 1349
    rows = list(zip(raw.user_tokens[raw.users].tolist(), raw.item_tokens[raw.items].tolist(), raw.timestamps.tolist()))
    assert sequences(data) == reference(rows, 5, 3)  # the whole result, against the literal reading


def test_beauty_kept_as_is() -> None:
    raw = readers.read_sequences(shared("Beauty.txt"))
    data, report = preprocess_sequences_with_report(raw, DataOptions(), "Beauty")
    assert (data.num_users, data.num_items, data.num_actions) == (22363, 12101, 198502)
    assert not report.remapped and report.short_users == 0
    assert torch.equal(data.items, torch.from_numpy(raw.items))


def test_ml1m_ids_already_in_first_appearance_order() -> None:
    raw = readers.read_sequences(shared("ml-1m.txt.gz"))
    data = preprocess_sequences(raw, DataOptions(), "ml-1m")
    assert (data.num_users, data.num_items, data.num_actions) == (6040, 3416, 999611)
    assert np.array_equal(renumber_by_first_appearance(raw.items), raw.items)


# ---------------------------------------------------------------- interaction pipeline


def test_sort_by_time_stable_on_ties() -> None:
    rows = [("u", "c", 2), ("u", "a", 1), ("u", "d", 2), ("u", "b", 1)]
    data = preprocess_interactions(table(rows), DataOptions(k_core=1))
    # a(1) b(1) c(2) d(2): ties keep file order; ids by first appearance
    assert sequences(data) == [[1, 2, 3, 4]]
    assert data.num_items == 4


def test_duplicates_keep_the_earliest() -> None:
    rows = [("u", "a", 5), ("u", "b", 2), ("u", "a", 1), ("u", "c", 3)]
    data, report = preprocess_interactions_with_report(table(rows), DataOptions(k_core=1))
    assert report.duplicates == 1
    assert sequences(data) == [[1, 2, 3]]  # a@1, b@2, c@3 — not b, c, a


def test_k_core_is_iterative() -> None:
    # k=2. Round 1 removes item z (1 occurrence); then user v is left with 1 item
    # (round 2); then item y, shared by u and v, is left with 1 (round 3).
    rows = [("u", "x", 1), ("u", "w", 2), ("u", "y", 3), ("u", "q", 4), ("v", "y", 1), ("v", "z", 2),
            ("t", "x", 1), ("t", "w", 2), ("t", "q", 4)]  # fmt: skip
    data, report = preprocess_interactions_with_report(table(rows), DataOptions(k_core=2))
    assert sequences(data) == [[1, 2, 3], [1, 2, 3]]  # u: x w q, t: x w q
    assert report.kcore_rounds == 4  # three removing passes, then a stable one
    assert report.kcore_removed == 3  # (v, z), then (v, y), then (u, y)


def test_short_users_dropped_after_k_core() -> None:
    rows = [("u", "x", 1), ("u", "w", 2), ("t", "x", 1), ("t", "w", 2)]
    with pytest.raises(DataError, match=r"t\.csv: no users left after preprocessing \(k_core=2, min_user_items=3\)"):
        preprocess_interactions(table(rows), DataOptions(k_core=2))
    data, report = preprocess_interactions_with_report(table(rows + [("s", "x", 0), ("s", "w", 1), ("s", "v", 2)]), DataOptions(k_core=1))
    assert sequences(data) == [[1, 2, 3]]
    assert report.short_users == 2


def test_users_in_order_of_first_appearance() -> None:
    rows = [("b", "x", 9), ("a", "y", 1), ("b", "y", 1), ("a", "x", 2), ("a", "z", 3), ("b", "z", 0)]
    data = preprocess_interactions(table(rows), DataOptions(k_core=1))
    # user b (first in the file) comes first: z@0 y@1 x@9 → 1 2 3; then a: y x z → 2 3 1
    assert sequences(data) == [[1, 2, 3], [2, 3, 1]]


rows_strategy = st.lists(
    st.tuples(st.sampled_from("abcdefg"), st.sampled_from("pqrstuvwxyz"), st.integers(0, 6)),
    min_size=1,
    max_size=80,
)


@settings(max_examples=150, deadline=None)
@given(rows=rows_strategy, k=st.integers(1, 4), min_items=st.integers(3, 5))
def test_matches_plain_python_reference(rows: list[tuple[str, str, int]], k: int, min_items: int) -> None:
    expected = reference(rows, k, min_items)
    options = DataOptions(k_core=k, min_user_items=min_items)
    if not expected:
        with pytest.raises(DataError):
            preprocess_interactions(table(rows), options)
        return
    data = preprocess_interactions(table(rows), options)
    assert sequences(data) == expected
    assert data.num_items == max(max(s) for s in expected)
    # the id maps lead back to the file's own user and item tokens
    back = [(data.user_ids[u], [data.item_ids[i - 1] for i in seq]) for u, seq in enumerate(sequences(data))]
    assert back == reference_tokens(rows, k, min_items)
    assert len(data.item_ids) == data.num_items


# ---------------------------------------------------------------- sequence files


def raw_sequences(seqs: list[list[int]]) -> readers.RawSequences:
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    items = np.array([i for s in seqs for i in s], dtype=np.int64)
    return readers.RawSequences("s.txt", [str(u) for u in range(len(seqs))], np.arange(1, len(seqs) + 1), lengths, items)


def test_sequences_drop_short_users_and_count_them() -> None:
    raw = raw_sequences([[1, 2, 3], [4, 5], [2, 3, 4, 5], []])
    data, report = preprocess_sequences_with_report(raw, DataOptions())
    assert sequences(data) == [[1, 2, 3], [2, 3, 4, 5]]
    assert report.short_users == 2
    assert data.num_items == 5 and not report.remapped  # ids kept: the file used 1..5


def test_sequences_keep_repeats_and_order() -> None:
    data = preprocess_sequences(raw_sequences([[3, 1, 3, 2]]), DataOptions())
    assert sequences(data) == [[3, 1, 3, 2]]


@pytest.mark.parametrize(("seqs", "expected"), [([[0, 5, 9]], [[1, 2, 3]]), ([[10, 30, 20], [30, 40, 10]], [[1, 2, 3], [2, 4, 1]])])
def test_sequences_renumbered_when_not_one_to_max(seqs: list[list[int]], expected: list[list[int]]) -> None:
    data, report = preprocess_sequences_with_report(raw_sequences(seqs), DataOptions())
    assert report.remapped
    assert sequences(data) == expected
    assert data.num_items == max(max(s) for s in expected)


def test_sequences_nobody_long_enough() -> None:
    with pytest.raises(DataError, match=r"s\.txt: no user has at least 3 items"):
        preprocess_sequences(raw_sequences([[1, 2], [2, 1]]), DataOptions())


def test_drop_short_users_on_sequence_data() -> None:
    data = SequenceData(torch.tensor([1, 2, 3, 4, 5, 1, 2]), torch.tensor([0, 3, 5, 7]), 5)
    out = drop_short_users(data, 3)
    assert sequences(out) == [[1, 2, 3]]
    assert out.num_items == 5
    assert drop_short_users(data, 2) is data
