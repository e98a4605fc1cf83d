"""Runs that survive (issue #9): truncated result files, weights-only loading, credentials in the
storage URL, a worker killed mid-run, and workers that must not import from the current directory."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch
import yaml

import seqcl_study.runner as runner
import seqcl.training as training
from seqcl.cli import main
from seqcl.plugins import load_plugins
from seqcl_study.ledger import Ledger, default_url, redact
from seqcl_study.plan import build_plan
from seqcl_study.runner import run_study
from seqcl_study.spec import load_spec

from study_helpers import ledger_trials, write_spec

METRICS = {f"{m}@{k}": 0.1 for m in ("hr", "ndcg", "mrr") for k in (5, 10)}


@pytest.fixture(scope="module")
def plugins():
    return load_plugins()


def fake_run(run_dir: Path, seed: int = 1, users: int = 40) -> Path:
    """A finished run directory as training leaves it, without training."""
    run_dir.mkdir(parents=True)
    (run_dir / "summary.json").write_text(json.dumps({"valid": METRICS, "test": METRICS, "seed": seed,
                                                      "augmenter": "none", "terms": []}))
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"dataset": "x.txt", "data": {"max_len": 20}}))
    g = torch.Generator().manual_seed(seed)
    ranks = {s: torch.randint(0, 30, (users,), generator=g, dtype=torch.int32) for s in ("valid", "test")}
    torch.save(ranks, run_dir / "ranks.pt")
    return run_dir


def fake_study(root: Path) -> Path:
    """A study directory with two finished runs, ``a`` the baseline."""
    study = root / "t"
    cells = [{"run": f"{v}__s1", "variant": v, "group": {}, "point": {}, "seed": 1} for v in ("a", "b")]
    for cell in cells:
        fake_run(study / "runs" / cell["run"])
    info = {"name": "t", "mode": "grid", "metric": "mrr@10", "seeds": [1], "storage": "x",
            "spec": {"baseline": "a"}, "cells": cells}
    (study / "study.json").write_text(json.dumps(info))
    return study


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def one_line_error(err: str, path: Path) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: "), err
    assert "Traceback" not in err


# ------------------------------------------------------- truncated result files (fault 3)


@pytest.mark.parametrize("name", ["ranks.pt", "summary.json"])
def test_compare_truncated_file_is_one_line_error(tmp_path, capsys, name):
    a, b = fake_run(tmp_path / "a", 1), fake_run(tmp_path / "b", 2)
    assert main(["compare", str(a), str(b), "--bootstrap", "0"]) == 0
    capsys.readouterr()
    truncate(b / name)
    assert main(["compare", str(a), str(b), "--bootstrap", "0"]) == 2
    one_line_error(capsys.readouterr().err, b / name)


@pytest.mark.parametrize("name", ["ranks.pt", "summary.json", "study.json"])
def test_report_truncated_file_is_one_line_error(tmp_path, capsys, name):
    study = fake_study(tmp_path)
    args = ["study", "report", str(study), "--no-plots", "--bootstrap", "0"]
    assert main(args) == 0
    capsys.readouterr()
    path = study / name if name == "study.json" else study / "runs" / "b__s1" / name
    truncate(path)
    assert main(args) == 2
    one_line_error(capsys.readouterr().err, path)


# ------------------------------------------------------------ weights-only loading (fault 4)


class _OpensAFile:
    """Unpickling this calls ``open(path, "w")``: a stand-in for code in a hostile ranks.pt."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("command", ["compare", "report"])
def test_ranks_are_loaded_weights_only(tmp_path, capsys, monkeypatch, command):
    # With this set, torch.load without an explicit weights_only=True unpickles anything.
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    study = fake_study(tmp_path)
    a, b = study / "runs" / "a__s1", study / "runs" / "b__s1"
    marker = tmp_path / "code-ran"
    torch.save({"valid": torch.zeros(40, dtype=torch.int32), "test": _OpensAFile(marker)}, b / "ranks.pt")
    args = (["compare", str(a), str(b)] if command == "compare"
            else ["study", "report", str(study), "--no-plots"]) + ["--bootstrap", "0"]
    assert main(args) == 2
    assert not marker.exists()
    one_line_error(capsys.readouterr().err, b / "ranks.pt")


# ------------------------------------------------------------ credentials (fault 6)


