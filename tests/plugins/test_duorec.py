"""DuoRec's ``dropout`` augmenter: the same-target index, the draws, the cache, the modes."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest
import torch

from seqcl.data.dataset import SequenceData, training_samples, trim_padding
from seqcl.interfaces import Batch, BuildContext
from seqcl_duorec import DuoRecAugmenter, DuoRecOptions, build_index, draw_same_target, load_or_build
from seqcl_duorec.augmenter import SEED_OFFSET
from seqcl_duorec.index import INDEX_VERSION, cache_file, check_index
from seqcl_sasrec import SASRec, SASRecOptions


def _data(seed: int = 0, users: int = 30, num_items: int = 12) -> SequenceData:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(4, 12, (users,), generator=g)
    items = torch.randint(1, num_items + 1, (int(lengths.sum()),), generator=g)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(lengths, 0)])
    return SequenceData(items, offsets, num_items)


def _draw(index, targets, ids, seed=0):
    return index.draw(targets, ids, torch.Generator().manual_seed(seed))


def test_index_groups_every_sample_with_its_target():
    targets = torch.tensor([3, 1, 3, 2, 3, 1, 5])
    index = build_index(targets, num_items=6)
    check_index(index, targets, 6)
    assert index.counts.tolist() == [0, 2, 1, 3, 0, 1, 0]
    start = index.group_start
    for t in range(7):
        group = index.order[start[t]:start[t] + index.counts[t]].tolist()
        assert group == [i for i, v in enumerate(targets.tolist()) if v == t]  # all of them, in order
    for i in range(len(targets)):
        assert int(index.order[start[targets[i]] + index.position[i]]) == i


def test_draws_another_sample_with_the_same_target_uniformly():
    targets = torch.tensor([3, 1, 3, 2, 3, 1, 5])
    index = build_index(targets, 6)
    ids = torch.tensor([0] * 3000 + [1] * 100)
    other = _draw(index, targets, ids)
    assert (targets[other] == targets[ids]).all(), "drew another target"
    assert (other != ids).all(), "drew the sample itself although others exist"
    counts = Counter(other[:3000].tolist())
    assert set(counts) == {2, 4} and min(counts.values()) > 1300  # ≈ 1500 each
    assert set(other[3000:].tolist()) == {5}


def test_a_sample_alone_with_its_target_gets_itself():
    targets = torch.tensor([3, 1, 3, 2, 3, 1, 5])
    index = build_index(targets, 6)
    ids = torch.tensor([3, 6, 6, 3])
    assert torch.equal(_draw(index, targets, ids), ids)


def test_draws_on_real_training_samples_never_cross_targets():
    samples = training_samples(_data())
    index = build_index(samples.targets, 12)
    ids = torch.arange(len(samples)).repeat(20)
    for seed in range(3):
        other = _draw(index, samples.targets, ids, seed)
        assert (samples.targets[other] == samples.targets[ids]).all()
        alone = index.counts[samples.targets[ids]] == 1
        assert torch.equal(other[alone], ids[alone])
        assert (other[~alone] != ids[~alone]).all()


def test_draw_function_is_the_method():
    targets = torch.tensor([1, 1, 2, 1])
    index = build_index(targets, 2)
    ids = torch.tensor([0, 1, 3])
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(index.draw(targets, ids, g1),
                       draw_same_target(index.order, index.counts, index.position, index.group_start, targets, ids, g2))


# --------------------------------------------------------------------------- cache


def test_cache_file_is_written_keyed_and_reused(tmp_path, monkeypatch):
    samples = training_samples(_data())
    index = load_or_build(tmp_path, "key-a", samples.targets, 12)
    path = cache_file(tmp_path, "key-a")
    assert path == tmp_path / "duorec-key-a.pt" and path.is_file()
    assert not list(tmp_path.glob("*.tmp")), "temporary file left behind"
    import seqcl_duorec.index as index_module

    def fail(*args, **kwargs):
        raise AssertionError("rebuilt although a valid cache entry exists")

    monkeypatch.setattr(index_module, "build_index", fail)
    again = load_or_build(tmp_path, "key-a", samples.targets, 12)
    for name in ("order", "counts", "position"):
        assert torch.equal(getattr(again, name), getattr(index, name))
    with pytest.raises(AssertionError, match="rebuilt"):
        load_or_build(tmp_path, "key-b", samples.targets, 12)  # another key: another file


def test_corrupt_or_stale_cache_is_rebuilt(tmp_path):
    samples = training_samples(_data())
    path = cache_file(tmp_path, "k")
    path.write_bytes(b"not a torch file")
    index = load_or_build(tmp_path, "k", samples.targets, 12)
    check_index(index, samples.targets, 12)
    assert torch.load(path, weights_only=True)["version"] == INDEX_VERSION  # overwritten with a good entry
    other = training_samples(_data(seed=1))  # same key, other targets: must not be trusted
    index = load_or_build(tmp_path, "k", other.targets, 12)
    check_index(index, other.targets, 12)


def test_index_edited_in_place_is_rebuilt(tmp_path, capfd):
    samples = training_samples(_data())
    index = load_or_build(tmp_path, "k", samples.targets, 12)
    path = cache_file(tmp_path, "k")
    blob = torch.load(path, weights_only=True)
    # swap two samples of one target group: still a consistent index, but not the one built
    start, counts = index.group_start, index.counts
    t = int(torch.nonzero(counts >= 2)[0])
    i, j = int(start[t]), int(start[t]) + 1
    order, position = blob["order"].clone(), blob["position"].clone()
    a, b = int(order[i]), int(order[j])
    order[i], order[j] = b, a
    position[a], position[b] = position[b].clone(), position[a].clone()
    edited = dataclasses.replace(index, order=order, position=position)
    check_index(edited, samples.targets, 12)  # passes the consistency check: only a checksum can tell
    torch.save({**blob, "order": order, "position": position}, path)
    again = load_or_build(tmp_path, "k", samples.targets, 12)
    assert torch.equal(again.order, index.order) and torch.equal(again.position, index.position)
    err = capfd.readouterr().err.splitlines()
    assert len(err) == 1 and str(path) in err[0] and "rebuilding" in err[0], err
    assert torch.equal(torch.load(path, weights_only=True)["order"], index.order)  # rewritten


def test_index_write_failure_is_a_warning(tmp_path, monkeypatch, capfd):
    def disk_full(obj, f):
        f.write(b"part")
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(torch, "save", disk_full)
    samples = training_samples(_data())
    for _ in range(2):
        check_index(load_or_build(tmp_path, "k", samples.targets, 12), samples.targets, 12)
    err = capfd.readouterr().err.splitlines()
    assert len(err) == 1 and str(cache_file(tmp_path, "k")) in err[0] and "file write failed" in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_no_cache_dir_writes_nothing(tmp_path, monkeypatch):
    samples = training_samples(_data())
    monkeypatch.chdir(tmp_path)
    check_index(load_or_build(None, "k", samples.targets, 12), samples.targets, 12)
    check_index(load_or_build(tmp_path, "", samples.targets, 12), samples.targets, 12)
    assert list(tmp_path.iterdir()) == []


def test_augmenter_uses_the_context_cache(tmp_path):
    samples = training_samples(_data())
    ctx = BuildContext(num_items=12, max_len=8, hidden_size=8, train=samples, cache_dir=tmp_path, data_key="abc")
    DuoRecAugmenter(DuoRecOptions(), ctx)
    assert (tmp_path / "duorec-abc.pt").is_file()
    DuoRecAugmenter(DuoRecOptions(mode="unsupervised"), dataclasses.replace(ctx, data_key="unused"))
    assert not (tmp_path / "duorec-unused.pt").exists(), "unsupervised mode needs no index"


# ---------------------------------------------------------------------------- modes


class _Recorder(SASRec):
    """SASRec that records the item windows it encodes."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls: list[torch.Tensor] = []

    def encode(self, items):
        self.calls.append(items.clone())
        return super().encode(items)


