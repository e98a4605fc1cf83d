"""ELCRec: the clustering math against loops (Hypothesis), k-means, the lifecycle of the intent centres
(k-means at fit start, unit rows after every step, kept on resume), and training on tiny data."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from seqcl.config import parse_assignment, resolve
from seqcl.errors import ConfigError
from seqcl.plugins import load_plugins
from seqcl.training import resume, train
from seqcl_elcrec import cluster_loss_rows, kmeans, shift_to_nearest, sq_distances
from seqcl_elcrec.formulas import nearest

from conftest import TINY
from formula_refs import FAST, SLOW, _gen, grads_finite, rows
from test_resume import interrupted_run, records


def ref_sq(x, c):
    return [[sum((a - b) ** 2 for a, b in zip(xi, ck)) for ck in rows(c)] for xi in rows(x)]


@st.composite
def points(draw, max_n=9, max_k=6, max_d=5):
    n, k, d = draw(st.integers(1, max_n)), draw(st.integers(1, max_k)), draw(st.integers(1, max_d))
    g = _gen(draw(st.integers(0, 2**31 - 1)))
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(k, d, generator=g, dtype=torch.float64)


@FAST
@given(xc=points())
def test_sq_distances_and_cluster_loss_match_loops(xc):
    x, c = xc
    torch.testing.assert_close(sq_distances(x, c), torch.tensor(ref_sq(x, c), dtype=torch.float64))
    cc = ref_sq(c, c)
    centre_mean = sum(map(sum, cc)) / len(cc) ** 2  # the diagonal zeros included, as the code
    expected = [sum(r) / len(r) - centre_mean for r in ref_sq(x, c)]
    torch.testing.assert_close(cluster_loss_rows(x, c), torch.tensor(expected, dtype=torch.float64))


@FAST
@given(xc=points())
def test_cluster_loss_closed_form_on_unit_rows(xc):
    """Unit rows: mean_n loss = 2‖c̄‖² − 2 z̄·c̄ (so within [−4, 4]); pulling z towards c̄ lowers it."""
    z, c = F.normalize(xc[0], dim=-1), F.normalize(xc[1], dim=-1)
    zbar, cbar = z.mean(0), c.mean(0)
    loss = cluster_loss_rows(z, c).mean()
    torch.testing.assert_close(loss, 2 * cbar.dot(cbar) - 2 * zbar.dot(cbar))
    assert -4 - 1e-9 <= float(loss) <= 4 + 1e-9


@SLOW
@given(xc=points(), scale=st.sampled_from([1.0, 1e3]))
def test_cluster_loss_finite_gradients(xc, scale):
    x, c = (t * scale for t in xc)
    x.requires_grad_(True)
    c.requires_grad_(True)
    grads_finite(cluster_loss_rows(x, c).mean(), [x, c])


@FAST
@given(xc=points(), b=st.integers(1, 3))
def test_shift_adds_each_slots_nearest_centre(xc, b):
    x, c = xc
    h = x.unsqueeze(0).expand(b, -1, -1).contiguous()
    out = shift_to_nearest(h, c)
    d = ref_sq(x, c)
    for t, row in enumerate(rows(x)):
        k = min(range(len(d[t])), key=lambda j: (d[t][j], j))
        torch.testing.assert_close(out[:, t], (x[t] + c[k]).expand(b, -1))


@FAST
@given(xc=points(), b=st.integers(1, 3))
def test_shift_without_recorded_distances_equals_the_plain_shift(xc, b):
    """Fast path: the argmin's (N, K) distances computed without autograd. Plain: with it. Same
    indices, same output and the same gradients for h and the centres (in float32)."""
    x, c = (t.float() for t in xc)
    h = x.unsqueeze(0).expand(b, -1, -1).contiguous()
    leaves = [t.clone().requires_grad_(True) for t in (h, c, h, c)]
    fast = shift_to_nearest(leaves[0], leaves[1])
    index = sq_distances(leaves[2].reshape(-1, x.shape[1]), leaves[3]).argmin(dim=1)  # recorded
    plain = leaves[2] + leaves[3][index].reshape(h.shape)
    assert torch.equal(nearest(leaves[0].reshape(-1, x.shape[1]), leaves[1]), index)
    assert torch.equal(fast, plain)
    w = torch.randn(h.shape, generator=_gen(1))
    (fast * w).sum().backward()
    (plain * w).sum().backward()
    assert torch.equal(leaves[0].grad, leaves[2].grad) and torch.equal(leaves[1].grad, leaves[3].grad)


def test_kmeans_monotone_and_recovers_separated_blobs():
    g = _gen(0)
    means = torch.tensor([[10.0, 0.0], [0.0, 10.0], [-10.0, -10.0]])
    x = torch.cat([m + 0.1 * torch.randn(50, 2, generator=g) for m in means])
    inertia = []
    for iters in range(6):
        c = kmeans(x, 3, iters, _gen(1))
        inertia.append(float(sq_distances(x, c).min(dim=1).values.sum()))
    assert all(b <= a + 1e-4 for a, b in zip(inertia, inertia[1:]))  # Lloyd's never increases the inertia
    c = kmeans(x, 3, 10, _gen(5))
    assert float(sq_distances(c, means).min(dim=0).values.max().sqrt()) < 0.1  # a centre at every blob
    with pytest.raises(ValueError, match="at least k = 4 points"):
        kmeans(x[:3], 4, 1, _gen(0))


# --------------------------------------------------------------------------- the augmenter in a run


@pytest.fixture(scope="module")
def plugins():
    return load_plugins()


def config(plugins, run_dir, *extra, dataset, augmenter="elcrec", with_terms=()):
    pairs = [parse_assignment(a) for a in TINY[1::2]] + [parse_assignment(a) for a in extra]
    pairs += [("augmenter", augmenter), ("dataset", str(dataset)), ("run.dir", str(run_dir)),
              ("objective", "bce"), ("elcrec.clusters", 16)]
    return resolve(plugins.registry, overrides=pairs, with_terms=list(with_terms))


def test_defaults_follow_the_beauty_script(plugins, tmp_path, tiny_file):
    r = resolve(plugins.registry, overrides=[("augmenter", "elcrec"), ("dataset", str(tiny_file))])
    assert r.terms == ["cl", "intent", "cluster"]
    assert [r.tree["loss"][t]["weight"] for t in r.terms] == [0.1, 0.1, 10.0]
    assert (r.tree["loss"]["cl"]["tau"], r.tree["loss"]["intent"]["tau"]) == (1.0, 1.0)
    o = r.augmenter_options
    assert (o.clusters, o.crop_ratio, o.mask_ratio, o.reorder_ratio, o.mask_with, o.independent) == (
        256, 0.2, 0.7, 0.2, "padding", True)
    with pytest.raises(ConfigError, match="loss term intent needs the views of augmenter elcrec"):
        resolve(plugins.registry, overrides=[("augmenter", "crop"), ("with", "intent"), ("dataset", str(tiny_file))])


def test_centres_kmeans_at_fit_start_unit_after_steps_kept_on_resume(plugins, tmp_path, tiny_file, monkeypatch):
    import seqcl_elcrec.augmenter as aug_module

    calls = []
    real = aug_module.formulas.kmeans

    def spy(x, k, iters, generator):
        calls.append((tuple(x.shape), k, iters))
        return real(x, k, iters, generator)

    monkeypatch.setattr(aug_module.formulas, "kmeans", spy)
    extra = ("train.epochs=2", "train.patience=5")
    full = train(config(plugins, tmp_path / "a", *extra, dataset=tiny_file), plugins, log=lambda m: None)
    assert len(calls) == 1 and calls[0][1:] == (16, 20) and calls[0][0][1] == 16  # (N samples, d)
    centres = torch.load(full.run_dir / "best.pt", weights_only=True)["augmenter"]["centres"]
    torch.testing.assert_close(centres.norm(dim=1), torch.ones(16))  # normalised after the last step
    recs = records(full.run_dir)
    assert all(set(r["loss"]) == {"main", "cl", "intent", "cluster"} for r in recs)
    calls.clear()
    path = interrupted_run(plugins, config(plugins, tmp_path / "b", *extra, dataset=tiny_file), 1)
    assert len(calls) == 1
    assert records(resume(path, plugins, log=lambda m: None).run_dir) == recs
    assert len(calls) == 1  # a resumed run keeps its trained centres: no second k-means


def test_intent_computes_with_its_resolved_tau(plugins):
    from seqcl.interfaces import Batch, BuildContext, Views
    from seqcl_contrastive.formulas import nt_xent

    g = _gen(0)
    views = Views({n: torch.randn(5, 6, generator=g) for n in ("pool1", "pool2", "intent")}, [])
    batch = Batch(torch.ones(5, 4, dtype=torch.long), torch.ones(5, dtype=torch.long), torch.arange(5))
    ctx = BuildContext(num_items=9, max_len=4, hidden_size=6, augmenter="elcrec")

    def value(tau):
        r = resolve(plugins.registry, overrides=[("augmenter", "elcrec"), ("loss.intent.tau", tau)])
        out = plugins.registry.get("loss_term", "intent").factory(r.term_options["intent"], ctx)(views, batch)
        t = views.tensors
        torch.testing.assert_close(out, 0.5 * (nt_xent(t["pool1"], t["intent"], tau)
                                               + nt_xent(t["pool2"], t["intent"], tau)))
        return out

    assert not torch.isclose(value(0.37), value(0.74))


# --------------------------------------------------------------------------- views and one optimiser step


def _model(plugins, tmp_path, tiny_file):
    from seqcl.data.dataset import training_samples
    from seqcl.lifecycle import fit_context
    from seqcl.training import prepare

    r = config(plugins, tmp_path, "sasrec.dropout=0", "sasrec.attn_dropout=0", dataset=tiny_file)
    data, _, model = prepare(r, plugins)
    samples = training_samples(data)
    model.callbacks.on_fit_start(fit_context(model.encoder, samples, 64, model.max_len, "cpu", 0))
    return r, samples, model


def test_views_match_loops(plugins, tmp_path, tiny_file):
    """``intent``, ``clu``, ``pool1/2`` and the shifted, flattened ``inst1/2`` of one batch, against loops
    over rows, slots and centres (the augmentations replayed from the augmenter's stream)."""
    from seqcl.training import iterate_batches

    _, samples, model = _model(plugins, tmp_path, tiny_file)
    model.train(False)
    aug, enc = model.augmenter, model.encoder
    batch = next(iterate_batches(samples, 6, model.max_len, torch.Generator().manual_seed(0), torch.device("cpu"),
                                 trim=False))
    hidden = enc.contextualize(enc.embed(batch.items), batch.items)
    gen = aug.generator(torch.device("cpu"))
    state = gen.get_state()
    with torch.no_grad():
        views = aug(batch, enc, None, hidden).tensors
    gen.set_state(state)
    v1, v2 = aug.augment(batch.items, gen)
    c = aug.centres.detach()
    k, (b, t), d = c.shape[0], batch.items.shape, c.shape[1]

    def nearest_centre(x):  # the centre of lowest squared distance, by a loop
        dist = [float(((x - c[j]) ** 2).sum()) for j in range(k)]
        return c[dist.index(min(dist))]

    with torch.no_grad():
        for i in range(b):
            z = hidden[i].mean(0) / hidden[i].mean(0).norm()
            torch.testing.assert_close(views["intent"][i], nearest_centre(z))
            pull = sum(float(((z - c[j]) ** 2).sum()) for j in range(k)) / k
            push = sum(float(((c[a] - c[j]) ** 2).sum()) for a in range(k) for j in range(k)) / k ** 2
            assert views["clu"][i].item() == pytest.approx(pull - push, rel=1e-4, abs=1e-4)
            for n, v in ((1, v1), (2, v2)):
                out = enc.contextualize(enc.embed(v[i:i + 1]), v[i:i + 1])[0]  # (T, d), this row alone
                torch.testing.assert_close(views[f"pool{n}"][i], out.mean(0), rtol=1e-4, atol=1e-5)
                shifted = torch.stack([out[s] + nearest_centre(out[s]) for s in range(t)])
                torch.testing.assert_close(views[f"inst{n}"][i], shifted.reshape(t * d), rtol=1e-4, atol=1e-5)
    assert not torch.equal(views["inst1"], views["inst2"])  # two different augmentations


def test_one_step_trains_the_centres_and_the_encoder(plugins, tmp_path, tiny_file):
    """The default plan (one Adam step over every parameter): each of the three terms sends a gradient to the
    centres, the step moves them and the encoder, and the projection leaves them unit rows."""
    from seqcl.training import iterate_batches, make_optimizer, train_epoch

    r, samples, model = _model(plugins, tmp_path, tiny_file)
    assert model.plan is None
    model.train(True)
    batch = next(iterate_batches(samples, 32, model.max_len, torch.Generator().manual_seed(0), torch.device("cpu"),
                                 trim=False))
    values = model.step(batch).values
    for term in ("cl", "intent", "cluster"):
        (grad,) = torch.autograd.grad(values[term], [model.augmenter.centres], retain_graph=True)
        assert grad.abs().sum() > 0, term
    params = {**{f"encoder.{n}": p for n, p in model.encoder.named_parameters()},
              **{f"augmenter.{n}": p for n, p in model.augmenter.named_parameters()}}
    assert list(params)[-1] == "augmenter.centres" and len(params) == len(list(model.parameters()))
    before = {n: p.detach().clone() for n, p in params.items()}
    train_epoch(model, make_optimizer(model, r), samples, r, torch.Generator().manual_seed(0), torch.device("cpu"),
                max_batches=1)
    assert [n for n, p in params.items() if torch.equal(p, before[n])] == []  # every parameter moved
    torch.testing.assert_close(model.augmenter.centres.detach().norm(dim=1), torch.ones(16))
