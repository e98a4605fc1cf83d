"""The ledger: resume (finished runs are never rerun, failed ones are retried), stale runs,
changed configs, and two processes sharing one SQLite study without running anything twice."""

import json
import os
import sqlite3
import subprocess
import sys
import time

import pytest
import yaml

import seqcl.training as training
from seqcl.cli import main
from seqcl.plugins import load_plugins
from seqcl_study.ledger import Ledger, default_url
from seqcl_study.plan import build_plan
from seqcl_study.runner import run_study
from seqcl_study.spec import load_spec

from study_helpers import ledger_trials, write_spec


@pytest.fixture(scope="module")
def plugins():
    return load_plugins()


def states(study_dir):
    out = {}
    for t in sorted(ledger_trials(study_dir, "t"), key=lambda t: t.number):
        out.setdefault(t.user_attrs["run"], []).append(t.state.name)
    return out


def test_a_study_grows_seeds_first_then_a_new_variant(tmp_path, tiny_file, monkeypatch, capsys):
    """``--seeds 1`` trains seed 1 of every variant; later calls add the other seeds and a variant
    added to the file (study.json always lists the whole file, so the report counts what is missing)."""
    spec = write_spec(tmp_path / "s.yaml", tiny_file, variants={"a": {"augmenter": "none"}}, seeds=[1, 2])
    study = tmp_path / "runs" / "t"
    real, calls = training.train, []

    def counted(resolved, plugins, log=None):
        calls.append(resolved.run.name)
        return real(resolved, plugins, log=log)

    monkeypatch.setattr(training, "train", counted)
    args = ["study", str(spec), "--runs-dir", str(tmp_path / "runs"), "--no-report"]
    assert main([*args, "--seeds", "1"]) == 0 and calls == ["a__s1"]
    assert "[study t] 1 run (1 not selected now): 0 done" in capsys.readouterr().err
    cells = json.loads((study / "study.json").read_text())["cells"]
    assert [c["run"] for c in cells] == ["a__s1", "a__s2"]
    assert main([*args, "--seeds", "1"]) == 0 and calls == ["a__s1"]  # done: nothing trains
    assert main(args) == 0 and calls == ["a__s1", "a__s2"]
    write_spec(spec, tiny_file, variants={"a": {"augmenter": "none"}, "b": {"augmenter": "crop"}}, seeds=[1, 2])
    capsys.readouterr()
    assert main([*args, "--variants", "b", "--seeds", "2"]) == 0 and calls[2:] == ["b__s2"]
    assert "[study t] 1 run (3 not selected now): 0 done" in capsys.readouterr().err
    assert main(args) == 0 and calls[3:] == ["b__s1"]
    assert states(study) == {r: ["COMPLETE"] for r in ("a__s1", "a__s2", "b__s2", "b__s1")}
    capsys.readouterr()


