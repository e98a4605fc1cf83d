"""CFIT4SRec: the frequency filters against loop references (Hypothesis), the six flattened views,
the pre-dropout embedding they start from, and training on tiny data."""

from __future__ import annotations

import cmath
import math

import copy
import types

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from hypothesis import given
from hypothesis import strategies as st

from seqcl.config import parse_assignment, resolve
from seqcl.errors import ConfigError
from seqcl.interfaces import Batch, BuildContext, Views
from seqcl.plugins import load_plugins
from seqcl.training import resume, train
from seqcl_cfit4srec import (CFIT4SRecAugmenter, CFIT4SRecOptions, band_stop, band_stops, frequency_filter,
                             high_pass, low_pass)
from seqcl_cfit4srec.filters import filter_unshifted, unshift
from seqcl_sasrec.encoder import SASRec, SASRecOptions

from conftest import TINY
from formula_refs import FAST, _gen
from test_exactness import assert_close, build, fixed_batch, loss_and_grads
from test_resume import interrupted_run, records

# --------------------------------------------------------------------------- references (loops)


def ref_dist(t, d, i, j):
    """The code's grid: x = column − cols // 2, y = row − rows // 2."""
    return math.sqrt((j - d // 2) ** 2 + (i - t // 2) ** 2)


def ref_mask(kind, t, d, value, width=2.0):
    out = torch.zeros(t, d, dtype=torch.float64)
    for i in range(t):
        for j in range(d):
            r = ref_dist(t, d, i, j)
            if kind == "low":
                out[i, j] = 1.0 if r <= value else 0.0
            elif kind == "high":
                out[i, j] = 0.0 if r < value else 1.0
            else:  # band-stop, createBSAilter
                if min(t, d) // 2 == value:
                    out[i, j] = 1.0 if r < value - width / 2 else 0.0
                else:
                    out[i, j] = 1.0 if (r > value + width / 2 or r < value - width / 2) else 0.0
    return out


def ref_filter(x, mask):
    """|ifft2(ifftshift(fftshift(fft2(x)) ⊙ M))| with explicit DFT sums; fftshift moves index k to
    (k + n // 2) mod n, so the unshifted coefficient (u, v) meets M[(u + T//2) % T, (v + d//2) % d]."""
    t, d = x.shape
    out = torch.zeros(t, d, dtype=torch.float64)
    coef = {}
    for u in range(t):
        for v in range(d):
            s = sum(x[a, b].item() * cmath.exp(-2j * math.pi * (u * a / t + v * b / d))
                    for a in range(t) for b in range(d))
            coef[u, v] = s * mask[(u + t // 2) % t, (v + d // 2) % d].item()
    for a in range(t):
        for b in range(d):
            s = sum(coef[u, v] * cmath.exp(2j * math.pi * (u * a / t + v * b / d)) for u in range(t) for v in range(d))
            out[a, b] = abs(s / (t * d))
    return out


sizes = st.tuples(st.integers(1, 7), st.integers(1, 7))


@FAST
@given(size=sizes, r=st.floats(0.0, 5.0), centre=st.integers(0, 4))
def test_masks_match_the_codes_definitions(size, r, centre):
    t, d = size
    assert torch.equal(low_pass(t, d, r).double(), ref_mask("low", t, d, r))
    assert torch.equal(high_pass(t, d, r).double(), ref_mask("high", t, d, r))
    c = min(centre, min(t, d) // 2)
    assert torch.equal(band_stop(t, d, c).double(), ref_mask("band", t, d, c))
    assert len(band_stops(t, d)) == min(t, d) // 2 + 1


@FAST
@given(size=sizes, seed=st.integers(0, 2**31 - 1), kind=st.sampled_from(["low", "high", "band", "random"]))
def test_frequency_filter_matches_explicit_dft(size, seed, kind):
    t, d = size
    g = _gen(seed)
    x = torch.randn(t, d, generator=g, dtype=torch.float64)
    if kind == "random":
        mask = (torch.rand(t, d, generator=g) < 0.5).double()
    else:
        mask = ref_mask(kind, t, d, min(t, d) // 2 if kind == "band" else max(t, d) / 4)
    torch.testing.assert_close(frequency_filter(x, mask), ref_filter(x, mask), rtol=1e-9, atol=1e-9)


@FAST
@given(size=sizes, seed=st.integers(0, 2**31 - 1), r=st.floats(0.0, 5.0))
def test_filter_invariances(size, seed, r):
    t, d = size
    x = torch.randn(3, t, d, generator=_gen(seed), dtype=torch.float64)
    torch.testing.assert_close(frequency_filter(x, torch.ones(t, d)), x.abs())  # the all-pass mask: |x|
    assert float(frequency_filter(x, torch.zeros(t, d)).abs().max()) == 0.0
    both = low_pass(t, d, r) + high_pass(t, d, r)
    assert set(both.unique().tolist()) <= {1.0, 2.0}  # complementary, overlapping only on the ring radius == r
    per_row = torch.stack([frequency_filter(row, low_pass(t, d, r).double()) for row in x])
    torch.testing.assert_close(frequency_filter(x, low_pass(t, d, r).double()), per_row)  # rows independent
    assert (frequency_filter(x, high_pass(t, d, r).double()) >= 0).all()


@FAST
@given(size=sizes, seed=st.integers(0, 2**31 - 1), k=st.integers(1, 4))
def test_unshifted_filter_equals_the_formula(size, seed, k):
    """The fast filter (masks shifted once, one fft2 for all masks) is the formula, mask by mask:
    the shifts are permutations, so the products are the same numbers in another order."""
    t, d = size
    g = _gen(seed)
    x = torch.randn(2, t, d, generator=g, dtype=torch.float64)
    masks = (torch.rand(k, t, d, generator=g) < 0.5).double()
    got = filter_unshifted(x, unshift(masks))
    assert got.shape == (k, 2, t, d)
    for i in range(k):
        torch.testing.assert_close(got[i], frequency_filter(x, masks[i]), rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- the augmenter


def _setup(dropout=0.0):
    ctx = BuildContext(num_items=30, max_len=8, hidden_size=4, seed=5)
    torch.manual_seed(0)
    enc = SASRec(SASRecOptions(hidden_size=4, inner_size=8, heads=1, dropout=dropout, attn_dropout=0.0), ctx)
    aug = CFIT4SRecAugmenter(CFIT4SRecOptions(), ctx)
    enc.request_full_width()
    items = torch.randint(1, 31, (5, 8), generator=_gen(1))
    items[0, :5] = 0
    return enc, aug, Batch(items, torch.ones(5, dtype=torch.long), torch.arange(5))


def test_views_are_flattened_filtered_sequences():
    enc, aug, batch = _setup()
    assert aug.view_shapes == {n: (32,) for n in ("low1", "low2", "high1", "high2", "band1", "band2")}
    assert aug.low.sum() > 0 and torch.equal(aug.low, low_pass(8, 4, 2))  # radius T // 4 = 2
    views = aug(batch, enc, None, None)
    assert views.pairs == [("low1", "low2"), ("high1", "high2"), ("band1", "band2")]
    x = enc.embed_without_dropout(batch.items)
    assert torch.equal(enc.embed(batch.items), enc.embedding_dropout(x))  # dropout 0 here
    expected = enc.contextualize(frequency_filter(x, aug.low), batch.items).flatten(1)
    torch.testing.assert_close(views.tensors["low1"], expected)
    torch.testing.assert_close(views.tensors["low1"], views.tensors["low2"])  # no dropout: one filter, one view


def test_band_centres_drawn_per_view_from_the_augmenters_stream():
    _, aug, _ = _setup()
    drawn = {tuple(aug.masks(torch.device("cpu"))[4:].flatten(1).sum(1).tolist()) for _ in range(30)}
    assert len(drawn) > 3  # the two band-stop views get their own centres, batch after batch
    state = aug.state_dict()
    again = CFIT4SRecAugmenter(CFIT4SRecOptions(), BuildContext(num_items=30, max_len=8, hidden_size=4, seed=5))
    again.load_state_dict(state)
    assert torch.equal(aug.masks(torch.device("cpu")), again.masks(torch.device("cpu")))  # checkpointed stream


@pytest.fixture(scope="module")
def plugins():
    return load_plugins()


def config(plugins, run_dir, *extra, dataset, encoder="sasrec"):
    tiny = [(k.replace("sasrec.", f"{encoder}."), v) for k, v in (parse_assignment(a) for a in TINY[1::2])]
    pairs = tiny + [parse_assignment(a) for a in extra]
    pairs += [("augmenter", "cfit4srec"), ("dataset", str(dataset)), ("run.dir", str(run_dir)),
              ("encoder", encoder)]
    return resolve(plugins.registry, overrides=pairs)


def test_defaults_and_bert4rec_refused(plugins, tmp_path, tiny_file):
    r = config(plugins, tmp_path, dataset=tiny_file)
    assert r.terms == ["cl"] and (r.tree["loss"]["cl"]["weight"], r.tree["loss"]["cl"]["tau"]) == (0.1, 1.0)
    assert r.tree["loss"]["cl"]["sim"] == "dot" and r.tree["loss"]["cl"]["kind"] == "nt_xent"
    with pytest.raises(ConfigError, match="encoder bert4rec cannot serve augmenter cfit4srec: it has no "
                                          "embed_without_dropout"):
        config(plugins, tmp_path, dataset=tiny_file, encoder="bert4rec")


def test_trains_on_builtin_data_and_resumes_exactly(plugins, tmp_path, tiny_file):
    extra = ("train.epochs=2", "train.patience=5")
    full = train(config(plugins, tmp_path / "a", *extra, dataset=tiny_file), plugins, log=lambda m: None)
    recs = records(full.run_dir)
    assert all(set(r["loss"]) == {"main", "cl"} and r["loss"]["cl"] > 0 for r in recs)
    path = interrupted_run(plugins, config(plugins, tmp_path / "b", *extra, dataset=tiny_file), 1)
    assert records(resume(path, plugins, log=lambda m: None).run_dir) == recs


def plain_forward(self, batch, encoder, h_in, hidden):
    """The plain path the fast one replaced: six filters on the centred spectrum (two rolls each),
    the encoder's all-slot ``contextualize`` (on the padded layout: ``request_full_width``)."""
    x = encoder.embed_without_dropout(batch.items)
    six = frequency_filter(x.unsqueeze(0), self.masks(x.device).unsqueeze(1))
    flat = rearrange(six, "v b t d -> (v b) t d")
    out = encoder.contextualize(encoder.embedding_dropout(flat), repeat(batch.items, "b t -> (v b) t", v=6))
    views = rearrange(out, "(v b) t d -> v b (t d)", v=6)
    return Views(dict(zip([name for pair in self.pairs for name in pair], views)), list(self.pairs))


def test_fast_step_equals_plain_step(plugins, tmp_path, tiny_file):
    """SPEC §10. Fast: trimmed batch, packed last-slot main pass, four filters from one fft2 with
    unshifted masks, the views padded back to T. Plain: full-width batch, every pass on the padded
    layout and every slot of the main pass, six filters with both shifts. Loss and every gradient,
    dropout 0, the augmenter's band-centre stream restored."""
    r, data, model = build(plugins, tmp_path, tiny_file, "cfit4srec")
    batch = fixed_batch(data, model)
    t = model.max_len
    assert batch.items.shape[1] < t and not model.encoder.dense_layout  # trimmed, packed: the fast path
    state = copy.deepcopy(model.state_dict())
    got = loss_and_grads(model, batch, r, "packed", state=state)
    aug = model.augmenter
    full = Batch(F.pad(batch.items, (t - batch.items.shape[1], 0)), batch.targets, batch.sample_ids)
    aug.hidden_slots, aug.reads_embedding = "all", True
    aug.forward = types.MethodType(plain_forward, aug)
    model.encoder.request_full_width()
    ref = loss_and_grads(model, full, r, "padded", state=state)
    assert float(ref[0]) > 0 and ref[1].keys() == got[1].keys() and len(ref[1]) > 4
    assert_close(got, ref)


def test_one_step_the_views_reach_every_encoder_parameter(plugins, tmp_path, tiny_file):
    """The default plan (one Adam step over every parameter; the augmenter owns none, its masks are buffers):
    the ``cl`` term alone sends a gradient to every encoder parameter (the views run the embedding before
    dropout, the positions and every layer), and one step of the training loop moves all of them."""
    from seqcl.data.dataset import training_samples
    from seqcl.training import make_optimizer, train_epoch

    r, data, model = build(plugins, tmp_path, tiny_file, "cfit4srec")
    assert model.plan is None and list(model.augmenter.parameters()) == []
    params = dict(model.encoder.named_parameters())
    assert len(params) == len(list(model.parameters()))
    model.train(True)
    cl = model.step(fixed_batch(data, model)).values["cl"]
    grads = torch.autograd.grad(cl, list(params.values()), allow_unused=True)
    assert [n for n, g in zip(params, grads) if g is None or not g.abs().sum() > 0] == []
    before = {n: p.detach().clone() for n, p in params.items()}
    train_epoch(model, make_optimizer(model, r), training_samples(data), r, torch.Generator().manual_seed(0),
                torch.device("cpu"), max_batches=1)
    assert [n for n, p in params.items() if torch.equal(p, before[n])] == []
