"""The CSR container, training prefixes, windows and the leave-one-out split (SPEC §1);
plus the headline statistics printed for a dataset."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seqcl.data.dataset import SequenceData, eval_set, training_samples, trim_padding, windows
from seqcl.data.loading import describe, format_stats, load_data
from seqcl.data.options import DataOptions

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


@pytest.fixture(scope="module")
def beauty(tmp_path_factory: pytest.TempPathFactory) -> SequenceData:
    path = SHARED / "Beauty.txt"
    if not path.is_file():
        pytest.skip(f"{path} not available")
    cache_dir = tmp_path_factory.mktemp("cache")
    return load_data(str(path), DataOptions(cache_dir=str(cache_dir)))[0]


@pytest.fixture()
def small() -> SequenceData:
    # user 0: 1 2 3 4 5 ; user 1: 6 7 8 ; user 2: 2 9 10 11
    seqs = [[1, 2, 3, 4, 5], [6, 7, 8], [2, 9, 10, 11]]
    items = torch.tensor([i for s in seqs for i in s])
    offsets = torch.tensor([0, 5, 8, 12])
    return SequenceData(items, offsets, 11, "small")


def test_container(small: SequenceData) -> None:
    assert small.num_users == 3 and small.num_actions == 12
    assert small.lengths().tolist() == [5, 3, 4]
    assert small.user_of_position().tolist() == [0] * 5 + [1] * 3 + [2] * 4


def test_training_prefixes(small: SequenceData) -> None:
    train = training_samples(small)
    # t = 1..n-3: user 0 → 2 samples, user 1 → 0, user 2 → 1
    assert len(train) == 3
    assert train.targets.tolist() == [2, 3, 9]
    inputs = [small.items[s:e].tolist() for s, e in zip(train.starts.tolist(), train.ends.tolist())]
    assert inputs == [[1], [1, 2], [2]]


def test_windows_left_padded_most_recent_last(small: SequenceData) -> None:
    train = training_samples(small)
    w = train.windows(torch.arange(len(train)), 4)
    assert w.tolist() == [[0, 0, 0, 1], [0, 0, 1, 2], [0, 0, 0, 2]]
    assert w.dtype == torch.long


def test_windows_keep_only_last_T(small: SequenceData) -> None:
    w = windows(small.items, torch.tensor([0, 8]), torch.tensor([5, 12]), 3)
    assert w.tolist() == [[3, 4, 5], [9, 10, 11]]
    w = windows(small.items, torch.tensor([5]), torch.tensor([5]), 3)  # empty input → all padding
    assert w.tolist() == [[0, 0, 0]]


def test_eval_sets(small: SequenceData) -> None:
    valid, test = eval_set(small, "valid"), eval_set(small, "test")
    assert valid.targets.tolist() == [4, 7, 10]
    assert test.targets.tolist() == [5, 8, 11]
    assert valid.windows(torch.arange(3), 3).tolist() == [[1, 2, 3], [0, 0, 6], [0, 2, 9]]
    assert test.windows(torch.arange(3), 3).tolist() == [[2, 3, 4], [0, 6, 7], [2, 9, 10]]
    # the history to exclude is the full untruncated input range
    assert (test.ends - test.starts).tolist() == [4, 2, 3]
    with pytest.raises(ValueError, match="split must be"):
        eval_set(small, "train")


def test_beauty_training_samples(beauty: SequenceData) -> None:
    train = training_samples(beauty)
    assert len(train) == 131_413  # SPEC §1
    w = train.windows(torch.arange(len(train)), 50)
    assert bool((w[:, -1] > 0).all())  # the most recent item always sits in slot T-1
    assert torch.equal(w[:, -1], beauty.items[train.ends - 1])


def test_beauty_eval_targets(beauty: SequenceData) -> None:
    lines = (SHARED / "Beauty.txt").read_text().splitlines()
    last_two = torch.tensor([[int(x) for x in line.split()[-2:]] for line in lines])
    assert torch.equal(eval_set(beauty, "valid").targets, last_two[:, 0])
    assert torch.equal(eval_set(beauty, "test").targets, last_two[:, 1])
    assert int(eval_set(beauty, "valid").windows(torch.tensor([0]), 50)[0, -1]) == 3  # line 1: "1 1 2 3 4 5"


def test_beauty_stats(beauty: SequenceData) -> None:
    d = describe(beauty)
    assert (d["users"], d["items"], d["actions"], d["min_len"], d["max_len"]) == (22363, 12101, 198502, 5, 204)
    assert d["avg_len"] == pytest.approx(8.876, abs=1e-3)
    assert format_stats(d) == "users 22363 | items 12101 | actions 198502 | avg.len 8.9 | density 0.07%"
    assert format_stats(beauty) == format_stats(d)


def brute_trim(rows: list[list[int]], width: int) -> list[list[int]]:
    """Per definition: drop leading columns while every row has 0 there, keeping at least one column."""
    first = 0
    while first < width - 1 and all(row[first] == 0 for row in rows):
        first += 1
    return [row[first:] for row in rows]


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 6).flatmap(lambda w: st.lists(st.lists(
    st.integers(0, 4).map(lambda v: 0 if v < 2 else v), min_size=w, max_size=w), min_size=1, max_size=5)
    .map(lambda rows: (rows, w))))
def test_trim_padding_matches_brute_force(case):
    """Any padding pattern (left, interior as ICLRec's mask, empty rows) and width, including 0 and 1."""
    rows, width = case
    items = torch.tensor(rows, dtype=torch.long).view(len(rows), width)
    got = trim_padding(items)
    assert got.tolist() == brute_trim(rows, width)
    assert got.shape[1] >= min(width, 1) and got.data_ptr() == items[:, items.shape[1] - got.shape[1]:].data_ptr()


def test_trim_padding_of_left_padded_windows_is_the_longest_row():
    items = torch.tensor([[0, 0, 0, 4, 5], [0, 0, 1, 0, 3], [0, 0, 0, 0, 0]])  # row 1: padding inside
    assert trim_padding(items).tolist() == [[0, 4, 5], [1, 0, 3], [0, 0, 0]]
    assert trim_padding(torch.zeros(3, 4, dtype=torch.long)).shape == (3, 1)
    assert trim_padding(torch.zeros(0, 4, dtype=torch.long)).shape == (0, 1)
