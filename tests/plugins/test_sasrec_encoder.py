"""SASRec encoder (SPEC §2): finite outputs at padding, causality, slot positions, trimming."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seqcl.data.dataset import trim_padding
from seqcl.interfaces import BuildContext
from seqcl_sasrec.encoder import SASRec, SASRecOptions, attention, dropout

T, N_ITEMS = 12, 30


def make(positions="slot", drop=0.0, **kw):
    torch.manual_seed(0)
    opt = SASRecOptions(hidden_size=16, heads=2, inner_size=32, dropout=drop, attn_dropout=drop,
                        positions=positions, **kw)
    return SASRec(opt, BuildContext(num_items=N_ITEMS, max_len=T, hidden_size=16, extra_rows=1))


def left_padded(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    items = torch.randint(1, N_ITEMS + 1, (len(lengths), T), generator=g)
    slot = torch.arange(T)
    return torch.where(slot >= T - torch.tensor(lengths).unsqueeze(1), items, 0)


def test_item_table_has_padding_items_and_extra_rows():
    enc = make()
    assert enc.item_table().shape == (N_ITEMS + 2, 16)
    assert torch.all(enc.item_table()[0] == 0)


def test_init_is_normal_002():
    enc = make()
    w = enc.blocks[0].ff1.weight.detach()
    assert abs(float(w.std()) - 0.02) < 0.004 and float(w.mean().abs()) < 0.005
    assert torch.all(enc.blocks[0].ff1.bias == 0)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 3), min_size=1, max_size=6), st.booleans())
def test_finite_for_very_short_sequences(lengths, training):
    enc = make(drop=0.5)
    enc.train(training)
    items = left_padded(lengths)
    out = enc.contextualize(enc.embed(items), items)
    assert torch.isfinite(out).all()  # padding query rows too (no -inf softmax NaN)
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in enc.parameters() if p.grad is not None)


def test_causal_and_padding_ignored():
    enc = make().eval()
    items = left_padded([8, 5])
    base = enc.contextualize(enc.embed(items), items)
    changed = items.clone()
    changed[:, -1] = (changed[:, -1] % N_ITEMS) + 1  # change only the last item
    out = enc.contextualize(enc.embed(changed), changed)
    assert torch.allclose(out[:, :-1][items[:, :-1] > 0], base[:, :-1][items[:, :-1] > 0], atol=1e-6)
    assert not torch.allclose(out[:, -1], base[:, -1])
    # padding embeddings never reach real rows: perturb row 0 of the table
    with torch.no_grad():
        enc.item_embedding.weight[0] += 5.0
    again = enc.contextualize(enc.embed(items), items)
    real = items > 0
    assert torch.allclose(again[real], base[real], atol=1e-5)


def test_slot_positions_last_item_gets_last_position():
    enc = make().eval()
    items = left_padded([3])
    assert enc.position_ids(items)[0, -1] == T - 1
    trimmed = trim_padding(items)
    assert trimmed.shape[1] == 3 and enc.position_ids(trimmed)[0].tolist() == [T - 3, T - 2, T - 1]


def test_from_oldest_positions():
    enc = make(positions="from_oldest").eval()
    items = left_padded([3])
    assert enc.position_ids(items)[0, -3:].tolist() == [0, 1, 2]
    assert enc.position_ids(trim_padding(items))[0].tolist() == [0, 1, 2]


@settings(max_examples=15, deadline=None)
@given(st.lists(st.integers(1, T), min_size=1, max_size=8), st.sampled_from(["slot", "from_oldest"]))
def test_trimming_is_exact(lengths, positions):
    enc = make(positions=positions).eval()
    items = left_padded(lengths)
    full = enc.encode(items)
    trimmed = enc.encode(trim_padding(items))
    assert torch.allclose(full, trimmed, atol=1e-5, rtol=1e-5)


def test_attention_matches_sdpa_without_dropout_and_dropout_is_unbiased():
    torch.manual_seed(0)
    q, k, v = (torch.randn(3, 2, 7, 4) for _ in range(3))
    mask = torch.zeros(3, 1, 7, 7)
    mask[..., 3:] = -1e9
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert torch.allclose(attention(q, k, v, mask, 0.5, training=False), ref, atol=1e-6)
    x = torch.ones(200_000)
    y = dropout(x, 0.3, training=True)
    assert abs(float((y == 0).float().mean()) - 0.3) < 0.01
    assert abs(float(y.mean()) - 1.0) < 0.02
    assert torch.equal(dropout(x, 0.3, training=False), x)


def test_off_cpu_a_differentiated_attention_avoids_the_fused_kernels(monkeypatch):
    """CUDA's memory-efficient SDPA backward returns NaN for some masks (seen on an H200): off CPU
    (here the meta device) a pass that needs gradients takes the explicit form, a no-grad pass
    (evaluation) keeps SDPA; CPU keeps SDPA without dropout."""
    import seqcl_sasrec.attention as attention_module

    calls: list[tuple[str, float]] = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(q, *args, **kwargs):
        calls.append((q.device.type, kwargs.get("dropout_p", 0.0)))
        return real(q, *args, **kwargs)

    monkeypatch.setattr(attention_module.F, "scaled_dot_product_attention", spy)
    q, k, v = (torch.randn(2, 2, 5, 4, device="meta", requires_grad=True) for _ in range(3))
    mask = torch.zeros(2, 1, 5, 5, device="meta")
    for p, training in [(0.0, True), (0.5, True), (0.5, False)]:
        assert attention(q, k, v, mask, p, training).shape == (2, 2, 5, 4)
    assert calls == []
    with torch.no_grad():
        attention(q, k, v, mask, 0.5, training=True)
        attention(q, k, v, mask, 0.5, training=False)
    assert calls == [("meta", 0.5), ("meta", 0.0)]
    cpu = [torch.randn(2, 2, 5, 4, requires_grad=True) for _ in range(3)]
    attention(*cpu, torch.zeros(2, 1, 5, 5), 0.0, training=True)
    assert calls[-1] == ("cpu", 0.0)


def test_dropout_is_the_uniform_draw_formula():
    """Same draw, same values as the plain form ``x · (U ≥ p) / (1 − p)`` (the in-place mask is exact)."""
    x = torch.randn(64, 33)
    torch.manual_seed(5)
    got = dropout(x, 0.4, training=True)
    torch.manual_seed(5)
    ref = x * (torch.rand_like(x) >= 0.4).to(x.dtype) / (1 - 0.4)
    assert torch.allclose(got, ref, rtol=1e-6, atol=0) and bool((got == 0).any())


def test_packed_h_in_is_reused_only_while_unmodified():
    """contextualize(embed(x)) reuses embed's packed tokens (no (B, W, d) gradient); a copy or an
    in-place change of H_in goes through the plain pack, and each gives its own correct result."""
    enc = make(layout="packed")
    items = left_padded([3, 12, 1, 7])
    h_in = enc.embed(items)
    reused = enc.contextualize(h_in, items)
    plain = enc.contextualize(h_in.clone(), items)
    assert torch.allclose(reused, plain, atol=1e-6)
    with torch.no_grad():
        h_in.add_(torch.randn(h_in.shape, generator=torch.Generator().manual_seed(1)))
    changed = enc.contextualize(h_in, items)
    assert torch.allclose(changed, enc.contextualize(h_in.clone(), items), atol=1e-6)
    assert not torch.allclose(changed[:, -1], reused[:, -1], atol=1e-3)
