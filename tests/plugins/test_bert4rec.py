"""BERT4Rec plugin: bidirectional encoder with an appended [mask] query, and the cloze objective."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import seqcl.config
import seqcl.training
from seqcl.data.dataset import SequenceData, eval_set, trim_padding
from seqcl.errors import ConfigError, PluginError
from seqcl.evaluation import evaluate
from seqcl.interfaces import Batch, BuildContext
from seqcl.plugins import load_plugins
from seqcl_bert4rec import (BERT4Rec, BERT4RecOptions, ClozeObjective, ClozeOptions, append_targets, cloze_loss,
                            draw_positions, mask_counts)

T, N_ITEMS, D = 10, 25, 16


def make(extra_rows=0, drop=0.0, num_items=N_ITEMS, max_len=T, d=D, seed=0, **kw):
    torch.manual_seed(seed)
    opt = BERT4RecOptions(hidden_size=d, heads=2, inner_size=2 * d, dropout=drop, attn_dropout=drop, **kw)
    enc = BERT4Rec(opt, BuildContext(num_items=num_items, max_len=max_len, hidden_size=d, extra_rows=extra_rows))
    return enc.eval()


def left_padded(lengths, width=T, seed=0, num_items=N_ITEMS):
    g = torch.Generator().manual_seed(seed)
    items = torch.randint(1, num_items + 1, (len(lengths), width), generator=g)
    slot = torch.arange(width)
    return torch.where(slot >= width - torch.tensor(lengths).unsqueeze(1), items, 0)


def hidden(enc, items):
    return enc.contextualize(enc.embed(items), items)


# ------------------------------------------------------------------ registration, options


def test_registered_with_cloze_as_default_objective():
    reg = load_plugins(["seqcl_bert4rec"]).registry
    assert "bert4rec" in reg.names("encoder") and "cloze" in reg.names("objective")
    assert reg.get("encoder", "bert4rec").factory.default_objective == "cloze"
    assert reg.get("objective", "cloze").factory.uses_main_pass is False
    defaults = reg.get("encoder", "bert4rec").default_options()
    assert (defaults["hidden_size"], defaults["layers"], defaults["heads"]) == (64, 2, 2)
    assert reg.get("objective", "cloze").default_options() == {"mask_ratio": 0.2, "last_only": 0.5}


@pytest.mark.parametrize("bad", [dict(mask_ratio=0.0), dict(mask_ratio=1.5), dict(mask_ratio=-0.1),
                                 dict(last_only=-0.1), dict(last_only=1.01)])
def test_cloze_options_validated(bad):
    with pytest.raises(ConfigError, match="cloze\\."):
        ClozeOptions(**bad).validate()
    ClozeOptions(mask_ratio=1.0, last_only=1.0).validate()


def test_encoder_options_validated():
    with pytest.raises(ConfigError, match="divisible"):
        BERT4RecOptions(hidden_size=10, heads=3).validate()
    with pytest.raises(ConfigError, match="dropout"):
        BERT4RecOptions(dropout=1.0).validate()


@pytest.mark.parametrize("extra_rows", [0, 1, 2])
def test_item_table_has_mask_row_last(extra_rows):
    enc = make(extra_rows=extra_rows)
    table = enc.item_table()
    assert table.shape == (N_ITEMS + 1 + extra_rows + 1, D)
    assert enc.mask_token == N_ITEMS + 1 + extra_rows == table.shape[0] - 1
    assert torch.all(table[0] == 0)


# ------------------------------------------------------------------ the encoder


def test_bidirectional_a_later_item_changes_an_earlier_output():
    enc = make()
    items = left_padded([7, 4], seed=1)
    changed = items.clone()
    changed[:, -1] = changed[:, -1] % N_ITEMS + 1  # another item in the last slot
    h1, h2 = hidden(enc, items), hidden(enc, changed)
    for j in (T - 7, T - 3, T - 2):  # earlier real positions of row 0
        assert not torch.allclose(h1[0, j], h2[0, j], atol=1e-4)
    assert not torch.allclose(h1[1, T - 4], h2[1, T - 4], atol=1e-4)


@settings(max_examples=20, deadline=None)
@given(lengths=st.lists(st.integers(1, T), min_size=1, max_size=5), seed=st.integers(0, 100))
def test_padding_never_changes_real_outputs(lengths, seed):
    enc = make()
    items = left_padded(lengths, seed=seed)
    real = items > 0
    h = hidden(enc, items)
    # (a) the padding row's embedding never reaches a real output
    with torch.no_grad():
        enc.item_embedding.weight[0].normal_(std=3.0)
    h_pad = hidden(enc, items)
    assert torch.allclose(h[real], h_pad[real], atol=1e-5)
    with torch.no_grad():
        enc.item_embedding.weight[0].zero_()
    # (b) trimming all-padding leading columns changes no real output (slot positions)
    trimmed = trim_padding(items)
    w = trimmed.shape[1]
    assert torch.allclose(hidden(enc, trimmed)[trimmed > 0], h[:, T - w:][trimmed > 0], atol=1e-5)
    assert torch.allclose(enc.encode(trimmed), enc.encode(items), atol=1e-5)
    # (c) a row's outputs do not depend on the other rows of the batch
    for i in range(len(lengths)):
        assert torch.allclose(enc.encode(items[i:i + 1]), enc.encode(items)[i:i + 1], atol=1e-5)


def test_encode_scores_through_the_appended_mask():
    enc = make(extra_rows=1)
    items = left_padded([3, T, 1, 6], seed=2)
    q = torch.cat([items[:, 1:], torch.full((4, 1), enc.mask_token)], dim=1)  # left by one slot, [mask] last
    assert torch.equal(enc.with_mask_query(items), q)
    expected = enc.head(hidden(enc, q)[:, -1])
    assert torch.allclose(enc.encode(items), expected, atol=1e-6)
    # the [mask] row is what the query reads
    before = enc.encode(items)
    with torch.no_grad():
        enc.item_embedding.weight[enc.mask_token].normal_()
    assert not torch.allclose(enc.encode(items), before, atol=1e-4)
    # a full window drops its oldest item; a shorter one keeps every item
    full, short = items[1:2].clone(), items[0:1].clone()
    dropped = full.clone()
    dropped[0, 0] = 0
    assert torch.allclose(enc.encode(full), enc.encode(dropped), atol=1e-6)
    other = short.clone()
    other[0, T - 3] = other[0, T - 3] % N_ITEMS + 1
    assert not torch.allclose(enc.encode(short), enc.encode(other), atol=1e-4)


def test_head_off_scores_raw_outputs():
    enc = make(output_head=False)
    items = left_padded([4, 9], seed=3)
    q = enc.with_mask_query(items)
    assert torch.allclose(enc.encode(items), hidden(enc, q)[:, -1], atol=1e-6)


def _data(seed=0, users=40, num_items=N_ITEMS):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(4, 15, (users,), generator=g)
    items = torch.randint(1, num_items + 1, (int(lengths.sum()),), generator=g)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(lengths, 0)])
    return SequenceData(items, offsets, num_items)


def test_mask_and_extra_rows_never_ranked_or_scored():
    """Rows after num_items ([mask], the augmenter's rows) are out of every score: making them
    the best match of every query changes neither the ranks nor the cloze loss."""
    enc = make(extra_rows=1)
    data = _data()
    split = eval_set(data, "test")
    base = evaluate(enc, split, N_ITEMS, T, ks=(1, 5))
    batch = Batch(left_padded([2, 5, T, 7], seed=4), torch.tensor([3, 9, 1, 25]), torch.arange(4))
    seq = append_targets(batch.items, batch.targets, T)
    chosen = draw_positions(seq, 0.4, 0.25, torch.Generator().manual_seed(0))
    loss = cloze_loss(enc, seq, chosen, N_ITEMS)

    true_table = enc.item_table()

    def poisoned():  # the scored table: extra rows far along every representation's direction
        t = true_table.detach().clone()
        t[N_ITEMS + 1:] = 1e4 * enc.encode(split_windows()).mean(0)
        return t

    def split_windows():
        return trim_padding(split.windows(torch.arange(len(split)), T))

    with torch.no_grad():
        table = poisoned()
    enc.item_table = lambda: table  # scoring reads item_table(); the input embedding does not
    assert torch.equal(evaluate(enc, split, N_ITEMS, T, ks=(1, 5)).ranks, base.ranks)
    assert torch.allclose(cloze_loss(enc, seq, chosen, N_ITEMS), loss)


# ------------------------------------------------------------------ the cloze objective


def brute_force_cloze(enc, seq, chosen, num_items):
    """Per masked position: mask the row, run it alone, softmax over items 1..num_items, one by one."""
    table = enc.item_table()
    losses = []
    for b in range(seq.shape[0]):
        row = seq[b:b + 1].clone()
        row[0, chosen[b]] = enc.mask_token
        out = enc.contextualize(enc.embed(row), row)[0]
        for p in range(seq.shape[1]):
            if not chosen[b, p]:
                continue
            h = enc.head(out[p])
            logits = torch.stack([h @ table[i] for i in range(1, num_items + 1)])
            label = int(seq[b, p])
            assert 1 <= label <= num_items
            losses.append(torch.logsumexp(logits, 0) - logits[label - 1])
    return torch.stack(losses).mean(), len(losses)


def test_cloze_loss_brute_force_tiny_case():
    enc = make(num_items=6, max_len=5, d=8)
    seq = torch.tensor([[0, 0, 2, 5, 1], [3, 4, 6, 1, 2]])
    chosen = torch.tensor([[False, False, True, False, True], [True, False, False, True, False]])
    ref, m = brute_force_cloze(enc, seq, chosen, 6)
    assert m == 4
    assert torch.allclose(cloze_loss(enc, seq, chosen, 6), ref, atol=1e-5)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lengths=st.lists(st.integers(1, 8), min_size=1, max_size=5),
    width=st.integers(1, 8),
    max_len=st.integers(2, 9),
    num_items=st.integers(2, 12),
    extra_rows=st.integers(0, 2),
    mask_ratio=st.floats(0.05, 1.0),
    last_only=st.sampled_from([0.0, 0.3, 1.0]),
    seed=st.integers(0, 2**16),
)
def test_cloze_property(lengths, width, max_len, num_items, extra_rows, mask_ratio, last_only, seed):
    """The vectorised loss equals the per-position loop; gradients are finite; counts are exact."""
    width = min(width, max_len)
    lengths = [min(n, width) for n in lengths]
    enc = make(extra_rows=extra_rows, num_items=num_items, max_len=max_len, d=8, seed=seed % 7)
    items = left_padded(lengths, width=width, seed=seed, num_items=num_items)
    targets = torch.randint(1, num_items + 1, (len(lengths),), generator=torch.Generator().manual_seed(seed))
    seq = append_targets(items, targets, max_len)
    assert seq.shape[1] == min(width + 1, max_len) and torch.equal(seq[:, -1], targets)

    g = torch.Generator().manual_seed(seed)
    last = torch.rand(len(lengths), generator=torch.Generator().manual_seed(seed)) < last_only
    chosen = draw_positions(seq, mask_ratio, last_only, g)
    for b in range(len(lengths)):
        n = int((seq[b] > 0).sum())
        assert not bool((chosen[b] & (seq[b] == 0)).any())  # only real positions
        if last[b]:
            assert chosen[b].nonzero().flatten().tolist() == [seq.shape[1] - 1]
        else:
            assert int(chosen[b].sum()) == max(1, min(n, math.floor(mask_ratio * n + 0.5)))
    assert torch.equal(mask_counts(seq > 0, mask_ratio),
                       torch.tensor([max(1, min(int(n), math.floor(mask_ratio * int(n) + 0.5)))
                                     for n in (seq > 0).sum(1)]))

    loss = cloze_loss(enc, seq, chosen, num_items)
    ref, m = brute_force_cloze(enc, seq, chosen, num_items)
    assert m == int(chosen.sum()) >= len(lengths)
    assert torch.allclose(loss, ref, atol=1e-5, rtol=1e-5)
    loss.backward()
    grads = [p.grad for p in enc.parameters() if p.grad is not None]
    assert grads and all(bool(torch.isfinite(gr).all()) for gr in grads)
    assert bool(enc.item_embedding.weight.grad[enc.mask_token].abs().sum() > 0)  # [mask] is an input
    scored = torch.zeros(enc.item_table().shape[0], dtype=torch.bool)
    scored[1:num_items + 1] = True
    extra = ~scored
    extra[0] = extra[enc.mask_token] = False
    assert bool((enc.item_embedding.weight.grad[extra] == 0).all())  # augmenter rows: neither scored nor input


def test_objective_draws_from_its_own_checkpointed_stream():
    enc = make(extra_rows=1)
    ctx = BuildContext(num_items=N_ITEMS, max_len=T, hidden_size=D, extra_rows=1, seed=3)
    obj = ClozeObjective(ClozeOptions(), ctx)
    batch = Batch(left_padded([2, 5, T, 7, 1], seed=5), torch.tensor([3, 9, 1, 25, 4]), torch.arange(5))
    items_before = batch.items.clone()
    obj(enc, batch, None)  # advance the stream
    state = obj.state_dict()
    global_rng = torch.random.get_rng_state()
    a = obj(enc, batch, None)
    assert torch.equal(torch.random.get_rng_state(), global_rng)  # eval mode: no global draw at all
    assert torch.equal(batch.items, items_before)
    resumed = ClozeObjective(ClozeOptions(), ctx)
    resumed.load_state_dict(state)
    assert torch.equal(resumed(enc, batch, None), a)
    # the same draw, spelled out
    g = torch.Generator().set_state(state["_extra_state"]["generators"]["cpu"])
    seq = append_targets(batch.items, batch.targets, T)
    assert torch.allclose(a, cloze_loss(enc, seq, draw_positions(seq, 0.2, 0.5, g, T), N_ITEMS))


def test_trimmed_cloze_step_equals_full_width_step():
    """Trimming all-padding columns is exact for the cloze loss too (dropout off): the same
    positions are masked (keys are drawn per slot) and losses and gradients agree."""
    enc = make(extra_rows=1)
    ctx = BuildContext(num_items=N_ITEMS, max_len=T, hidden_size=D, extra_rows=1, seed=4)
    full = Batch(left_padded([2, 5, 6, 1, 3], seed=6), torch.tensor([3, 9, 1, 25, 4]), torch.arange(5))
    trimmed = Batch(trim_padding(full.items), full.targets, full.sample_ids)
    assert trimmed.items.shape[1] == 6
    results = []
    for batch in (full, trimmed):
        enc.zero_grad()
        loss = ClozeObjective(ClozeOptions(mask_ratio=0.5, last_only=0.3), ctx)(enc, batch, None)
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in enc.parameters() if p.grad is not None]))
    (l1, g1), (l2, g2) = results
    assert torch.allclose(l1, l2, rtol=1e-5, atol=1e-6)
    assert len(g1) == len(g2) and all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(g1, g2))


# ------------------------------------------------------------------ packed layout (the fast path)


def both_layouts(enc, fn):
    out = {}
    for mode in ("padded", "packed"):
        enc.layout_mode = mode
        out[mode] = fn()
    enc.layout_mode = "auto"
    return out["packed"], out["padded"]


@settings(max_examples=25, deadline=None)
@given(lengths=st.lists(st.integers(1, T), min_size=1, max_size=9), mask_ratio=st.floats(0.05, 1.0),
       last_only=st.floats(0.0, 1.0), seed=st.integers(0, 2**16))
def test_packed_layout_equals_padded_for_cloze_and_encode(lengths, mask_ratio, last_only, seed):
    """The cloze pass and ``encode`` on the packed layout (bidirectional buckets) give the padded
    reference's outputs, for every mix of lengths and masked positions."""
    enc = make(extra_rows=1, seed=seed % 7)
    items = left_padded(lengths, seed=seed)
    chosen = draw_positions(items, mask_ratio, last_only, torch.Generator().manual_seed(seed), T)
    inputs = items.masked_fill(chosen, enc.mask_token)
    packed, padded = both_layouts(enc, lambda: enc.outputs_at(inputs, chosen))
    assert packed.shape == (int(chosen.sum()), D) and torch.allclose(packed, padded, atol=1e-5)
    trimmed = trim_padding(items)
    for x in (items, trimmed):
        packed, padded = both_layouts(enc, lambda: enc.encode(x))
        assert torch.allclose(packed, padded, atol=1e-5)


def test_packed_cloze_gradients_match_padded_in_float64():
    enc = make(extra_rows=1).double()
    seq = left_padded([1, 2, 5, T, 7, 7, 3], seed=3)
    chosen = draw_positions(seq, 0.4, 0.3, torch.Generator().manual_seed(2), T)

    def grads():
        enc.zero_grad()
        cloze_loss(enc, seq, chosen, N_ITEMS).backward()
        return [p.grad.clone() for p in enc.parameters() if p.grad is not None]

    packed, padded = both_layouts(enc, grads)
    assert len(packed) == len(padded) > 0
    for a, b in zip(packed, padded):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)


