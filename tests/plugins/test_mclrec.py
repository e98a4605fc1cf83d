"""MCLRec: the meta-contrast formula against a loop reference of the official code, the learners,
the three-step optimisation plan (which parameters change in which step), and training on tiny data."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from seqcl.config import parse_assignment, resolve
from seqcl.data.dataset import training_samples
from seqcl.errors import ConfigError
from seqcl.plugins import load_plugins
from seqcl.training import iterate_batches, make_optimizer, prepare, resume, train, training_step
from seqcl_mclrec import Learner, meta_contrast

from conftest import TINY
from formula_refs import FAST, SLOW, close, grads_finite, logsumexp, ref_sim, rows, views
from test_resume import interrupted_run, records


# --------------------------------------------------------------------------- formula


def ref_info_nce(a, b, tau):
    """The code's ``info_nce`` + CrossEntropyLoss: logits [positive, 2N-2 negatives], label 0, mean."""
    z = rows(a) + rows(b)
    n = a.shape[0]
    if n == 1:
        return 0.0
    total = 0.0
    for i in range(2 * n):
        p = (i + n) % (2 * n)
        pos = ref_sim(z[i], z[p], "dot") / tau
        negs = [ref_sim(z[i], z[j], "dot") / tau for j in range(2 * n) if j not in (i, p)]
        total += logsumexp([pos, *negs]) - pos
    return total / (2 * n)


def ref_rl(a, b):
    """The code's ``meta_contrast_rl_1`` (τ = 1): per row, bounds from its positive and hardest negative."""
    z = rows(a) + rows(b)
    n = a.shape[0]
    if n == 1:
        return 0.0
    pos_terms, neg_terms = [], []
    for i in range(2 * n):
        p = (i + n) % (2 * n)
        pos = ref_sim(z[i], z[p], "dot")
        negs = [ref_sim(z[i], z[j], "dot") for j in range(2 * n) if j not in (i, p)]
        low, high = min(pos, max(negs)), max(pos, max(negs))
        pos_terms.append(max(pos - low, 0.0))
        neg_terms += [max(high - s, 0.0) for s in negs]
    return sum(pos_terms) / len(pos_terms) + sum(neg_terms) / len(neg_terms)


def ref_meta_contrast(h1, h2, z1, z2, tau, rl_weight):
    pairs = [(h1, z2), (h2, z1), (z1, z2)]  # meta_contrast's cl_loss_0..2 and meta_rl's three calls
    return sum(ref_info_nce(a, b, tau) for a, b in pairs) + rl_weight * sum(ref_rl(a, b) for a, b in pairs)


@FAST
@given(ts=views(k=4), tau=st.floats(0.2, 1.0), rl_weight=st.sampled_from([0.0, 0.1, 1.0]))
def test_meta_contrast_matches_the_codes_loops(ts, tau, rl_weight):
    close(meta_contrast(*ts, tau=tau, rl_weight=rl_weight), ref_meta_contrast(*ts, tau, rl_weight))


@SLOW
@given(ts=views(k=4, min_n=2), scale=st.sampled_from([1.0, 30.0, 1e3]))
def test_meta_contrast_bounds_and_finite_gradients(ts, scale):
    inputs = [(t * scale).requires_grad_(True) for t in ts]
    loss = meta_contrast(*inputs)
    assert float(loss.detach()) >= 0.0  # NT-Xent ≥ 0 (the positive is among the logits), R ≥ 0
    grads_finite(loss, inputs)


def test_rl_weight_adds_exactly_the_boundary_terms():
    g = torch.Generator().manual_seed(0)
    ts = [torch.randn(6, 4, generator=g, dtype=torch.float64) for _ in range(4)]
    base, with_r = meta_contrast(*ts, rl_weight=0.0), meta_contrast(*ts, rl_weight=0.1)
    r = sum(ref_rl(a, b) for a, b in [(ts[0], ts[3]), (ts[1], ts[2]), (ts[2], ts[3])])
    close(with_r - base, 0.1 * r)


@FAST
@given(n=st.integers(1, 9), d=st.integers(2, 12), seed=st.integers(0, 2**31 - 1))
def test_learner_rows_are_unit_and_shapes_kept(n, d, seed):
    torch.manual_seed(seed)
    w = Learner(d, [32, 16])
    assert [(l.in_features, l.out_features) for l in w.layers] == [(d, 32), (32, 16), (16, d)]
    z = w(torch.randn(n, d) * 10)
    assert z.shape == (n, d)
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(n))


