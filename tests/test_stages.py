"""Runs in stages: each stage's config, the hand-off between stages, --resume across the boundary."""

from __future__ import annotations

import json

import pytest
import torch

import seqcl.training as training
from seqcl.config import parse_assignment, resolve
from seqcl.errors import ConfigError
from seqcl.plugins import load_plugins
from seqcl.stages import stage_config
from seqcl.stagespec import parse_stages
from seqcl.training import resume, train

from conftest import TINY
from test_resume import interrupt_after, records

STAGES = [
    {"name": "pre", "objective": "bce", "epochs": 2, "set": {"train.patience": 5}, "handoff_from": "last"},
    {"name": "fine", "objective": "ce", "epochs": 2, "set": {"sasrec": {"dropout": 0.2}}},
]


@pytest.fixture(scope="module")
def plugins():
    return load_plugins()


def config(plugins, run_dir, dataset, stages=STAGES):
    pairs = [parse_assignment(a) for a in TINY[1::2]]
    pairs += [("dataset", str(dataset)), ("run.dir", str(run_dir)), ("stages", stages)]
    return resolve(plugins.registry, overrides=pairs)


def quiet(msg: str) -> None:
    pass


def test_stage_configs(plugins, tmp_path, tiny_file):
    r = config(plugins, tmp_path, tiny_file)
    assert [s["name"] for s in r.stages] == ["pre", "fine"]
    pre, fine = (stage_config(plugins.registry, r.tree, s) for s in r.stages)
    assert (pre.objective, pre.train.epochs, pre.train.patience, pre.encoder_options.dropout) == ("bce", 2, 5, 0.5)
    assert (fine.objective, fine.train.epochs, fine.encoder_options.dropout) == ("ce", 2, 0.2)
    assert "bce" in pre.tree and "ce" not in pre.tree  # the replaced objective's section is dropped
    assert pre.stages == [] and pre.tree["stages"] == []  # saved as such: no default stages on resume


def test_runs_without_stages_keep_their_config(plugins, tmp_path, tiny_file):
    """Configs of runs made before stages existed resolve to the same tree (--resume compares them)."""
    pairs = [parse_assignment(a) for a in TINY[1::2]] + [("dataset", str(tiny_file))]
    assert "stages" not in resolve(plugins.registry, overrides=pairs).tree


@pytest.mark.parametrize("stages, message", [
    ([{"objective": "ce"}], r"stages\[0\].name"),
    ([{"name": "a"}, {"name": "a"}], r"stages\[1\].name must be a unique"),
    ([{"name": "a", "set": {"train.epochs": 3}}], r"train.epochs is the stage's own field; write epochs"),
    ([{"name": "a", "handoff_from": "middle"}], r"handoff_from must be best or last"),
    ([{"name": "a", "epochs": 0}], r"epochs must be an integer >= 1"),
    ([{"name": "a", "colour": 1}], r"unknown key 'colour'"),
    ("pretrain", r"stages must be a list"),
])
def test_bad_stages_one_line(stages, message):
    with pytest.raises(ConfigError, match=message):
        parse_stages(stages)


def test_bad_stage_key_fails_before_anything_trains(plugins, tmp_path, tiny_file):
    r = config(plugins, tmp_path, tiny_file, stages=[{"name": "a", "set": {"sasrec.colour": 1}}])
    with pytest.raises(ConfigError, match="^stage a: unknown key 'sasrec.colour'"):
        train(r, plugins, log=quiet)
    assert not list(tmp_path.iterdir())  # no run folder either


def test_fine_tuning_starts_from_the_handed_off_weights(plugins, tmp_path, tiny_file, monkeypatch):
    starts = []
    real = training._fit

    def fit(model, *args, **kwargs):
        starts.append({k: v.clone() for k, v in model.encoder.state_dict().items()})
        return real(model, *args, **kwargs)

    monkeypatch.setattr(training, "_fit", fit)
    res = train(config(plugins, tmp_path, tiny_file), plugins, log=quiet)
    pre_last = torch.load(res.run_dir / "1-pre" / "last.pt", weights_only=True)["model"]["encoder"]
    assert len(starts) == 2
    assert all(torch.equal(starts[1][k], pre_last[k]) for k in pre_last)  # handoff_from: last
    assert not all(torch.equal(starts[0][k], pre_last[k]) for k in pre_last)  # and pre-training moved them
    summary = json.loads((res.run_dir / "summary.json").read_text())
    assert [s["name"] for s in summary["stages"]] == ["1-pre", "2-fine"]
    fine = json.loads((res.run_dir / "2-fine" / "summary.json").read_text())
    assert summary["test"] == fine["test"] == res.test
    # the Python API opens a run in stages as its last stage's model
    from seqcl.api import load_run

    items = json.loads((res.run_dir / "2-fine" / "ids.json").read_text())["items"][:3]
    whole, last = load_run(res.run_dir, plugins=plugins), load_run(res.run_dir / "2-fine", plugins=plugins)
    assert whole.recommend([items], k=5) == last.recommend([items], k=5)
    assert whole.metrics == last.metrics


@pytest.mark.parametrize("stop", ["pre", "fine", "between"])
def test_resume_across_stages_is_exact(plugins, tmp_path, tiny_file, stop):
    full = train(config(plugins, tmp_path / "a", tiny_file), plugins, log=quiet)
    r = config(plugins, tmp_path / "b", tiny_file)
    if stop == "between":  # stage 1 finished, stage 2 not started
        log = _interrupt_on("stage 2/2 fine: objective")
    else:  # after epoch 1 of the stage
        log = _interrupt_on(f"epoch   1 |", skip=0 if stop == "pre" else 1)
    with pytest.raises(KeyboardInterrupt):
        train(r, plugins, log=log)
    (path,) = (tmp_path / "b").glob("*.incomplete")
    assert f"interrupted; continue the whole run with  seqcl train --resume {path}" in log.lines
    resumed = resume(path, plugins, log=quiet)
    for stage in ("1-pre", "2-fine"):
        assert records(resumed.run_dir / stage) == records(full.run_dir / stage)
    assert (resumed.valid, resumed.test, resumed.best_epoch) == (full.valid, full.test, full.best_epoch)
    with pytest.raises(ConfigError, match="finished"):
        resume(resumed.run_dir, plugins, log=quiet)


def _interrupt_on(prefix: str, skip: int = 0):
    lines: list[str] = []
    seen = {"n": 0}

    def log(msg: str) -> None:
        lines.append(msg)
        if msg.startswith(prefix):
            seen["n"] += 1
            if seen["n"] > skip:
                raise KeyboardInterrupt

    log.lines = lines  # type: ignore[attr-defined]
    return log