@pytest.mark.parametrize(("url", "secrets"), [
    ("postgresql://me:hunter2@db.example:5432/studies", ["hunter2"]),
    ("postgresql://db.example/studies?user=me&password=hunter2&sslmode=require", ["hunter2"]),
    ("mysql+pymysql://me@db.example/s?passwd=hunter2;pwd=hunter3", ["hunter2", "hunter3"]),
    ("postgresql://me:hun@ter2@db.example/s?sslpassword=hunter3&token=hunter4&api_key=hunter5",
     ["hun@ter2", "ter2", "hunter3", "hunter4", "hunter5"]),
])
def test_redact_hides_every_credential_form(url, secrets):
    shown = redact(url)
    assert not any(s in shown for s in secrets), shown
    assert "db.example" in shown and "***" in shown


def test_redact_keeps_what_is_not_secret():
    assert redact("sqlite:////tmp/a/study.db") == "sqlite:////tmp/a/study.db"
    assert redact("postgresql://h:5432/db?sslmode=require") == "postgresql://h:5432/db?sslmode=require"
    assert redact("postgresql://me:pw1@h/db") == "postgresql://me:***@h/db"


def test_password_query_parameter_never_printed_or_stored(tmp_path, tiny_file, capsys, monkeypatch):
    spec = write_spec(tmp_path / "s.yaml", tiny_file, variants={"a": {"augmenter": "none"}}, seeds=[1])
    runs = tmp_path / "runs"

    def no_training(*args, **kwargs):
        raise RuntimeError("not training in this test")

    monkeypatch.setattr(training, "train", no_training)
    db = tmp_path / "ledger.db"
    url = f"sqlite:///{db}?password=hunter2&passwd=hunter3&pwd=hunter4"
    assert main(["study", str(spec), "--runs-dir", str(runs), "--no-report", "--storage", url]) == 1
    err = capsys.readouterr().err
    stored = json.loads((runs / "t" / "study.json").read_text())["storage"]
    assert f"ledger sqlite:///{db}?password=***&passwd=***&pwd=***" in err
    assert stored == f"sqlite:///{db}?password=***&passwd=***&pwd=***"

    bad = f"sqlite:///{tmp_path}/no/such/dir/x.db?password=hunter2"  # cannot open: the error names the URL
    assert main(["study", str(spec), "--runs-dir", str(runs), "--no-report", "--storage", bad]) == 2
    err += capsys.readouterr().err
    assert "password=***" in err.splitlines()[-1]
    stored += json.loads((runs / "t" / "study.json").read_text())["storage"]
    for secret in ("hunter2", "hunter3", "hunter4"):
        assert secret not in err and secret not in stored


# ------------------------------------------------------------ dead workers (fault 5)