# --------------------------------------------------------------------------- plan and training


@pytest.fixture(scope="module")
def plugins():
    return load_plugins()


def config(plugins, run_dir, *extra, dataset, without=()):
    pairs = [parse_assignment(a) for a in TINY[1::2]] + [parse_assignment(a) for a in extra]
    pairs += [("augmenter", "mclrec"), ("dataset", str(dataset)), ("run.dir", str(run_dir))]
    return resolve(plugins.registry, overrides=pairs, without_terms=list(without))


def test_defaults_follow_the_code_and_baselines(plugins, tmp_path, tiny_file):
    r = config(plugins, tmp_path, dataset=tiny_file)
    assert r.terms == ["cl", "mcl"]
    assert (r.tree["loss"]["cl"]["weight"], r.tree["loss"]["cl"]["tau"]) == (0.0, 1.0)  # λ = 0
    assert r.tree["loss"]["mcl"] == {"weight": 0.05, "tau": 1.0, "rl_weight": 0.1}  # β, τ, meta_rl's 0.1
    o = r.augmenter_options
    assert (o.crop_ratio, o.mask_ratio, o.reorder_ratio, o.mask_with, o.learner_sizes) == (
        0.5, 0.5, 0.8, "padding", [32, 16])


def test_three_steps_update_encoder_learners_encoder(plugins, tmp_path, tiny_file, monkeypatch):
    r = config(plugins, tmp_path, dataset=tiny_file)
    data, _, model = prepare(r, plugins)
    optimizer = make_optimizer(model, r)
    assert set(optimizer.optimizers) == {"model", "learners"}
    batch = next(iterate_batches(training_samples(data), 64, model.max_len, torch.Generator().manual_seed(0),
                                 torch.device("cpu")))

    def snapshot():
        return {"encoder": [p.detach().clone() for p in model.encoder.parameters()],
                "learners": [p.detach().clone() for p in model.augmenter.parameters()]}

    draws = []
    real_augment = model.augmenter.augment
    monkeypatch.setattr(model.augmenter, "augment", lambda items, g: draws.append(1) or real_augment(items, g))
    states = [snapshot()]
    model.callbacks = type(model.callbacks)(after_step=(lambda: states.append(snapshot()),))
    model.train(True)
    model.plan.step(model, batch, optimizer, training_step, torch.autocast("cpu", enabled=False), lambda o, l: None)

    def changed(a, b):
        return {k: [not torch.equal(x, y) for x, y in zip(a[k], b[k])] for k in a}

    steps = [changed(a, b) for a, b in zip(states, states[1:])]
    assert len(steps) == 3 and len(draws) == 1  # three optimiser steps, one data augmentation per batch
    assert any(steps[0]["encoder"]) and not any(steps[0]["learners"])  # (1) learners frozen
    assert all(steps[1]["learners"]) and not any(steps[1]["encoder"])  # (2) both learners, encoder frozen
    assert any(steps[2]["encoder"]) and not any(steps[2]["learners"])  # (3) as (1)


