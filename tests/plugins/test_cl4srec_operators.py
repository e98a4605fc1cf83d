"""Property tests of CL4SRec's operators (SPEC §9) on random left-padded batches.

Each property is checked row by row against the operator's definition; a few
deterministic tests check that every allowed window start is actually drawn
(an off-by-one in the start range — DuoRec's ``randint(0, n - keep - 1)`` —
would never pass them).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seqcl.interfaces import BuildContext
from seqcl_cl4srec import RandomAugmenter, RandomOptions
from seqcl_cl4srec import operators as ops

NUM_ITEMS = 30
MASK_TOKEN = NUM_ITEMS + 1


@st.composite
def batches(draw, min_len: int = 0):
    """(B, W) left-padded item windows (rows of length min_len..W), ids in 1..NUM_ITEMS."""
    width = draw(st.integers(1, 12))
    rows = draw(st.integers(1, 6))
    out = torch.zeros(rows, width, dtype=torch.long)
    for r in range(rows):
        n = draw(st.integers(min(min_len, width), width))
        ids = draw(st.lists(st.integers(1, NUM_ITEMS), min_size=n, max_size=n))
        if n:
            out[r, width - n:] = torch.tensor(ids)
    return out


ratios = st.one_of(st.just(0.6), st.just(0.3), st.floats(0.0, 1.0))
seeds = st.integers(0, 2**31 - 1)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def real(row: torch.Tensor) -> list[int]:
    return [int(v) for v in row if v != 0]


def assert_left_padded(row: torch.Tensor) -> None:
    values = row.tolist()
    first = next((i for i, v in enumerate(values) if v != 0), len(values))
    assert all(v != 0 for v in values[first:]), f"not left-padded: {values}"


def is_window(window: list[int], seq: list[int]) -> bool:
    k = len(window)
    return any(seq[s:s + k] == window for s in range(len(seq) - k + 1))


# ----------------------------------------------------------------------------- crop


@settings(max_examples=200, deadline=None)
@given(items=batches(), ratio=ratios, seed=seeds)
def test_crop_is_a_contiguous_window_of_the_right_length(items, ratio, seed):
    before = items.clone()
    out = ops.crop(items, ratio, gen(seed))
    assert torch.equal(items, before), "input modified"
    assert out.shape == items.shape and out.dtype == items.dtype
    for row_in, row_out in zip(items, out):
        seq, kept = real(row_in), real(row_out)
        n = len(seq)
        assert len(kept) == (min(max(1, math.floor(ratio * n)), n))
        assert is_window(kept, seq)
        assert_left_padded(row_out)


# ----------------------------------------------------------------------------- mask


@settings(max_examples=200, deadline=None)
@given(items=batches(), ratio=ratios, seed=seeds, token=st.sampled_from([MASK_TOKEN, 0]))
def test_mask_changes_exactly_floor_ratio_n_items_to_the_token(items, ratio, seed, token):
    before = items.clone()
    out = ops.mask(items, ratio, token, gen(seed))
    assert torch.equal(items, before), "input modified"
    assert out.shape == items.shape
    changed = out != items
    assert (items[changed] != 0).all(), "padding was touched"
    assert (out[changed] == token).all(), "changed to something other than the token"
    if token:
        assert ((out == token) == changed).all()
        assert ((out == 0) == (items == 0)).all(), "padding moved"
    for row_in, row_changed in zip(items, changed):
        n = int((row_in != 0).sum())
        assert int(row_changed.sum()) == math.floor(ratio * n)


# -------------------------------------------------------------------------- reorder


@settings(max_examples=200, deadline=None)
@given(items=batches(), ratio=ratios, seed=seeds)
def test_reorder_permutes_one_contiguous_window_and_nothing_else(items, ratio, seed):
    before = items.clone()
    out = ops.reorder(items, ratio, gen(seed))
    assert torch.equal(items, before), "input modified"
    assert ((out == 0) == (items == 0)).all(), "padding touched or moved"
    for row_in, row_out in zip(items, out):
        seq, new = real(row_in), real(row_out)
        n, k = len(seq), math.floor(ratio * len(seq))
        assert sorted(new) == sorted(seq), "not the same multiset"
        # some window [s, s + k) holds a permutation of itself; everything else is in place
        assert any(
            new[:s] == seq[:s] and new[s + k:] == seq[s + k:] and sorted(new[s:s + k]) == sorted(seq[s:s + k])
            for s in range(n - k + 1)
        ), f"{seq} -> {new} is not a shuffle of one window of {k}"


# ----------------------------------------------------------------------- all operators


OPERATORS = {
    "crop": lambda x, g: ops.crop(x, 0.6, g),
    "mask": lambda x, g: ops.mask(x, 0.3, MASK_TOKEN, g),
    "mask_padding": lambda x, g: ops.mask(x, 0.3, 0, g),
    "reorder": lambda x, g: ops.reorder(x, 0.6, g),
    "random": lambda x, g: ops.apply_operators(x, ops.draw_operators(x.shape[0], g)[0], g, mask_token=MASK_TOKEN),
}


@pytest.mark.parametrize("name", sorted(OPERATORS))
@settings(max_examples=100, deadline=None)
@given(items=batches(), seed=seeds)
def test_input_unchanged_padding_never_becomes_an_item(name, items, seed):
    before = items.clone()
    out = OPERATORS[name](items, gen(seed))
    assert torch.equal(items, before)
    assert out.shape == items.shape
    assert ((out >= 0) & (out <= MASK_TOKEN)).all()
    assert (out[items == 0] == 0).all(), "a padding slot became an item"
    for row_in, row_out in zip(items, out):
        assert set(real(row_out)) <= set(real(row_in)) | {MASK_TOKEN}
        assert len(real(row_out)) <= len(real(row_in))


@pytest.mark.parametrize("name", sorted(OPERATORS))
@settings(max_examples=50, deadline=None)
@given(width=st.integers(1, 12), item=st.integers(1, NUM_ITEMS), rows=st.integers(1, 5), seed=seeds)
def test_length_one_sequences_are_left_as_is(name, width, item, rows, seed):
    items = torch.zeros(rows, width, dtype=torch.long)
    items[:, -1] = item
    assert torch.equal(OPERATORS[name](items, gen(seed)), items)


@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_same_seed_same_output(name):
    items = torch.randint(1, NUM_ITEMS + 1, (16, 10), generator=gen(0))
    items[:, :3] = 0
    assert torch.equal(OPERATORS[name](items, gen(7)), OPERATORS[name](items, gen(7)))


# --------------------------------------------------- every allowed draw is reachable


def _repeat(seq: list[int], rows: int, width: int) -> torch.Tensor:
    items = torch.zeros(rows, width, dtype=torch.long)
    items[:, width - len(seq):] = torch.tensor(seq)
    return items


def test_crop_start_is_uniform_over_0_to_n_minus_keep():
    seq = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]  # keep 6: starts 0..4
    out = ops.crop(_repeat(seq, 5000, 12), 0.6, gen(1))
    starts = torch.tensor([seq.index(int(row[-6])) for row in out])
    counts = torch.bincount(starts, minlength=5)
    assert counts.numel() == 5 and (counts > 800).all(), counts  # ≈ 1000 each


def test_mask_positions_are_uniform():
    seq = list(range(1, 11))  # 3 of 10 masked
    out = ops.mask(_repeat(seq, 5000, 10), 0.3, MASK_TOKEN, gen(2))
    per_slot = (out == MASK_TOKEN).sum(dim=0)
    assert (per_slot > 1300).all() and (per_slot < 1700).all(), per_slot  # ≈ 1500 each


def test_reorder_window_start_and_order_are_uniform():
    seq = list(range(1, 11))  # window of 6, starts 0..4
    out = ops.reorder(_repeat(seq, 5000, 10), 0.6, gen(3))
    moved = out != torch.tensor(seq)
    slots = torch.arange(10).expand_as(moved)
    # window [s, s + 6): a moved slot is ≥ s and < s + 6, so slot 0 moves only if s = 0 can be
    # drawn and slot 9 only if s = 4 can
    first = torch.where(moved, slots, 10).min(1).values
    last = torch.where(moved, slots, -1).max(1).values
    assert 0 in first.tolist() and 9 in last.tolist()
    assert ((last - first)[moved.any(1)] < 6).all()
    # the full window is drawn uniformly: the item at slot 0 of windows starting at 0 is any of 1..6
    at_zero = out[:, 0][out[:, 0] != 1]
    assert set(at_zero.tolist()) == {2, 3, 4, 5, 6}


# -------------------------------------------------------------------------- random


@settings(max_examples=100, deadline=None)
@given(rows=st.integers(1, 64), seed=seeds)
def test_random_never_draws_the_same_operator_for_both_views(rows, seed):
    first, second = ops.draw_operators(rows, gen(seed))
    assert (first != second).all()
    assert ((first >= 0) & (first < 3) & (second >= 0) & (second < 3)).all()


def test_random_pairs_cover_all_six_and_independent_may_repeat():
    first, second = ops.draw_operators(6000, gen(4))
    pairs = torch.bincount(first * 3 + second, minlength=9)
    assert pairs[[0, 4, 8]].sum() == 0
    assert (pairs[[1, 2, 3, 5, 6, 7]] > 800).all(), pairs  # ≈ 1000 each
    first, second = ops.draw_operators(6000, gen(4), independent=True)
    assert (first == second).any() and (first != second).any()


@settings(max_examples=100, deadline=None)
@given(items=batches(min_len=1), seed=seeds)
def test_apply_operators_gives_each_row_its_operator(items, seed):
    op_ids = torch.randint(0, 3, (items.shape[0],), generator=gen(seed))
    out = ops.apply_operators(items, op_ids, gen(seed), mask_token=MASK_TOKEN)
    for op, row_in, row_out in zip(op_ids.tolist(), items, out):
        seq, new = real(row_in), real(row_out)
        n = len(seq)
        if op == ops.CROP:
            assert len(new) == max(1, math.floor(0.6 * n)) and is_window(new, seq)
        elif op == ops.MASK:
            assert int((row_out != row_in).sum()) == math.floor(0.3 * n)
            assert all(b in (a, MASK_TOKEN) for a, b in zip(seq, new))
        else:
            assert sorted(new) == sorted(seq) and MASK_TOKEN not in new


def test_random_augmenter_views_use_different_operators():
    """Through the augmenter: with distinct draws, a row never has two crops, so never two
    views of length < n; with mask ratio 0 and reorder ratio 0 only crop changes anything."""
    ctx = BuildContext(num_items=NUM_ITEMS, max_len=10, hidden_size=8, seed=0)
    aug = RandomAugmenter(RandomOptions(mask_ratio=0.0, reorder_ratio=0.0), ctx)
    items = _repeat(list(range(1, 11)), 500, 10)
    v1, v2 = aug.augment(items, aug.generator(items.device))
    cropped1, cropped2 = (v1 != items).any(1), (v2 != items).any(1)
    assert not (cropped1 & cropped2).any()
    assert cropped1.any() and cropped2.any()
    aug = RandomAugmenter(RandomOptions(mask_ratio=0.0, reorder_ratio=0.0, independent=True), ctx)
    v1, v2 = aug.augment(items, aug.generator(items.device))
    assert ((v1 != items).any(1) & (v2 != items).any(1)).any()


# ----------------------------------------------------------------------- augmenters


@pytest.mark.parametrize("name, options, rows", [
    ("crop", {}, 0), ("reorder", {}, 0), ("mask", {}, 1), ("random", {}, 1),
    ("mask", {"mask_with": "padding"}, 0), ("random", {"mask_with": "padding"}, 0),
])
def test_mask_token_row_only_when_a_mask_can_be_used(name, options, rows):
    import seqcl_cl4srec as plugin

    classes = {"crop": (plugin.CropAugmenter, plugin.CropOptions), "mask": (plugin.MaskAugmenter, plugin.MaskOptions),
               "reorder": (plugin.ReorderAugmenter, plugin.ReorderOptions),
               "random": (plugin.RandomAugmenter, plugin.RandomOptions)}
    cls, opt = classes[name]
    aug = cls(opt(**options), BuildContext(num_items=NUM_ITEMS, max_len=10, hidden_size=8))
    assert aug.extra_rows == rows
    assert aug.mask_token == (MASK_TOKEN if rows else 0)
    chosen = {"cl": {"weight": 0.1, "tau": 0.5, "sim": "cos"}}  # random's: chosen on validation (docs/results.md)
    assert aug.default_terms == (chosen if name == "random" else {"cl": {"weight": 0.1, "tau": 1.0}})
    assert aug.pairs == [("v1", "v2")]


def test_views_are_the_encodings_of_the_augmented_items():
    """One stacked, trimmed encoder call gives exactly what encoding each view alone gives."""
    from seqcl.interfaces import Batch
    from seqcl_cl4srec import MaskAugmenter, MaskOptions
    from seqcl_sasrec import SASRec, SASRecOptions

    ctx = BuildContext(num_items=NUM_ITEMS, max_len=10, hidden_size=8, seed=4)
    aug = MaskAugmenter(MaskOptions(), ctx)
    ctx.extra_rows = aug.extra_rows
    encoder = SASRec(SASRecOptions(hidden_size=8, heads=2, inner_size=16), ctx).eval()
    items = _repeat([3, 1, 4, 1, 5, 9, 2, 6], 6, 10)
    items[0, :-1] = 0
    batch = Batch(items, torch.ones(6, dtype=torch.long), torch.arange(6))
    views = aug(batch, encoder, None, None)
    twin = MaskAugmenter(MaskOptions(), ctx)
    v1, v2 = twin.augment(items, twin.generator(items.device))
    assert (v1 == MASK_TOKEN).any()
    torch.testing.assert_close(views.tensors["v1"], encoder.encode(v1))
    torch.testing.assert_close(views.tensors["v2"], encoder.encode(v2))


def test_bad_ratio_is_a_config_error():
    from seqcl.errors import ConfigError
    from seqcl_cl4srec import CropOptions

    with pytest.raises(ConfigError, match=r"crop.crop_ratio must be in \[0, 1\], got 1.5"):
        CropOptions(crop_ratio=1.5).validate()