def test_resume_skips_finished_retries_failed(tmp_path, tiny_file, monkeypatch, capsys):
    spec = write_spec(tmp_path / "s.yaml", tiny_file, variants={"a": {"augmenter": "none"}}, seeds=[1, 2, 3])
    study = tmp_path / "runs" / "t"
    real, calls = training.train, []

    def flaky(resolved, plugins, log=None):
        calls.append(resolved.run.name)
        if resolved.run.name == "a__s2" and calls.count("a__s2") == 1:
            (study / "runs" / "a__s2.incomplete").mkdir(parents=True)  # as a crash mid-training leaves it
            raise RuntimeError("boom")
        return real(resolved, plugins, log=log)

    monkeypatch.setattr(training, "train", flaky)
    args = ["study", str(spec), "--runs-dir", str(tmp_path / "runs"), "--no-report"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert calls == ["a__s1", "a__s2", "a__s3"]
    assert "failed: a__s2: RuntimeError: boom" in err and "2/3 done" in err
    assert states(study) == {"a__s1": ["COMPLETE"], "a__s2": ["FAIL"], "a__s3": ["COMPLETE"]}

    assert main(args) == 0  # resume: only the failed run trains again
    assert calls[3:] == ["a__s2"]
    assert states(study)["a__s2"] == ["FAIL", "COMPLETE"]
    assert sorted(p.name for p in (study / "runs").iterdir()) == ["a__s1", "a__s2", "a__s3"]  # leftover removed
    for t in ledger_trials(study, "t"):
        if t.state.name == "COMPLETE":
            summary = json.loads((study / "runs" / t.user_attrs["run"] / "summary.json").read_text())
            assert t.user_attrs["test"] == summary["test"] and t.value == summary["valid"]["mrr@10"]

    assert main(args) == 0  # everything finished: nothing trains
    assert len(calls) == 4
    capsys.readouterr()

    (study / "study.db").unlink()  # ledger lost: finished run dirs are reused, not retrained
    assert main(args) == 0
    assert len(calls) == 4 and "reusing finished run dir" in (study / "logs" / "a__s1.log").read_text()

    # an option added to seqcl since a run was made (absent from its stored config) is not a change
    t0 = next(t for t in ledger_trials(study, "t") if t.state.name == "COMPLETE")
    older = {k: v for k, v in t0.user_attrs["config"].items() if k != "train.patience"}
    with sqlite3.connect(study / "study.db") as db:  # finished trials are read-only through Optuna
        for key, value in (("config", older), ("config_hash", "0ld")):
            db.execute("UPDATE trial_user_attributes SET value_json = ? WHERE trial_id = ? AND key = ?",
                       (json.dumps(value), t0._trial_id, key))
    assert main(args) == 0 and len(calls) == 4
    assert "1 run(s) predate options added or removed since (train.patience)" in capsys.readouterr().err

    assert main([*args, "--set", "train.epochs=2"]) == 2  # the study changed under finished runs
    err = capsys.readouterr().err
    assert "run a__s1 is complete" in err and "train.epochs: 1 → 2" in err and "--name" in err


def test_stale_running_run_is_failed_and_retried(tmp_path, tiny_file, plugins):
    spec = write_spec(tmp_path / "s.yaml", tiny_file, variants={"a": {"augmenter": "none"}}, seeds=[1])
    plan = build_plan(load_spec(spec), plugins.registry, tmp_path)
    plan.study_dir.mkdir(parents=True)
    ledger = Ledger(default_url(plan.study_dir), "t", ["a__s1"], heartbeat_s=1)
    with ledger.lock():
        ledger.sync(plan.trained, plan.configs)
        claim = ledger.claim({"a__s1"})  # a worker claims the run, beats once, and is killed
    ledger.storage.record_heartbeat(claim.trial_id)
    with ledger.lock():
        assert ledger.claim({"a__s1"}) is None  # nobody else may take it while it runs
    time.sleep(6.5)  # grace period: 4 heartbeats (+ margin: timestamps are coarse, the machine is shared)
    outcome = run_study(plan, plugins, heartbeat_s=1, log=lambda m: None)
    assert outcome.progress.done == 1 and not outcome.failed
    assert states(plan.study_dir) == {"a__s1": ["FAIL", "COMPLETE"]}


def test_interrupted_runs_keep_their_place_in_the_queue(tmp_path, tiny_file, plugins):
    """A run stopped mid-way is enqueued again behind the never-started ones; it must still be
    taken in the order runs were first tried, or every restart would leave two more
    half-trained runs behind (and a run stopped twice would fall behind one stopped once)."""
    from optuna.trial import TrialState

    spec = write_spec(tmp_path / "s.yaml", tiny_file, variants={"a": {"augmenter": "none"}}, seeds=[1, 2, 3])
    plan = build_plan(load_spec(spec), plugins.registry, tmp_path)
    plan.study_dir.mkdir(parents=True)
    runs = {"a__s1", "a__s2", "a__s3"}
    ledger = Ledger(default_url(plan.study_dir), "t", sorted(runs))

    def stop(claim):  # Ctrl-C: the trial fails, and the next call enqueues the run again
        ledger.storage.set_trial_state_values(claim.trial_id, TrialState.FAIL)

    with ledger.lock():
        ledger.sync(plan.trained, plan.configs)
        s1, s2 = ledger.claim(runs), ledger.claim(runs)
        stop(s1), stop(s2)
        assert ledger.sync(plan.trained, plan.configs) == 2
        stop(ledger.claim(runs))  # a__s1 again: stopped twice, enqueued last of all
        assert ledger.sync(plan.trained, plan.configs) == 1
        assert [ledger.claim(runs).run for _ in range(3)] == ["a__s1", "a__s2", "a__s3"]


def test_two_processes_share_one_sqlite_study_each_run_once(tmp_path, tiny_file):
    seeds = [1, 2, 3, 4]
    spec = write_spec(tmp_path / "s.yaml", tiny_file, variants={"a": {"augmenter": "none"}}, seeds=seeds)
    cmd = [sys.executable, "-m", "seqcl", "study", str(spec), "--runs-dir", str(tmp_path / "runs"), "--no-report"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
             for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    study = tmp_path / "runs" / "t"
    trials = ledger_trials(study, "t")
    runs = [t.user_attrs["run"] for t in trials]
    assert sorted(runs) == sorted(f"a__s{s}" for s in seeds)  # enqueued once, despite two concurrent syncs
    assert all(t.state.name == "COMPLETE" for t in trials)
    assert sorted(p.name for p in (study / "runs").iterdir()) == sorted(runs)  # no a__s1-2: nothing ran twice
    finished = [line.split()[2] for _, err in outputs for line in err.splitlines() if " finished in " in line]
    assert sorted(finished) == sorted(runs)
    workers = {t.user_attrs["worker"] for t in trials}
    assert len(workers) == 2  # both processes worked


def interrupt_training_after_epoch_1(monkeypatch) -> list[str]:
    """Every ``training.train`` call stops (Ctrl-C) after epoch 1; returns the list of run names trained."""
    real, calls = training.train, []

    def interrupted(resolved, plugins, log=None):
        calls.append(resolved.run.name)

        def stop_after_epoch_1(msg):
            log(msg)
            if msg.startswith("epoch   1 |"):
                raise KeyboardInterrupt

        return real(resolved, plugins, log=stop_after_epoch_1)

    monkeypatch.setattr(training, "train", interrupted)
    return calls


def test_interrupted_run_resumes_from_its_checkpoint(tmp_path, tiny_file, monkeypatch, capsys):
    """A run stopped after epoch 1 continues at epoch 2 in the next `seqcl study`, not at epoch 1."""
    spec = write_spec(tmp_path / "s.yaml", tiny_file, variants={"a": {"augmenter": "none"}}, seeds=[1],
                      base={"train": {"epochs": 3, "batch_size": 128, "threads": 1}})
    study = tmp_path / "runs" / "t"
    calls = interrupt_training_after_epoch_1(monkeypatch)
    args = ["study", str(spec), "--runs-dir", str(tmp_path / "runs"), "--no-report"]
    assert main(args) == 130
    assert (study / "runs" / "a__s1.incomplete" / "last.pt").is_file()
    assert main(args + ["--set", "train.threads=2"]) == 0  # restarted on a machine with more cores
    assert calls == ["a__s1"]  # the second attempt resumed instead of training from scratch
    saved = yaml.safe_load((study / "runs" / "a__s1" / "config.yaml").read_text())
    assert saved["train"]["threads"] == 2  # … with this invocation's threads, not the leftover's
    log = (study / "logs" / "a__s1.log").read_text()
    assert "continues on train.device" not in log  # same device: nothing to say
    assert "resuming" in log and "after epoch 1" in log
    records = [json.loads(x) for x in (study / "runs" / "a__s1" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    capsys.readouterr()


def test_a_leftover_of_a_gpu_machine_resumes_here_instead_of_starting_afresh(tmp_path, tiny_file, monkeypatch,
                                                                           capsys):
    """A run left by a study on a GPU machine (its config.yaml says cuda) continues on this CPU
    machine from its checkpoint: not refused, not removed and retrained."""
    spec = write_spec(tmp_path / "s.yaml", tiny_file, variants={"a": {"augmenter": "random"}}, seeds=[1],
                      base={"train": {"epochs": 2, "batch_size": 128, "threads": 1}})
    study = tmp_path / "runs" / "t"
    calls = interrupt_training_after_epoch_1(monkeypatch)
    args = ["study", str(spec), "--runs-dir", str(tmp_path / "runs"), "--no-report"]
    assert main(args) == 130
    leftover = study / "runs" / "a__s1.incomplete"
    tree = yaml.safe_load((leftover / "config.yaml").read_text())
    tree["train"]["device"] = "cuda"  # as if it had trained on a GPU
    (leftover / "config.yaml").write_text(yaml.safe_dump(tree))
    assert main(args) == 0
    assert calls == ["a__s1"]  # resumed, not trained afresh
    log = (study / "logs" / "a__s1.log").read_text()
    assert f"{leftover} continues on train.device=cpu, not cuda" in log and "after epoch 1" in log
    assert "starting it afresh" not in log
    records = [json.loads(x) for x in (study / "runs" / "a__s1" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    capsys.readouterr()


def test_a_leftover_resumes_on_the_invoking_device_and_says_so(tmp_path):
    """A run left on a GPU machine continues where the study runs now (train.device is an execution key)."""
    from seqcl_study.runner import execution_settings

    leftover = tmp_path / "a__s1.incomplete"
    leftover.mkdir()
    (leftover / "config.yaml").write_text(yaml.safe_dump({"train": {"device": "cuda", "threads": 16, "lr": 0.001}}))
    lines: list[str] = []
    now = {"train": {"device": "cpu", "threads": 1, "lr": 0.001}}
    assert execution_settings(now, leftover, lines.append) == [("train.threads", 1), ("train.device", "cpu")]
    assert lines == [f"{leftover} continues on train.device=cpu, not cuda (its later epochs draw from that "
                     "device's random streams)"]