def test_learner_step_skips_main_pass_and_objective_exactly(plugins, tmp_path, tiny_file, monkeypatch):
    """SPEC §10. Fast: the learner step (2) asks only for ``mcl`` (λ = 0), so it runs neither the main
    pass nor the CE. Plain: every step computes every part. Same batch, dropout 0, the augmenter's
    stream restored: every parameter after the whole plan is the same, bit for bit (skipping a part
    changes no other value), and so is each step's minimised loss."""
    from seqcl.optimplan import weighted_loss

    r = config(plugins, tmp_path, "sasrec.dropout=0", "sasrec.attn_dropout=0", dataset=tiny_file)
    data, _, model = prepare(r, plugins)
    batch = next(iterate_batches(training_samples(data), 64, model.max_len, torch.Generator().manual_seed(0),
                                 torch.device("cpu")))
    state = copy.deepcopy(model.state_dict())
    encoded, objective_calls = [], []
    real_encode, real_objective = model.encoder.encode, model.objective.forward
    monkeypatch.setattr(model.encoder, "encode", lambda items: encoded.append(len(items)) or real_encode(items))
    monkeypatch.setattr(model.objective, "forward", lambda *a: objective_calls.append(1) or real_objective(*a))

    def run(ask):
        model.load_state_dict(copy.deepcopy(state))
        model.augmenter._drawn = None
        optimizer = make_optimizer(model, r)
        encoded.clear(), objective_calls.clear()
        losses = []

        def forward(m, b, parts):
            out = training_step(m, b, parts if ask else None)
            weights = model.plan.plan.steps[len(losses)].weights
            losses.append((out.total if weights is None else weighted_loss(out.values, weights)).detach())
            return out

        model.train(True)
        model.plan.step(model, batch, optimizer, forward, torch.autocast("cpu", enabled=False), lambda o, l: None)
        return [float(x) for x in losses], [p.detach().clone() for p in model.parameters()], list(encoded), \
            len(objective_calls)

    fast, plain = run(ask=True), run(ask=False)
    b = batch.size
    assert plain[2] == [b, 2 * b] * 3 and plain[3] == 3  # main pass + views, CE, in every step
    assert fast[2] == [b, 2 * b, 2 * b, b, 2 * b] and fast[3] == 2  # step 2: the views only
    assert fast[0] == plain[0] and len(fast[0]) == 3
    assert all(torch.equal(a, c) for a, c in zip(fast[1], plain[1]))
    model.load_state_dict(copy.deepcopy(state))
    assert sum(not torch.equal(a, c) for a, c in zip(fast[1], model.parameters())) > 4  # the plan moved them


def test_without_mcl_or_mcl_elsewhere_refused(plugins, tmp_path, tiny_file):
    with pytest.raises(ConfigError, match="needs its loss term mcl"):
        prepare(config(plugins, tmp_path, dataset=tiny_file, without=("mcl",)), plugins)
    pairs = [("augmenter", "crop"), ("with", "mcl"), ("dataset", str(tiny_file))]
    with pytest.raises(ConfigError, match="loss term mcl needs the views of augmenter mclrec"):
        resolve(plugins.registry, overrides=pairs)


def test_trains_on_builtin_data_and_resumes_exactly(plugins, tmp_path, tiny_file):
    extra = ("train.epochs=2", "train.patience=5")
    full = train(config(plugins, tmp_path / "a", *extra, dataset=tiny_file), plugins, log=lambda m: None)
    recs = records(full.run_dir)
    assert [set(r["loss"]) for r in recs] == [{"main", "cl", "mcl"}] * 2
    assert recs[1]["loss"]["mcl"] < recs[0]["loss"]["mcl"]  # the meta contrast is being minimised
    assert 0.0 < full.valid["mrr@10"] <= 1.0
    path = interrupted_run(plugins, config(plugins, tmp_path / "b", *extra, dataset=tiny_file), 1)
    assert records(resume(path, plugins, log=lambda m: None).run_dir) == recs
    summary = json.loads((full.run_dir / "summary.json").read_text())
    assert summary["augmenter"] == "mclrec"


def test_mcl_computes_with_its_resolved_options(plugins):
    """flag → resolved config → options → term → formula, for τ and rl_weight."""
    from seqcl.interfaces import Batch, BuildContext, Views

    g = torch.Generator().manual_seed(0)
    views = Views({n: torch.randn(5, 6, generator=g) for n in ("h1", "h2", "z1", "z2")}, [("h1", "h2")])
    batch = Batch(torch.ones(5, 4, dtype=torch.long), torch.ones(5, dtype=torch.long), torch.arange(5))
    ctx = BuildContext(num_items=9, max_len=4, hidden_size=6, view_pairs=[("h1", "h2")], augmenter="mclrec")

    def value(tau, rl):
        r = resolve(plugins.registry, overrides=[("augmenter", "mclrec"), ("loss.mcl.tau", tau),
                                                 ("loss.mcl.rl_weight", rl)])
        term = plugins.registry.get("loss_term", "mcl").factory(r.term_options["mcl"], ctx)
        t = views.tensors
        assert torch.equal(term(views, batch), meta_contrast(t["h1"], t["h2"], t["z1"], t["z2"], tau, rl))
        return term(views, batch)

    assert not torch.isclose(value(0.37, 0.1), value(0.74, 0.1))
    assert not torch.isclose(value(0.5, 0.1), value(0.5, 0.0))
