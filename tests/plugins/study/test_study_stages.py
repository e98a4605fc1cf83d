"""A study worker continues a leftover run in stages (its checkpoints are in its stages' folders)."""

from __future__ import annotations

import pytest
import yaml

from seqcl.config import parse_assignment, resolve
from seqcl.plugins import load_plugins
from seqcl.training import train
from seqcl_study.runner import _resume_leftover

from conftest import TINY

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