def run_states(study_dir: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for t in sorted(ledger_trials(study_dir, "t"), key=lambda t: t.number):
        out.setdefault(t.user_attrs["run"], []).append(t.state.name)
    return out


def claimed_by_a_dead_process(tmp_path: Path, tiny_file: Path, plugins) -> tuple[Path, Path]:
    """A study whose only run was claimed by another `seqcl study` that was then SIGKILLed."""
    spec = write_spec(tmp_path / "s.yaml", tiny_file, variants={"a": {"augmenter": "none"}}, seeds=[1])
    plan = build_plan(load_spec(spec), plugins.registry, tmp_path / "runs")
    plan.study_dir.mkdir(parents=True)
    ledger = Ledger(default_url(plan.study_dir), "t", ["a__s1"], heartbeat_s=1)
    with ledger.lock():
        ledger.sync(plan.trained, plan.configs)
        assert ledger.claim({"a__s1"}) is not None  # ... and was killed before its heartbeat thread started
    return spec, plan.study_dir


def test_run_of_a_killed_process_is_retried_not_left_running(tmp_path, tiny_file, plugins, capsys):
    spec, study = claimed_by_a_dead_process(tmp_path, tiny_file, plugins)
    started = time.monotonic()
    rc = main(["study", str(spec), "--runs-dir", str(tmp_path / "runs"), "--no-report", "--heartbeat", "1"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert run_states(study) == {"a__s1": ["FAIL", "COMPLETE"]}  # not "0/1 done, 1 running" and exit 0
    assert "1/1 done" in err and time.monotonic() - started < 60


def test_exit_nonzero_naming_what_is_left(tmp_path, tiny_file, plugins, capsys, monkeypatch):
    spec, study = claimed_by_a_dead_process(tmp_path, tiny_file, plugins)
    monkeypatch.setattr(runner, "work", lambda *args, **kwargs: 0)  # a worker that gives up at once
    assert main(["study", str(spec), "--runs-dir", str(tmp_path / "runs"), "--no-report", "--heartbeat", "1"]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "not done: 1 of 1 runs" in last and "a__s1" in last and "running" in last


KILL_ONCE = '''
"""Test plugin: the first worker to train a run SIGKILLs itself mid-run (as the OOM killer would)."""
import os, signal
from pathlib import Path

import seqcl.training as training

_real = training.train
MARKER = Path({marker!r})


def _train(resolved, plugins, log=None):
    try:
        fd = os.open(MARKER, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return _real(resolved, plugins, log=log)
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)


training.train = _train
'''


# ------------------------------------------------------------ cwd not importable (fault 7)


SHADOW = '''
"""Shadows the standard library's multiprocessing: records that it was imported, then steps aside."""
import sys
from pathlib import Path

Path({marker!r}).write_text("imported from the current directory")
del sys.modules[__name__]
sys.path[:] = [p for p in sys.path if p not in ("", {cwd!r})]
import multiprocessing  # the real one, so that the worker still works
'''


@pytest.fixture(scope="module")
def worker_study(tmp_path_factory, tiny_file, plugins):
    """One ``--workers 2`` study (spawning costs seconds, so it is shared): the first worker to train
    the run is SIGKILLed, and the current directory holds a ``multiprocessing.py``."""
    root = tmp_path_factory.mktemp("workers")
    plug, cwd = root / "plug", root / "here"
    plug.mkdir()
    cwd.mkdir()
    killed, shadowed = root / "killed-pid", root / "shadow-imported"
    (plug / "seqcl_test_kill_once.py").write_text(KILL_ONCE.format(marker=str(killed)))
    (cwd / "multiprocessing.py").write_text(SHADOW.format(marker=str(shadowed), cwd=str(cwd)))
    spec = write_spec(root / "s.yaml", tiny_file, variants={"a": {"augmenter": "none"}}, seeds=[1])
    plan = build_plan(load_spec(spec), plugins.registry, root / "runs")
    lines: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(plug))  # the spawned workers take this process's sys.path
        mp.chdir(cwd)
        mp.delenv("PYTHONSAFEPATH", raising=False)
        outcome = run_study(plan, plugins, workers=2, plugin_modules=("seqcl_test_kill_once",), heartbeat_s=1,
                            poll_s=0.2, log=lines.append)
        env_after = os.environ.get("PYTHONSAFEPATH")
    return {"outcome": outcome, "plan": plan, "lines": lines, "killed": killed, "shadowed": shadowed,
            "env_after": env_after}


def test_sigkilled_worker_run_is_retried_in_the_same_invocation(worker_study):
    outcome, lines, killed = worker_study["outcome"], worker_study["lines"], worker_study["killed"]
    assert killed.is_file(), "no worker was killed: the test proves nothing"
    assert outcome.progress.done == 1 and not outcome.failed, lines
    assert run_states(worker_study["plan"].study_dir) == {"a__s1": ["FAIL", "COMPLETE"]}
    dead = next(t for t in ledger_trials(worker_study["plan"].study_dir, "t") if t.state.name == "FAIL")
    assert dead.user_attrs["worker"].endswith(f":{killed.read_text()}")  # the killed process's claim
    assert any("exited with code -9" in line for line in lines), lines


def test_workers_do_not_import_from_the_current_directory(worker_study):
    assert not worker_study["shadowed"].exists(), "a worker imported multiprocessing.py from the current directory"
    assert worker_study["outcome"].progress.done == 1
    assert worker_study["env_after"] is None  # the parent's environment is left as it was


def test_worker_threads_split_the_cores_unless_the_config_sets_them(monkeypatch):
    monkeypatch.setattr(runner.os, "cpu_count", lambda: 8)
    assert runner.worker_threads({"train": {"threads": 1}}, 2) == (0, "train.threads=1 each")
    assert runner.worker_threads({"train": {"epochs": 3}}, 2) == (4, "4 torch threads each")
    assert runner.worker_threads({}, 16) == (1, "1 torch threads each")
