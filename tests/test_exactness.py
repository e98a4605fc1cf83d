"""SPEC §10: every speed optimisation computes what the plain path computes.

Tolerance, stated once: fp32 losses and gradients ``allclose(rtol=1e-5,
atol=1e-6 · max|reference grad|)`` — the packed layout sums the same terms in a
different order (fewer padded zeros, per-bucket matmuls), so elements that are
sums of many cancelling terms (LayerNorm biases, the item table) differ by a few
ulps of the largest gradient; in float64 the same comparison agrees to 1e-12.
Ranks are compared for equality.
"""

import copy

import pytest
import torch

from seqcl.config import parse_assignment, resolve
from seqcl.data.dataset import eval_set, training_samples
from seqcl.evaluation import count_below, evaluate
from seqcl.plugins import load_plugins
from seqcl.training import iterate_batches, make_optimizer, prepare, training_step

from conftest import TINY

RTOL, ATOL = 1e-5, 1e-6


@pytest.fixture(scope="module")
def plugins():
    return load_plugins()


def build(plugins, tmp_path, dataset, augmenter, *extra):
    pairs = [parse_assignment(a) for a in [*TINY[1::2], "sasrec.dropout=0", "sasrec.attn_dropout=0", *extra]]
    pairs += [("augmenter", augmenter), ("dataset", str(dataset)), ("run.dir", str(tmp_path / "runs"))]
    r = resolve(plugins.registry, overrides=pairs)
    data, _, model = prepare(r, plugins)
    return r, data, model


def fixed_batch(data, model, size=96):
    gen = torch.Generator().manual_seed(3)
    return next(iterate_batches(training_samples(data), size, model.max_len, gen, torch.device("cpu"),
                                trim=not model.augmenter.full_width))


def loss_and_grads(model, batch, r, layout, dtype=torch.float32, state=None):
    """Loss and gradients of one step; ``state`` (a ``Model.state_dict``) is loaded first, so
    that augmenters with their own random streams (CL4SRec, DuoRec) draw the same views."""
    model.encoder.layout_mode = layout
    if state is not None:
        model.load_state_dict(copy.deepcopy(state))
    for p in model.parameters():
        p.grad = None
    torch.manual_seed(0)
    out = training_step(model, batch)
    out.total.backward()
    return out.total.detach(), {n: p.grad.clone() for n, p in _named(model) if p.grad is not None}


def _named(model):
    for i, m in enumerate(model.modules()):
        for n, p in m.named_parameters():
            yield f"{i}.{n}", p


def assert_close(got, ref, rtol=RTOL, atol=ATOL):
    (l1, g1), (l2, g2) = got, ref
    assert torch.allclose(l1, l2, rtol=rtol, atol=atol), (l1, l2)
    assert g1.keys() == g2.keys()
    for name in g2:
        scale = float(g2[name].abs().max()) or 1.0
        assert torch.allclose(g1[name], g2[name], rtol=rtol, atol=atol * scale), (
            name, float((g1[name] - g2[name]).abs().max()), scale)


#: every augmenter whose step has a fast path: packed layout, last-slot main pass and views
#: (``hidden_slots = "last"``), ACLSRec's MLP_p on packed tokens and last-slot perturbed pass
FAST_PATHS = [("none", ()), ("aclsrec", ()), ("random", ()), ("crop", ()), ("mask", ()), ("reorder", ()),
              ("dropout", ()), ("dropout", ("dropout.mode=unsupervised",)), ("dropout", ("dropout.mode=supervised",))]


def plain_reference(model, batch, r, state):
    """The plain path: padded layout, and the core's main pass computing every slot of H
    (as for an augmenter that reads them all), so the views see the full (B, T, d) tensors."""
    aug = model.augmenter
    saved = aug.hidden_slots, aug.reads_embedding
    aug.hidden_slots, aug.reads_embedding = "all", True
    try:
        return loss_and_grads(model, batch, r, "padded", state=state)
    finally:
        aug.hidden_slots, aug.reads_embedding = saved


@pytest.mark.parametrize("augmenter, extra", FAST_PATHS)
def test_packed_step_equals_padded_step(plugins, tmp_path, tiny_file, augmenter, extra):
    """Loss and every gradient of the default step (packed per-token layers, bucketed attention,
    last-slot-only final layers, ACLSRec's MLP_p on packed tokens) against the plain padded
    path, on a fixed batch, dropout 0."""
    r, data, model = build(plugins, tmp_path, tiny_file, augmenter, *extra)
    batch = fixed_batch(data, model)
    lengths = batch.lengths()
    assert int(lengths.min()) < int(lengths.max())  # a real mix of lengths → several buckets
    assert len(model.encoder.layout(batch.items).buckets) >= 3
    state = copy.deepcopy(model.state_dict())
    ref = plain_reference(model, batch, r, state)
    got = loss_and_grads(model, batch, r, "packed", state=state)
    assert len(ref[1]) > 4 and float(ref[0]) > 0
    assert_close(got, ref)