def test_packed_layout_only_on_cpu_in_auto_and_never_for_leading_padding():
    enc = make()
    items = left_padded([3, 5])
    assert enc.packs(items) and not enc.packs(torch.empty(2, T, device="meta"))
    enc.layout_mode = "padded"
    assert not enc.packs(items)
    enc.layout_mode = "packed"
    where = torch.zeros_like(items, dtype=torch.bool)
    where[0, 0] = True  # leading padding of row 0: not computed on the packed layout
    with pytest.raises(ValueError, match="leading padding"):
        enc.outputs_at(items, where)
    fresh = make()
    fresh.request_full_width()  # a traced export: the layout without host-side shape work
    assert not fresh.packs(items)


def test_cloze_refuses_an_encoder_without_mask():
    from seqcl_sasrec.encoder import SASRec, SASRecOptions

    ctx = BuildContext(num_items=N_ITEMS, max_len=T, hidden_size=D)
    sas = SASRec(SASRecOptions(hidden_size=D, inner_size=32), ctx)
    batch = Batch(left_padded([2, 5]), torch.tensor([1, 2]), torch.arange(2))
    with pytest.raises(PluginError, match="bert4rec"):
        ClozeObjective(ClozeOptions(), ctx)(sas, batch, None)


def test_cloze_learns_a_deterministic_successor():
    """Sanity: on sequences where the next item is always ``item + 1 (mod N)``, 150 cloze
    steps make the [mask] query rank the true next item first."""
    torch.manual_seed(0)
    n_items, max_len = 12, 6
    enc = make(num_items=n_items, max_len=max_len, d=16).train()
    obj = ClozeObjective(ClozeOptions(mask_ratio=0.3), BuildContext(n_items, max_len, 16, seed=0))
    opt = torch.optim.Adam(enc.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(1)

    def sample(b):
        start = torch.randint(0, n_items, (b, 1), generator=g)
        seqs = (start + torch.arange(max_len + 1)) % n_items + 1
        lengths = torch.randint(1, max_len + 1, (b, 1), generator=g)
        items = torch.where(torch.arange(max_len) >= max_len - lengths, seqs[:, :-1], 0)
        return Batch(items, seqs[:, -1], torch.arange(b))

    for _ in range(150):
        loss = obj(enc, sample(64), None)
        opt.zero_grad()
        loss.backward()
        opt.step()
    enc.eval()
    test = sample(200)
    with torch.no_grad():
        scores = enc.encode(test.items) @ enc.item_table()[1:n_items + 1].T
    assert float((scores.argmax(1) + 1 == test.targets).float().mean()) > 0.9


# ------------------------------------------------------------------ augmenters


@pytest.mark.parametrize("name", ["none", "crop", "mask", "reorder", "random", "dropout"])
def test_compatible_augmenters_accepted(name):
    BERT4Rec.check_augmenter(name)


def test_incompatible_augmenters_refused_in_one_line():
    from seqcl_duorec import DuoRecOptions

    with pytest.raises(ConfigError, match="aclsrec") as info:
        BERT4Rec.check_augmenter("aclsrec")
    assert "\n" not in str(info.value)
    for mode in ("unsupervised", "supervised"):
        with pytest.raises(ConfigError, match=f"mode {mode}"):
            BERT4Rec.check_augmenter("dropout", DuoRecOptions(mode=mode))
    BERT4Rec.check_augmenter("dropout", DuoRecOptions(mode="duorec"))


@pytest.mark.parametrize("aug", ["crop", "mask", "random"])
def test_cl4srec_views_are_mask_queries(aug):
    """CL4SRec's views go through ``encode``: (B, d), finite, and the mask augmenter's token
    (row num_items + 1) is not BERT4Rec's [mask] (the last row)."""
    from seqcl_cl4srec import CropAugmenter, CropOptions, MaskAugmenter, MaskOptions, RandomAugmenter, RandomOptions

    cls, opts = {"crop": (CropAugmenter, CropOptions()), "mask": (MaskAugmenter, MaskOptions()),
                 "random": (RandomAugmenter, RandomOptions())}[aug]
    ctx = BuildContext(num_items=N_ITEMS, max_len=T, hidden_size=D, seed=0)
    augmenter = cls(opts, ctx)
    enc = make(extra_rows=augmenter.extra_rows).train()
    if aug != "crop":
        assert augmenter.mask_token == N_ITEMS + 1 != enc.mask_token == N_ITEMS + 2
    batch = Batch(left_padded([1, 4, T, 6]), torch.tensor([1, 2, 3, 4]), torch.arange(4))
    views = augmenter(batch, enc, None, None)
    assert all(v.shape == (4, D) and bool(torch.isfinite(v).all()) for v in views.tensors.values())


# ------------------------------------------------------------------ end to end


def test_train_bert4rec_end_to_end(tmp_path, tiny_file):
    plugins = load_plugins(["seqcl_bert4rec"])
    sets = ["bert4rec.hidden_size=16", "bert4rec.inner_size=32", "data.max_len=20", "train.batch_size=128",
            "train.epochs=2"]
    pairs = [seqcl.config.parse_assignment(a) for a in sets]
    pairs += [("encoder", "bert4rec"), ("dataset", str(tiny_file)), ("run.dir", str(tmp_path / "runs"))]
    resolved = seqcl.config.resolve(plugins.registry, overrides=pairs)
    assert resolved.objective == "cloze"  # the encoder's default objective
    a = seqcl.training.train(resolved, plugins, log=lambda m: None)
    b = seqcl.training.train(resolved, plugins, log=lambda m: None)
    assert a.valid == b.valid and a.test == b.test  # the masking stream is seeded
    assert all(0.0 <= v <= 1.0 for v in a.test.values())
    last = torch.load(a.run_dir / "last.pt", weights_only=True)
    assert "generators" in last["model"]["objective"]["_extra_state"]  # the masking stream is checkpointed
    with pytest.raises(ConfigError, match="aclsrec"):
        seqcl.config.resolve(plugins.registry, overrides=pairs + [("augmenter", "aclsrec")])
