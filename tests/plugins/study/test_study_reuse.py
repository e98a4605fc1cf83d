"""Reusing finished runs of other studies (``reuse:`` / ``--reuse``): an identical config is copied,
not trained; UNHASHED keys do not matter, the seed does; unfinished runs and bad folders are not used."""

import json
import shutil

import pytest
import yaml

import seqcl
import seqcl.training as training
from seqcl.cli import main
from seqcl.errors import ConfigError
from seqcl_study.plan import config_hash
from seqcl_study.reuse import finished_runs
from seqcl_study.spec import Launch, load_spec, parse_spec

from study_helpers import ledger_trials, write_spec


@pytest.fixture
def train_calls(monkeypatch):
    """The run names `seqcl.training.train` is called for (it still trains)."""
    real, calls = training.train, []

    def recording(resolved, plugins, log=None):
        calls.append(resolved.run.name)
        return real(resolved, plugins, log=log)

    monkeypatch.setattr(training, "train", recording)
    return calls


def test_identical_run_of_another_study_is_copied_not_trained(tmp_path, tiny_file, train_calls, capsys):
    root = tmp_path / "runs"
    spec_a = write_spec(tmp_path / "a.yaml", tiny_file, name="a", variants={"none": {"augmenter": "none"}},
                        seeds=[1, 2])
    assert main(["study", str(spec_a), "--runs-dir", str(root), "--no-report"]) == 0
    assert train_calls == ["none__s1", "none__s2"]
    source = root / "a" / "runs" / "none__s1"

    # B: the same config under another variant name, on 2 threads (an UNHASHED key), seeds 1 and 3
    base = {"train": {"epochs": 1, "batch_size": 128, "threads": 2}}
    spec_b = write_spec(tmp_path / "b.yaml", tiny_file, name="b", base=base,
                        variants={"plain": {"augmenter": "none"}}, seeds=[1, 3], reuse=["runs/a"])
    capsys.readouterr()
    assert main(["study", str(spec_b), "--runs-dir", str(root), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "1 runs to train, 1 to reuse (2 table cells)" in out
    assert "plain__s1" in out and f"(reused from {source})" in out
    assert "plain__s3" in out and out.count("reused from") == 1  # seed 3 matches neither seed of A
    assert not (root / "b").exists()  # a dry run writes nothing

    assert main(["study", str(spec_b), "--runs-dir", str(root)]) == 0
    err = capsys.readouterr().err
    assert train_calls[2:] == ["plain__s3"]  # only the run A lacks is trained
    assert f"plain__s1 reused from {source} (valid mrr@10 " in err

    copy = root / "b" / "runs" / "plain__s1"
    assert json.loads((copy / "reused_from.json").read_text()) == {"source": str(source), "study": "a",
                                                                   "run": "none__s1"}
    assert (copy / "summary.json").read_text() == (source / "summary.json").read_text()
    assert json.loads((copy / "cell.json").read_text())["study"] == "b"
    assert not (root / "b" / "runs" / "plain__s3" / "reused_from.json").exists()
    assert seqcl.load_run(copy).config["train"]["seed"] == 1  # checkpoints came along
    summary = json.loads((source / "summary.json").read_text())
    trials = {t.user_attrs["run"]: t for t in ledger_trials(root / "b", "b")}
    assert sorted(trials) == ["plain__s1", "plain__s3"] and all(t.state.name == "COMPLETE" for t in trials.values())
    assert trials["plain__s1"].value == summary["valid"]["mrr@10"]  # the ledger holds it like a trained run
    assert trials["plain__s1"].user_attrs["test"] == summary["test"]
    assert trials["plain__s1"].user_attrs["reused_from"] == str(source)
    assert "reused_from" not in trials["plain__s3"].user_attrs

    # the report takes it as an ordinary run of B, over both seeds, and says where it came from
    assert main(["study", "report", str(root / "b"), "--no-plots"]) == 0
    report = (root / "b" / "report.md").read_text()
    assert "**Reused runs (1),**" in report and "plain__s1 ← a/none__s1" in report
    row = next(line for line in report.splitlines() if line.startswith("| plain |"))
    assert row.split("|")[2].strip() == "2"  # seeds

    assert main(["study", str(spec_b), "--runs-dir", str(root), "--no-report"]) == 0  # rerun: nothing to do
    assert train_calls == ["none__s1", "none__s2", "plain__s3"]


def fake_run(study_dir, name, config, summary=True, world_size=None):
    """A run dir with just what finished_runs reads."""
    run = study_dir / "runs" / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    if summary:
        (run / "summary.json").write_text(json.dumps({} if world_size is None else {"world_size": world_size}))
    return run


def test_a_torchrun_run_is_reused_only_by_a_cell_with_its_process_count(tmp_path):
    config = {"dataset": "builtin", "train": {"seed": 1, "lr": 0.001}}
    study = tmp_path / "s"
    two = fake_run(study, "two", config, world_size=2)
    found = finished_runs([study])
    assert config_hash(config) not in found  # a one-process cell must not get a 2-rank run's results
    assert found == {config_hash(config, Launch(2)): two}


def test_only_finished_runs_count_and_unhashed_keys_are_ignored(tmp_path):
    config = {"dataset": "builtin", "train": {"seed": 1, "threads": 1, "lr": 0.001}, "run": {"name": "x"}}
    study = tmp_path / "s"
    done = fake_run(study, "done", config)
    fake_run(study, "running.incomplete", config)
    fake_run(study, "no-summary", {**config, "train": {"seed": 2}}, summary=False)
    (fake_run(study, "failed", {**config, "train": {"seed": 3}}) / "failed.json").write_text("{}")
    (fake_run(study, "broken", {**config, "train": {"seed": 4}}) / "config.yaml").write_text("a: [")
    found = finished_runs([study])
    assert found == {config_hash(config): done}
    threads = {**config, "train": {"seed": 1, "threads": 8, "lr": 0.001}, "run": {"name": "y", "dir": "z"}}
    assert config_hash(threads) in found  # train.threads and run.* are not part of a run's identity
    assert config_hash({**config, "train": {"seed": 2, "threads": 1, "lr": 0.001}}) not in found


def test_reuse_folders_resolve_and_bad_ones_exit_2(tmp_path, monkeypatch, capsys):
    other = tmp_path / "results" / "other"
    other.mkdir(parents=True)
    (other / "study.json").write_text("{}")
    (tmp_path / "plain").mkdir()
    studies = tmp_path / "studies"
    studies.mkdir()
    path = write_spec(studies / "s.yaml", "builtin", variants={"a": {"augmenter": "none"}},
                      reuse=["../results/other"])  # relative to the study file
    monkeypatch.chdir(tmp_path / "plain")
    assert load_spec(path).reuse == [str(other)]
    monkeypatch.chdir(tmp_path)
    # --reuse: relative to the cwd, added to the file's list; a folder named twice is searched once
    assert load_spec(path, reuse=["results/other", "results/../results/other"]).reuse == [str(other)]

    for args, message in (
            (["--reuse", "results/missing"], "--reuse: results/missing: no such folder"),
            (["--reuse", "plain"], "--reuse: plain: not a study folder (no study.json;")):
        assert main(["study", str(path), "--dry-run", *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: study {path}: {message}") and err.count("\n") == 1
    bad = write_spec(studies / "bad.yaml", "builtin", variants={"a": {}}, reuse=["../missing"])
    assert main(["study", str(bad), "--dry-run"]) == 2
    assert capsys.readouterr().err == f"error: study {bad}: reuse: ../missing: no such folder\n"

    with pytest.raises(ConfigError, match="reuse must be a list of study folders"):
        parse_spec({"name": "s", "base": {"dataset": "builtin"}, "variants": {"a": {}}, "reuse": [3]}, "s.yaml")
    with pytest.raises(ConfigError, match="reuse is for grid studies"):
        parse_spec({"name": "s", "base": {"dataset": "builtin"}, "variants": {"a": {}}, "trials": 2,
                    "search": {"loss.tau": [0.1, 1]}}, "s.yaml", reuse=[str(other)])
