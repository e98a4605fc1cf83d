"""The built-in data: deterministic, clean, benchmark-shaped, and learnable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from seqcl.data.dataset import SequenceData
from seqcl.data.loading import load_data
from seqcl.data.options import DataOptions
from seqcl.data.synthetic import SYNTHETIC_NAME, SyntheticConfig, generate
from seqcl.errors import DataError


@pytest.fixture(scope="module")
def data() -> SequenceData:
    return generate(0)


def test_same_seed_same_data(data: SequenceData) -> None:
    again = generate(0)
    assert torch.equal(data.items, again.items) and torch.equal(data.offsets, again.offsets)
    assert data.num_items == again.num_items


def test_other_seed_other_data(data: SequenceData) -> None:
    other = generate(1)
    assert other.items.numel() != data.items.numel() or not torch.equal(other.items, data.items)


def test_shape_like_a_small_benchmark(data: SequenceData) -> None:
    lengths = data.lengths()
    assert data.name == SYNTHETIC_NAME
    assert 1000 <= data.num_users <= 3000
    assert 200 <= data.num_items <= 1000
    assert int(lengths.min()) >= 5 and int(lengths.max()) <= 20
    assert 8 <= float(lengths.float().mean()) <= 14


def test_clean(data: SequenceData) -> None:
    """Ids 1..num_items, every id used, no repeat inside a user (like Beauty)."""
    assert int(data.items.min()) == 1 and int(data.items.max()) == data.num_items
    assert torch.unique(data.items).numel() == data.num_items
    pairs = data.user_of_position() * (data.num_items + 1) + data.items
    assert torch.unique(pairs).numel() == data.num_actions


def test_popularity_is_skewed(data: SequenceData) -> None:
    counts = torch.bincount(data.items).sort(descending=True).values.float()
    top10 = counts[: data.num_items // 10].sum() / counts.sum()
    assert top10 > 0.25  # uniform would be 0.10


def test_next_item_is_learnable(data: SequenceData) -> None:
    """Leave-one-out on the last item: transition counts from the last two items
    beat popularity by a wide margin (HR@10)."""
    items, off, n = data.items.numpy(), data.offsets.numpy(), data.num_items
    ends = off[1:] - 1  # test target position per user
    in_train = np.ones(items.size, dtype=bool)
    in_train[ends] = False
    user = data.user_of_position().numpy()
    same_user = user[1:] == user[:-1]
    train_pair = same_user & in_train[1:]
    bigram = np.zeros((n + 1, n + 1))
    np.add.at(bigram, (items[:-1][train_pair], items[1:][train_pair]), 1)
    pop = np.bincount(items[in_train], minlength=n + 1).astype(float)

    last, prev, target = items[ends - 1], items[ends - 2], items[ends]
    scores_seq = bigram[last] + 0.3 * bigram[prev] + 1e-6 * pop
    scores_pop = np.broadcast_to(pop, scores_seq.shape).copy()
    hr = {}
    for name, scores in (("seq", scores_seq), ("pop", scores_pop)):
        scores[:, 0] = -np.inf
        for u in range(data.num_users):  # exclude each user's history, as evaluation does
            scores[u, items[off[u] : ends[u]]] = -np.inf
        rank = (scores > scores[np.arange(target.size), target][:, None]).sum(1)
        hr[name] = float((rank < 10).mean())
    assert hr["seq"] > 0.5
    assert hr["seq"] > 4 * hr["pop"]


def test_config_must_fit_walks_in_one_intent() -> None:
    with pytest.raises(ValueError, match="max_len <= items_per_intent"):
        generate(0, SyntheticConfig(items_per_intent=10, max_len=40))


def test_load_builtin(tmp_path: Path) -> None:
    opts = DataOptions(cache_dir=str(tmp_path / "cache"))
    data, key = load_data("builtin", opts)
    again, key2 = load_data("builtin:0", opts)
    _, key_seed = load_data("builtin:1", opts)
    _, key_len = load_data("builtin", DataOptions(cache_dir=str(tmp_path / "cache"), max_len=20))
    assert key == key2 and len({key, key_seed, key_len}) == 3
    assert torch.equal(data.items, again.items)
    assert not (tmp_path / "cache").exists()  # generated, never written


def test_load_builtin_min_user_items(tmp_path: Path) -> None:
    data, _ = load_data("builtin", DataOptions(min_user_items=20))
    assert int(data.lengths().min()) >= 20
    assert data.num_items == generate(0).num_items  # ids unchanged, as for a sequence file


def test_load_builtin_bad_seed() -> None:
    with pytest.raises(DataError, match=r"builtin:x: the seed after 'builtin:' must be an integer, got 'x'"):
        load_data("builtin:x", DataOptions())
