"""The tensorboard logger plugin: the event file holds metrics.jsonl's numbers, resume purges, missing package."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from seqcl.cli import main  # noqa: E402

from conftest import TINY  # noqa: E402


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def run_cli(tmp_path, tiny_file, *extra: str) -> int:
    return main(["train", "--dataset", str(tiny_file), *TINY, "--set", f"run.dir={tmp_path / 'runs'}",
                 "--set", "run.name=tb", "--with", "cl", "--augmenter", "crop", *extra])


def test_event_file_holds_the_curves(tmp_path, tiny_file, capsys):
    assert run_cli(tmp_path, tiny_file, "--epochs", "2", "--logger", "tensorboard") == 0
    run = tmp_path / "runs" / "tb"
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((run / "summary.json").read_text())
    got = scalars(run)
    per_epoch = got["step/loss/main"][-1][0] // 2
    steps = [per_epoch, 2 * per_epoch]
    for name in ("main", "cl"):  # each loss term, per epoch and per step
        assert got[f"epoch/loss/{name}"] == [(s, pytest.approx(r["loss"][name])) for s, r in zip(steps, records)]
        assert [s for s, _ in got[f"step/loss/{name}"]] == list(range(1, 2 * per_epoch + 1))
    for metric in ("mrr@10", "hr@10", "ndcg@5"):
        assert got[f"valid/{metric}"] == [(s, pytest.approx(r["valid"][metric])) for s, r in zip(steps, records)]
        assert got[f"test/{metric}"] == [(2 * per_epoch, pytest.approx(summary["test"][metric]))]
    assert [v for _, v in got["epoch/epoch"]] == [1, 2]
    assert len(got["step/loss/total"]) == 2 * per_epoch


def test_without_the_setting_no_event_file(tmp_path, tiny_file):
    assert run_cli(tmp_path, tiny_file, "--epochs", "1") == 0
    assert not (tmp_path / "runs" / "tb" / "tensorboard").exists()


def test_resume_purges_the_interrupted_epoch(tmp_path, tiny_file, monkeypatch):
    """Steps logged in an epoch that was interrupted are dropped on resume: each step appears once."""
    import seqcl.training as training
    from seqcl.config import parse_assignment, resolve
    from seqcl.plugins import load_plugins

    plugins = load_plugins()
    pairs = [parse_assignment(a) for a in TINY[1::2]] + [
        ("dataset", str(tiny_file)), ("run.dir", str(tmp_path)), ("run.name", "r"), ("train.epochs", 2),
        ("run.loggers", ["tensorboard"])]
    r = resolve(plugins.registry, overrides=pairs)
    real = training.train_epoch
    calls = {"n": 0}

    def dies_in_epoch_2(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # log some steps of epoch 2, then die as a kill would
            on_step = kwargs["on_step"]
            original = on_step

            def stepping(batch, out):
                original(batch, out)
                if batch == 3:
                    raise KeyboardInterrupt
            kwargs["on_step"] = stepping
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "train_epoch", dies_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        training.train(r, plugins, log=lambda m: None)
    monkeypatch.setattr(training, "train_epoch", real)
    result = training.resume(tmp_path / "r.incomplete", plugins, log=lambda m: None)
    got = scalars(result.run_dir)
    steps = [s for s, _ in got["step/loss/main"]]
    assert steps == sorted(set(steps)) and steps[0] == 1  # no step twice, none lost
    assert len(steps) == got["epoch/loss/main"][-1][0]
    assert [v for _, v in got["epoch/epoch"]] == [1, 2]


def test_missing_tensorboard_is_one_line_exit_2(tmp_path, tiny_file, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    assert run_cli(tmp_path, tiny_file, "--epochs", "1", "--logger", "tensorboard") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "error: logger tensorboard needs the 'tensorboard' package: pip install 'seqcl[tensorboard]'"
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
