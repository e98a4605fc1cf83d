"""A study worker continues a leftover run in stages (its checkpoints are in its stages' folders)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from scipy import stats

from seqcl.cli import main
from seqcl.config import parse_assignment, resolve
from seqcl.plugins import load_plugins
from seqcl.training import train
from seqcl_study.runner import _resume_leftover

from conftest import TINY
from study_helpers import write_spec

STAGES = [{"name": "pre", "objective": "bce", "epochs": 1, "handoff_from": "last"},
          {"name": "fine", "objective": "ce", "epochs": 1}]


def test_leftover_run_in_stages_is_resumed_not_restarted(tmp_path, tiny_file):
    plugins = load_plugins()
    pairs = [parse_assignment(a) for a in TINY[1::2]]
    pairs += [("dataset", str(tiny_file)), ("run.dir", str(tmp_path)), ("run.name", "cell"), ("stages", STAGES)]
    resolved = resolve(plugins.registry, overrides=pairs)

    def stop(msg):
        if msg.startswith("stage 2/2 fine: objective"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(resolved, plugins, log=stop)
    lines = []
    result = _resume_leftover(tmp_path / "cell.incomplete", resolved, plugins, lines.append)
    assert result is not None and result.run_dir == tmp_path / "cell"
    assert "stage 1/2 pre: finished earlier" in lines and not any("removing the leftover" in x for x in lines)


def test_leftover_in_stages_resumes_with_this_invocations_threads(tmp_path, tiny_file):
    """The study was restarted with another train.threads (not in a run's identity): the stage in
    progress and those after it get it, and the run's config.yaml says so."""
    plugins = load_plugins()
    stages = [{"name": "pre", "objective": "bce", "epochs": 1, "handoff_from": "last"},
              {"name": "fine", "objective": "ce", "epochs": 2}]
    pairs = [parse_assignment(a) for a in TINY[1::2]]
    pairs += [("dataset", str(tiny_file)), ("run.dir", str(tmp_path)), ("run.name", "cell"), ("stages", stages)]
    epochs = []

    def stop(msg):  # after the fine-tuning's first epoch (its checkpoint is on disk)
        if msg.startswith("epoch   1 |"):
            epochs.append(msg)
            if len(epochs) == 2:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(resolve(plugins.registry, overrides=pairs + [("train.threads", 1)]), plugins, log=stop)
    assert (tmp_path / "cell.incomplete" / "2-fine.incomplete" / "last.pt").is_file()
    now = resolve(plugins.registry, overrides=pairs + [("train.threads", 2)])
    lines = []
    result = _resume_leftover(tmp_path / "cell.incomplete", now, plugins, lines.append)
    assert result is not None and "stage 2/2 fine: resuming" in lines
    assert "resuming with train.threads=2 (was 1)" in lines
    threads = {name: yaml.safe_load((tmp_path / "cell" / name / "config.yaml").read_text())["train"]["threads"]
               for name in (".", "1-pre", "2-fine")}
    assert threads == {".": 2, "1-pre": 1, "2-fine": 2}  # stage 1 finished before the restart


def test_report_compare_and_plot_read_a_run_in_stages_from_its_last_stage(tmp_path, tiny_file, capsys):
    """A run in stages keeps ranks.pt, ids.json and metrics.jsonl in its last stage's folder (its
    summary.json reports that stage): the report's tests and cost table, `seqcl compare` and
    `seqcl plot` read them there, as they read a plain run's from its own folder."""
    stages = [{"name": "pre", "objective": "bce", "epochs": 1, "handoff_from": "last"},
              {"name": "fine", "objective": "ce", "epochs": 2}]
    spec = write_spec(tmp_path / "s.yaml", tiny_file, seeds=[1], baseline="plain",
                      variants={"plain": {"augmenter": "none"}, "staged": {"augmenter": "none", "stages": stages}})
    assert main(["study", str(spec), "--runs-dir", str(tmp_path), "--set", f"data.cache_dir={tmp_path / 'c'}",
                 "--no-report"]) == 0
    study = tmp_path / "t"
    plain, staged = study / "runs" / "plain__s1", study / "runs" / "staged__s1"
    fine = staged / "2-fine"
    assert not (staged / "ranks.pt").exists() and (fine / "ranks.pt").is_file()
    capsys.readouterr()

    assert main(["study", "report", str(study), "--bootstrap", "0"]) == 0
    md = (study / "report.md").read_text()
    assert "no significance test" not in md
    with open(study / "report.csv") as fh:
        row = {r["label"]: r for r in csv.DictReader(fh)}["staged"]
    r_fine = torch.load(fine / "ranks.pt", weights_only=True)["test"].double().numpy()
    r_plain = torch.load(plain / "ranks.pt", weights_only=True)["test"].double().numpy()
    mrr = [(r < 10) / (r + 1) for r in (r_fine, r_plain)]
    p = 1.0 if not (mrr[0] - mrr[1]).any() else stats.ttest_rel(*mrr).pvalue
    assert float(row["mrr@10_p"]) == pytest.approx(p, rel=1e-9)
    seconds = [json.loads(x)["seconds"] for x in (fine / "metrics.jsonl").read_text().splitlines()]
    assert len(seconds) == 2
    cost = next(line for line in md.splitlines() if line.startswith("| staged |") and line.endswith(" s |"))
    assert [c.strip() for c in cost.strip("|").split("|")][3] == f"{np.mean(seconds):.1f}"
    assert "a run in stages: best epoch, epochs run and s / epoch of its last stage, wall time of all" in md
    curves = json.loads(Image.open(study / "plot-curves.png").text["Description"])
    assert curves["series"]["staged__s1"]["epoch"] == [1, 2]

    assert main(["compare", str(plain), str(staged), "--bootstrap", "0"]) == 0
    line = next(x.split() for x in capsys.readouterr().out.splitlines() if x.startswith("mrr@10"))
    assert float(line[2]) == pytest.approx(mrr[0].mean(), abs=5e-5)

    assert main(["plot", str(staged), "-o", str(tmp_path / "p.png")]) == 0
    data = json.loads(Image.open(tmp_path / "p.png").text["Description"])
    assert json.dumps(data).count("staged__s1/2-fine") >= 1