@pytest.mark.parametrize("augmenter", ["none", "aclsrec", "random", "dropout"])
def test_packed_step_equals_padded_step_float64(plugins, tmp_path, tiny_file, augmenter):
    """The fp32 differences are rounding only: in float64 they vanish to 1e-12."""
    r, data, model = build(plugins, tmp_path, tiny_file, augmenter)
    for m in model.modules():
        m.double()
    batch = fixed_batch(data, model)
    state = copy.deepcopy(model.state_dict())
    assert_close(loss_and_grads(model, batch, r, "packed", state=state), plain_reference(model, batch, r, state),
                 rtol=1e-10, atol=1e-12)


def test_sequence_scope_runs_on_the_padded_layout(plugins, tmp_path, tiny_file):
    """ACLSRec's sequence scope mixes slots, so it reads padded slots: the core turns packing off."""
    r, data, model = build(plugins, tmp_path, tiny_file, "aclsrec", "aclsrec.scope=sequence")
    assert model.encoder.dense_layout and not model.encoder.packs(torch.ones(2, 3, dtype=torch.long))
    batch = fixed_batch(data, model, size=16)
    assert batch.items.shape[1] == model.max_len
    out = training_step(model, batch)
    assert torch.isfinite(out.total)


def test_fused_adam_matches_for_loop_adam(plugins, tmp_path, tiny_file):
    """Same gradients in, same parameters out (two steps, so the moments are exercised too).

    Gradients are copied from one backward pass into both models: after the first
    step, parameters whose true gradient is 0 (e.g. the key bias: softmax ignores a
    per-query constant) carry pure rounding noise, which Adam normalises to a full
    lr-sized step, so separate backward passes would amplify ulp differences."""
    r, data, model = build(plugins, tmp_path, tiny_file, "aclsrec")
    _, _, twin = build(plugins, tmp_path, tiny_file, "aclsrec")
    twin.load_state_dict(model.state_dict())
    fused = make_optimizer(model, r)
    assert fused.defaults["fused"]
    loop = torch.optim.Adam(twin.parameters(), lr=r.train.lr, foreach=False)
    batch = fixed_batch(data, model)
    for _ in range(2):
        fused.zero_grad(set_to_none=True)
        training_step(model, batch).total.backward()
        for a, b in zip(model.parameters(), twin.parameters()):
            b.grad = None if a.grad is None else a.grad.clone()
        fused.step()
        loop.step()
    for (name, a), (_, b) in zip(_named(model), _named(twin)):
        assert torch.allclose(a, b, rtol=RTOL, atol=ATOL), name


@pytest.mark.parametrize("exclude_history", [True, False])
def test_evaluation_ranks_identical_packed_and_padded(plugins, tmp_path, tiny_file, exclude_history):
    """Full ranking through the packed encoder (last-slot-only final layer, length buckets) gives the
    very same ranks as the padded reference layout; chunked item scoring too."""
    r, data, model = build(plugins, tmp_path, tiny_file, "none")
    valid = eval_set(data, "valid")
    ranks = {}
    for layout in ("padded", "packed"):
        model.encoder.layout_mode = layout
        for chunk in (None, 37):
            res = evaluate(model.encoder, valid, data.num_items, model.max_len, exclude_history=exclude_history,
                           batch_size=64, item_chunk=chunk)
            ranks[layout, chunk] = res.ranks
    ref = ranks["padded", None]
    assert ref.float().std() > 0
    for key, value in ranks.items():
        assert torch.equal(value, ref), key


def test_count_below_is_exact():
    """The byte-lane counting equals a plain comparison sum, with ties, ±inf and NaN, any width."""
    g = torch.Generator().manual_seed(0)
    for b, c in ((1, 1), (3, 7), (5, 8), (17, 2041), (4, 8 * 255 + 9), (2, 8 * 600)):
        scores = torch.randint(-3, 4, (b, c), generator=g).float()  # many ties
        scores[torch.rand(b, c, generator=g) < 0.05] = float("-inf")
        scores[torch.rand(b, c, generator=g) < 0.05] = float("inf")
        scores[torch.rand(b, c, generator=g) < 0.05] = float("nan")
        ts = torch.randint(-3, 4, (b, 1), generator=g).float()
        ts[0, 0] = float("nan") if b > 2 else ts[0, 0]
        assert torch.equal(count_below(scores, ts).long(), (scores < ts).sum(dim=1))
    all_below = torch.zeros(2, 8 * 255 * 3)
    assert count_below(all_below, torch.ones(2, 1)).tolist() == [8 * 255 * 3] * 2  # no lane overflow
