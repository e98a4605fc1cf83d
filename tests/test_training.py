"""Training: determinism, run directory, early stopping, term bookkeeping, exactness of trimming."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from seqcl.config import parse_assignment, resolve
from seqcl.data.dataset import eval_set, training_samples, trim_padding
from seqcl.plugins import load_plugins
from seqcl.training import iterate_batches, main_pass, prepare, train, training_step

from conftest import TINY


@pytest.fixture(scope="module")
def plugins():
    return load_plugins()


def config(plugins, tmp_path, *extra, augmenter="none", dataset, without=()):
    pairs = [parse_assignment(a) for a in TINY[1::2]] + [parse_assignment(a) for a in extra]
    pairs += [("augmenter", augmenter), ("dataset", str(dataset)), ("run.dir", str(tmp_path / "runs"))]
    return resolve(plugins.registry, overrides=pairs, without_terms=list(without))


def test_same_seed_same_metrics_and_run_dir(plugins, tmp_path, tiny_file):
    r = config(plugins, tmp_path, "train.epochs=2", dataset=tiny_file)
    a = train(r, plugins, log=lambda m: None)
    b = train(r, plugins, log=lambda m: None)
    assert a.valid == b.valid and a.test == b.test
    files = {p.name for p in a.run_dir.iterdir()}
    assert {"config.yaml", "plugins.json", "metrics.jsonl", "summary.json", "best.pt", "ranks.pt"} <= files
    assert a.run_dir != b.run_dir and not a.run_dir.name.endswith(".incomplete")
    summary = json.loads((a.run_dir / "summary.json").read_text())
    assert summary["test"] == pytest.approx(a.test) and summary["best_epoch"] == a.best_epoch
    lines = (a.run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]
    if Path("/proc/self/status").exists():  # memory over epochs, as VmRSS / VmHWM report it
        rows = [json.loads(x) for x in lines]
        assert all(0 < row["rss_mb"] <= row["peak_rss_mb"] <= summary["peak_rss_mb"] for row in rows)
    assert yaml.safe_load((a.run_dir / "config.yaml").read_text())["train"]["epochs"] == 2
    ranks = torch.load(a.run_dir / "ranks.pt", weights_only=True)
    assert ranks["test"].shape == (300,)
    c = train(config(plugins, tmp_path, "train.epochs=2", "train.seed=7", dataset=tiny_file), plugins,
              log=lambda m: None)
    assert c.valid != a.valid


@pytest.mark.parametrize("exclude", [True, False])
def test_best_checkpoint_tested_under_both_protocols(plugins, tmp_path, tiny_file, exclude):
    """summary.json and ranks.pt hold the test split with the history excluded and kept, whatever is configured."""
    from seqcl.evaluation import evaluate, metrics_from_ranks

    r = config(plugins, tmp_path, "train.epochs=2", f"eval.exclude_history={str(exclude).lower()}", dataset=tiny_file)
    res = train(r, plugins, log=lambda m: None)
    summary = json.loads((res.run_dir / "summary.json").read_text())
    ranks = torch.load(res.run_dir / "ranks.pt", weights_only=True)
    configured = "test_history_excluded" if exclude else "test_history_kept"
    assert summary[configured] == summary["test"] and torch.equal(ranks[configured], ranks["test"])
    kept, excluded = ranks["test_history_kept"], ranks["test_history_excluded"]
    assert bool((kept >= excluded).all()) and bool((kept > excluded).any())  # history items compete only when kept
    for name in ("test_history_kept", "test_history_excluded"):
        assert summary[name] == pytest.approx(metrics_from_ranks(ranks[name].long(), (5, 10)))
    # both are the plain evaluation of the same best checkpoint
    data, _, model = prepare(r, plugins)
    model.load_state_dict(torch.load(res.run_dir / "best.pt", weights_only=True))
    for name, flag in (("test_history_kept", False), ("test_history_excluded", True)):
        plain = evaluate(model.encoder, eval_set(data, "test"), data.num_items, model.max_len, exclude_history=flag)
        assert torch.equal(plain.ranks, ranks[name].long())


def test_early_stopping_and_best_weights(plugins, tmp_path, tiny_file):
    r = config(plugins, tmp_path, "train.epochs=50", "train.patience=1", "train.lr=0.5", dataset=tiny_file)
    res = train(r, plugins, log=lambda m: None)
    records = [json.loads(x) for x in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert res.epochs_run == len(records) < 50
    best = max(records, key=lambda x: x["valid"]["mrr@10"])
    assert res.best_epoch == best["epoch"]
    assert res.valid["mrr@10"] == pytest.approx(best["valid"]["mrr@10"])  # best weights restored


def test_failed_run_is_left_incomplete(plugins, tmp_path, tiny_file, monkeypatch):
    import seqcl.training as training

    def boom(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(training, "_evaluate", boom)
    with pytest.raises(RuntimeError):
        train(config(plugins, tmp_path, "train.epochs=1", dataset=tiny_file), plugins, log=lambda m: None)
    dirs = list((tmp_path / "runs").iterdir())
    assert len(dirs) == 1 and dirs[0].name.endswith(".incomplete")
    assert not (dirs[0] / "summary.json").exists()


def test_aclsrec_without_all_terms_equals_none(plugins, tmp_path, tiny_file):
    none = train(config(plugins, tmp_path, "train.epochs=2", dataset=tiny_file), plugins, log=lambda m: None)
    ablated = train(config(plugins, tmp_path, "train.epochs=2", augmenter="aclsrec", dataset=tiny_file,
                           without=("cl", "align", "boundary")), plugins, log=lambda m: None)
    assert ablated.valid == none.valid and ablated.test == none.test


def test_terms_logged_weight_zero_not_added(plugins, tmp_path, tiny_file):
    r = config(plugins, tmp_path, "loss.cl.weight=0", "loss.align.weight=0", "loss.boundary.weight=0",
               augmenter="aclsrec", dataset=tiny_file)
    data, key, model = prepare(r, plugins)
    batch = next(iterate_batches(training_samples(data), 32, 20, torch.Generator().manual_seed(0),
                                 torch.device("cpu")))
    torch.manual_seed(0)
    out = training_step(model, batch)
    assert set(out.parts) == {"main", "cl", "align", "boundary"}
    assert torch.equal(out.total.detach(), out.parts["main"])
    assert all(torch.isfinite(v) for v in out.parts.values())


def test_batch_of_one_skips_negative_terms(plugins, tmp_path, tiny_file):
    r = config(plugins, tmp_path, augmenter="aclsrec", dataset=tiny_file)
    data, key, model = prepare(r, plugins)
    batch = next(iterate_batches(training_samples(data), 1, 20, torch.Generator().manual_seed(0),
                                 torch.device("cpu")))
    out = training_step(model, batch)
    assert set(out.skipped) == {"cl", "boundary"}
    assert out.parts["cl"] == 0 and out.parts["boundary"] == 0 and torch.isfinite(out.total)


@pytest.mark.parametrize("augmenter", ["none", "aclsrec"])
def test_trimmed_step_equals_full_width_step(plugins, tmp_path, tiny_file, augmenter):
    """SPEC §10: losses and gradients allclose (rtol 1e-5) with and without trimming (dropout off)."""
    r = config(plugins, tmp_path, "sasrec.dropout=0", "sasrec.attn_dropout=0", augmenter=augmenter,
               dataset=tiny_file)
    data, key, model = prepare(r, plugins)
    batch = next(iterate_batches(training_samples(data), 64, 20, torch.Generator().manual_seed(0),
                                 torch.device("cpu"), trim=False))
    short = batch.lengths() < 12
    batch = type(batch)(batch.items[short], batch.targets[short], batch.sample_ids[short])
    trimmed = type(batch)(trim_padding(batch.items), batch.targets, batch.sample_ids)
    assert trimmed.items.shape[1] < batch.items.shape[1]
    results = []
    for b in (batch, trimmed):
        for p in model.parameters():
            p.grad = None
        out = training_step(model, b)
        out.total.backward()
        results.append((out.total.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    (l1, g1), (l2, g2) = results
    assert torch.allclose(l1, l2, rtol=1e-5, atol=1e-6)
    assert len(g1) == len(g2) and all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(g1, g2))


def test_sampled_and_bce_main_losses_train(plugins, tmp_path, tiny_file):
    for main in ("sampled", "bce"):
        extra = ("sampled.negatives=3",) if main == "sampled" else ()
        r = config(plugins, tmp_path, "train.epochs=1", f"objective={main}", *extra,
                   augmenter="aclsrec", dataset=tiny_file)
        res = train(r, plugins, log=lambda m: None)
        assert 0 <= res.test["hr@10"] <= 1


@pytest.mark.parametrize("augmenter, slots, embedding", [("none", "all", True), ("aclsrec", "last", True),
                                                        ("random", "last", False), ("dropout", "last", False)])
def test_main_pass_gives_what_the_augmenter_declares(plugins, tmp_path, tiny_file, augmenter, slots, embedding):
    """``hidden_slots`` / ``reads_embedding`` travel from the augmenter to the core's main pass:
    H[:, -1:] (B, 1, d) for "last", no H_in without ``reads_embedding``; the same last slot as
    the full pass either way."""
    r = config(plugins, tmp_path, "sasrec.dropout=0", "sasrec.attn_dropout=0", augmenter=augmenter,
               dataset=tiny_file)
    data, _, model = prepare(r, plugins)
    aug = model.augmenter
    assert (aug.hidden_slots, aug.reads_embedding) == (slots, embedding)
    items = next(iterate_batches(training_samples(data), 32, model.max_len, torch.Generator().manual_seed(0),
                                 torch.device("cpu"))).items
    h_in, hidden = main_pass(model.encoder, aug, items)
    assert hidden.shape == ((32, 1, 16) if slots == "last" else (32, items.shape[1], 16))
    assert (h_in is None) == (not embedding)
    full = model.encoder.contextualize(model.encoder.embed(items), items)[:, -1]
    assert torch.allclose(hidden[:, -1], full, atol=1e-6)
