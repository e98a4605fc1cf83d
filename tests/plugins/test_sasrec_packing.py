"""SASRec's packed layout (per-token layers on active tokens, length-bucketed attention)."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seqcl.interfaces import Batch, BuildContext, Encoder
from seqcl.training import _group_by_length, iterate_batches
from seqcl_sasrec.encoder import SASRec, SASRecOptions, gather_rows, packed_layout, scatter_rows

T, N_ITEMS, D = 12, 30, 16


def make(layout="packed", drop=0.0, positions="slot"):
    torch.manual_seed(0)
    opt = SASRecOptions(hidden_size=D, heads=2, inner_size=32, dropout=drop, attn_dropout=drop,
                        positions=positions, layout=layout)
    return SASRec(opt, BuildContext(num_items=N_ITEMS, max_len=T, hidden_size=D))


def left_padded(lengths, seed=0, width=T):
    g = torch.Generator().manual_seed(seed)
    items = torch.randint(1, N_ITEMS + 1, (len(lengths), width), generator=g)
    return torch.where(torch.arange(width) >= width - torch.tensor(lengths).unsqueeze(1), items, 0)


def both_layouts(enc, items, fn):
    out = {}
    for layout in ("padded", "packed"):
        enc.layout_mode = layout
        out[layout] = fn(enc, items)
    return out["packed"], out["padded"]


def test_layout_maps_are_consistent():
    items = left_padded([1, 5, 2, 12, 3, 3, 8])
    items[2, -1] = 0  # interior / trailing padding (ICLRec's mask with 0) stays active after the first item
    lay = packed_layout(items)
    active = (items > 0).cummax(dim=1).values
    active[:, -1] = True
    assert lay.n == int(active.sum())
    assert torch.equal(torch.sort(lay.index).values, torch.nonzero(active.view(-1)).view(-1))
    assert sum(b.b for b in lay.buckets) == items.shape[0]
    assert sum(b.b * b.w for b in lay.buckets) == lay.bucket_rows
    assert len(set(lay.from_buckets.tolist())) == lay.n and int(lay.from_buckets.max()) < lay.bucket_rows
    # in the bucket layout each row is right-aligned: its last token is the last column of its bucket row
    ends = torch.tensor([bk.offset + (i + 1) * bk.w - 1 for bk in lay.buckets for i in range(bk.b)])
    assert torch.equal(lay.from_buckets[lay.last], ends)
    # rows sorted by length; each row's last token is its slot T-1
    assert torch.equal(lay.index[lay.last] % T, torch.full((items.shape[0],), T - 1))
    assert torch.equal(lay.rows[lay.inverse], torch.arange(items.shape[0]))
    x = torch.randn(lay.n, 3)
    assert torch.equal(lay.from_bucket_layout(lay.to_buckets(x)), x)
    assert torch.equal(lay.pack(lay.scatter(x)), x)
    assert torch.all(lay.scatter(x).view(-1, 3)[~active.view(-1)] == 0)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, T), min_size=1, max_size=12), st.sampled_from(["slot", "from_oldest"]),
       st.booleans(), st.integers(0, 2**16))
def test_packed_equals_padded_on_active_slots(lengths, positions, interior_zero, seed):
    enc = make(positions=positions).train()  # train mode, dropout 0: the explicit attention path
    items = left_padded(lengths, seed)
    row = seed % len(lengths)
    if interior_zero and lengths[row] >= 2:  # ICLRec's mask with 0: a zero after the first item, maybe the last
        items[row, T - 1 - seed % (lengths[row] - 1)] = 0
    packed, padded = both_layouts(enc, items, lambda e, x: e.contextualize(e.embed(x), x))
    active = (items > 0).cummax(dim=1).values
    assert torch.allclose(packed[active], padded[active], atol=1e-5)
    assert torch.all(packed[~active] == 0) and torch.isfinite(packed).all()
    p_last, d_last = both_layouts(enc, items, lambda e, x: e.encode(x))
    assert torch.allclose(p_last, d_last, atol=1e-5)
    enc.eval()  # SDPA path
    p_eval, d_eval = both_layouts(enc, items, lambda e, x: e.encode(x))
    assert torch.allclose(p_eval, d_eval, atol=1e-5)


def test_encode_last_slot_only_matches_contextualize():
    enc = make().eval()
    items = left_padded([3, 12, 1, 7])
    assert torch.allclose(enc.encode(items), Encoder.encode(enc, items), atol=1e-6)


def test_dense_h_in_from_another_source_is_accepted():
    """ACLSRec hands contextualize a transformed (B, W, d) H_in; only active slots are read."""
    enc = make()
    items = left_padded([2, 9, 4])
    h = torch.randn(3, T, D)
    packed, padded = both_layouts(enc, items, lambda e, x: e.contextualize(h, x))
    active = items > 0
    assert torch.allclose(packed[active], padded[active], atol=1e-5)


def test_all_padding_row_is_finite():
    enc = make(drop=0.5).train()
    items = left_padded([0, 3, 1])
    out = enc.contextualize(enc.embed(items), items)
    assert torch.isfinite(out).all() and torch.isfinite(enc.encode(items)).all()


def test_gradients_match_padded_layout_in_float64():
    enc = make().double()
    items = left_padded([1, 2, 5, 12, 7, 7, 3])
    w = torch.randn(7, D, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    grads = {}
    for layout in ("padded", "packed"):
        enc.layout_mode = layout
        enc.zero_grad()
        h = enc.embed(items)
        (enc.contextualize(h, items)[:, -1] * w).sum().backward()
        grads[layout] = [p.grad.clone() for p in enc.parameters()]
    for a, b in zip(grads["packed"], grads["padded"]):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)


def test_gather_and_scatter_rows_have_copy_backwards():
    x = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    index = torch.tensor([4, 0, 2, 5])  # injective; rows 1 and 3 are not taken
    assert torch.autograd.gradcheck(lambda t: gather_rows(t, index), (x,))
    assert torch.autograd.gradcheck(lambda t: scatter_rows(t, index, 9), (x[:4].detach().requires_grad_(),))
    y = scatter_rows(x[:4], index, 9)
    assert torch.equal(y[index], x[:4]) and torch.all(y[[1, 3, 6, 7, 8]] == 0)


def test_layout_is_reused_for_the_same_items_and_rebuilt_after_in_place_change():
    enc = make()
    items = left_padded([2, 5])
    first = enc.layout(items)
    assert enc.layout(items) is first
    items[0, -3] = 1  # in place: the row got longer
    assert enc.layout(items) is not first and enc.layout(items).n == first.n + 1


def test_auto_layout_packs_on_cpu_only():
    enc = make(layout="auto")
    assert enc.packs(torch.ones(1, 2, dtype=torch.long))
    assert not enc.packs(torch.ones(1, 2, dtype=torch.long, device="meta"))
    enc.dense_layout = True
    assert not enc.packs(torch.ones(1, 2, dtype=torch.long))


class _Samples:
    def __init__(self, lengths):
        self.lengths_ = torch.tensor(lengths)
        self.starts = torch.zeros(len(lengths), dtype=torch.long)
        self.ends = self.lengths_.clone()
        self.targets = torch.ones(len(lengths), dtype=torch.long)
        self.flat = torch.arange(1, 100)

    def __len__(self):
        return len(self.lengths_)

    def windows(self, ids, max_len):
        return left_padded(self.lengths_[ids].clamp(max=max_len).tolist(), width=max_len)


def test_group_by_length_is_a_permutation_with_narrow_batches():
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, T + 1, (1000,), generator=g).tolist()
    samples = _Samples(lengths)
    order = _group_by_length(torch.randperm(1000, generator=g), samples, 32, T, g)
    assert torch.equal(torch.sort(order).values, torch.arange(1000))
    grouped = list(iterate_batches(samples, 32, T, torch.Generator().manual_seed(1), torch.device("cpu"),
                                   group_by_length=True))
    plain = list(iterate_batches(samples, 32, T, torch.Generator().manual_seed(1), torch.device("cpu")))
    assert all(isinstance(b, Batch) for b in grouped) and sum(b.size for b in grouped) == 1000
    mean_width = lambda bs: sum(b.items.shape[1] for b in bs) / len(bs)  # noqa: E731
    assert mean_width(grouped) < 0.75 * mean_width(plain)  # uniform lengths: ~(mean + 1) vs ~T