@pytest.mark.parametrize("mode, pair, passes", [
    ("unsupervised", ("h", "h_prime"), 1),
    ("supervised", ("h", "h_sem"), 1),
    ("duorec", ("h_prime", "h_sem"), 2),
])
def test_modes_compute_only_what_they_need(tmp_path, mode, pair, passes):
    samples = training_samples(_data())
    ctx = BuildContext(num_items=12, max_len=8, hidden_size=8, train=samples, cache_dir=tmp_path, data_key="m")
    aug = DuoRecAugmenter(DuoRecOptions(mode=mode), ctx)
    assert aug.pairs == [pair]
    encoder = _Recorder(SASRecOptions(hidden_size=8, heads=2, inner_size=16), ctx)
    ids = torch.arange(0, len(samples), 7)
    batch = Batch(trim_padding(samples.windows(ids, 8)), samples.targets[ids], ids)
    before = batch.items.clone()
    h_in = encoder.embed(batch.items)
    hidden = encoder.contextualize(h_in, batch.items)
    views = aug(batch, encoder, h_in, hidden)
    assert views.pairs == [pair]
    assert set(views.tensors) == set(pair)
    assert len(encoder.calls) == 1 and encoder.calls[0].shape[0] == passes * batch.size  # one stacked call
    for name, h in views.tensors.items():
        assert h.shape == (batch.size, 8) and torch.isfinite(h).all()
    if "h" in views.tensors:
        assert torch.equal(views.tensors["h"], hidden[:, -1])  # the main pass itself, not recomputed
    if "h_sem" in views.tensors:
        sem = encoder.calls[0][-batch.size:]  # the h_sem rows: windows of same-target samples
        full = samples.windows(torch.arange(len(samples)), 8)
        for row, target in zip(sem, batch.targets):
            row = torch.nn.functional.pad(row, (8 - row.shape[0], 0))
            match = (full == row).all(1) & (samples.targets == target)
            assert match.any(), "h_sem encodes a sample with another target"
    assert torch.equal(batch.items, before)


def test_sem_pass_matches_a_plain_encode_in_eval_mode(tmp_path):
    """The stacked, left-padded, trimmed call is exact: same views as encoding each input alone."""
    samples = training_samples(_data())
    ctx = BuildContext(num_items=12, max_len=8, hidden_size=8, train=samples, seed=3)
    aug = DuoRecAugmenter(DuoRecOptions(), ctx)
    encoder = SASRec(SASRecOptions(hidden_size=8, heads=2, inner_size=16), ctx).eval()
    ids = torch.arange(0, len(samples), 5)
    batch = Batch(trim_padding(samples.windows(ids, 8)), samples.targets[ids], ids)
    views = aug(batch, encoder, None, encoder.contextualize(encoder.embed(batch.items), batch.items))
    other = build_index(samples.targets, 12).draw(samples.targets, ids, torch.Generator().manual_seed(3 + SEED_OFFSET))
    torch.testing.assert_close(views.tensors["h_sem"], encoder.encode(samples.windows(other, 8)))
    torch.testing.assert_close(views.tensors["h_prime"], encoder.encode(batch.items))
