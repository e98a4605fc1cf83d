"""Runs in stages: an ordered list of (objective, epochs, settings), each handing components to the next.

S3Rec pre-trains with masked item prediction and bidirectional attention,
then fine-tunes the same weights as a causal SASRec: two stages. The config's
``stages`` (or the encoder's ``default_stages``; format in
:mod:`seqcl.stagespec`) lists them. Each stage is an ordinary single run —
its own resolved config, checkpoints, early stopping, ``metrics.jsonl`` —
in a folder ``<i>-<name>`` inside the run's folder::

    runs/20261129-s3rec-builtin/
        config.yaml            the whole run, stages included
        1-pretrain/            a complete single run (config.yaml, last.pt, best.pt, …)
        2-finetune/
        summary.json           the last stage's results, and each stage's

A stage's config is the run's with the stage's objective, epochs and ``set``
applied (a replaced component's section dropped). Before stage k+1 builds its
optimiser, the components listed in stage k's ``handoff`` are loaded from
stage k's ``best.pt`` (or ``last.pt``'s weights: ``handoff_from: last``).

``--resume`` on the run's folder skips finished stages, continues the
interrupted one from its ``last.pt``, and starts the ones after it: a run
interrupted anywhere ends with the results of an uninterrupted one (CPU).
Every stage's config is resolved before anything trains, so a bad stage key
fails first.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any, Callable, NamedTuple

import torch

from seqcl import checkpoint
from seqcl.config import SELECTION_KEYS, Resolved, execution_changes, read_yaml, resolve
from seqcl.errors import ConfigError, NonFiniteLoss
from seqcl.runs import BEST, INCOMPLETE, LAST, RunDir, stage_folder_name

Log = Callable[[str], None]


class SingleRun(NamedTuple):
    """The single-run functions of :mod:`seqcl.training` (passed in: training imports this module)."""

    train: Callable[..., Any]  # train(resolved, plugins, log, init=None, init_label="")
    resume: Callable[..., Any]  # resume(path, plugins, log, overrides=None)
    new_run_dir: Callable[[Resolved, Any], RunDir]
    from_summary: Callable[[Path], Any]  # a finished run folder -> TrainResult


def stage_config(registry: Any, tree: dict[str, Any], stage: dict[str, Any]) -> Resolved:
    """The run's config with ``stage`` applied (no stages of its own)."""
    base = copy.deepcopy(tree)
    overrides = dict(stage["set"])
    if stage["objective"] is not None:
        overrides["objective"] = stage["objective"]
    if stage["epochs"] is not None:
        overrides["train.epochs"] = stage["epochs"]
    for key in SELECTION_KEYS:
        if key in overrides and str(overrides[key]) != str(base.get(key)):
            base.pop(str(base.get(key)), None)  # the replaced component's section
            if key == "augmenter":
                base.pop("terms", None)  # the new augmenter's default terms apply
                base.pop("loss", None)
            base[key] = str(overrides.pop(key))
    base["stages"] = []
    try:
        return resolve(registry, base, overrides=list(overrides.items()))
    except ConfigError as exc:  # name the stage, not --set, as the source of a bad key or value
        raise ConfigError(f"stage {stage['name']}: {str(exc).removeprefix('--set: ')}") from None


def is_staged(path: str | Path) -> bool:
    """Whether the run folder at ``path`` (``.incomplete`` or not) is a run in stages."""
    final = Path(path).with_name(Path(path).name.removesuffix(INCOMPLETE))
    config = RunDir(final).path / "config.yaml"
    return config.is_file() and bool(read_yaml(config).get("stages"))


def results_folder(path: str | Path) -> Path:
    """The folder holding a finished run's model and per-user results (``best.pt``, ``ids.json``,
    ``model.json``, ``ranks.pt``, ``metrics.jsonl``): the run's own, or for a run in stages its
    last stage's, whose results the run's ``summary.json`` reports. Every reader of those files
    (``seqcl.load_run``, ``seqcl plot``, ``seqcl compare``, a study's report) goes through it."""
    path = Path(path)
    config = path / "config.yaml"
    stages = read_yaml(config).get("stages") if config.is_file() else None
    return path / stage_folder_name(len(stages), stages[-1]) if stages else path


def train(resolved: Resolved, plugins: Any, log: Log, single: SingleRun) -> Any:
    """Train every stage of ``resolved`` in a new run folder; the last stage's result."""
    configs = [stage_config(plugins.registry, resolved.tree, s) for s in resolved.stages]
    return _continue(single.new_run_dir(resolved, plugins), resolved, configs, plugins, log, single)


def resume(path: str | Path, plugins: Any, log: Log, single: SingleRun,
           overrides: list[tuple[str, Any]] | None = None) -> Any:
    """Continue a run in stages from where it stopped (see the module doc); ``overrides``
    (checked by the caller: how the run executes) go into the run's config.yaml, and from
    it to the stage in progress and those after it."""
    overrides = list(overrides or [])
    run = RunDir.open(path, checkpoint=False)
    saved = read_yaml(run.path / "config.yaml")
    resolved = resolve(plugins.registry, saved, overrides)
    if execution_changes(resolved.tree, saved):
        run.write_text("config.yaml", resolved.to_yaml())
    configs = [stage_config(plugins.registry, resolved.tree, s) for s in resolved.stages]
    log(f"resuming {run.path} (a run in {len(configs)} stages)")
    return _continue(run, resolved, configs, plugins, log, single)


def _place(resolved: Resolved, parent: RunDir, name: str) -> None:
    """The stage's run folder: ``<parent>/<name>``."""
    resolved.run.dir, resolved.run.name = str(parent.path), name
    resolved.tree["run"].update(dir=str(parent.path), name=name)


def handoff(folder: Path, stage: dict[str, Any]) -> dict[str, Any]:
    """The components ``stage`` hands to the next one, read from its finished folder."""
    if stage["handoff_from"] == "best":
        state = torch.load(folder / BEST, map_location="cpu", weights_only=True)
    else:
        state = checkpoint.load(folder / LAST)["model"]
    missing = [name for name in stage["handoff"] if name not in state]
    if missing:
        raise ConfigError(f"stage {stage['name']}: handoff names {missing[0]!r}, which its checkpoint lacks "
                          f"(components: {', '.join(state)})")
    return {name: state[name] for name in stage["handoff"]}


def _continue(parent: RunDir, resolved: Resolved, configs: list[Resolved], plugins: Any, log: Log,
              single: SingleRun) -> Any:
    stages = resolved.stages
    results, previous = [], None
    try:
        for i, (stage, config) in enumerate(zip(stages, configs), 1):
            name = stage_folder_name(i, stage)
            _place(config, parent, name)
            final = parent.path / name
            incomplete = final.with_name(name + INCOMPLETE)
            label = f"stage {i}/{len(stages)} {stage['name']}"
            if (final / "summary.json").is_file():
                log(f"{label}: finished earlier")
                result = single.from_summary(final)
            elif (incomplete / LAST).is_file():
                log(f"{label}: resuming")
                # the stage's execution keys as the run's config gives them now (a stage's own set: wins)
                moved = execution_changes(config.tree, read_yaml(incomplete / "config.yaml"))
                result = single.resume(incomplete, plugins, log, moved)
            else:
                shutil.rmtree(incomplete, ignore_errors=True)  # stopped before its first epoch ended
                init = handoff(previous[0], previous[1]) if previous else None
                handed = f", starting from stage {i - 1}'s {', '.join(init)}" if init else ""
                log(f"{label}: objective {config.objective}, {config.train.epochs} epochs{handed}")
                result = single.train(config, plugins, log, init=init, init_label=label)
            results.append((name, result))
            previous = (result.run_dir, stage)
    except NonFiniteLoss as exc:
        parent.mark_failed(str(exc))
        raise
    except KeyboardInterrupt:
        log(f"interrupted; continue the whole run with  seqcl train --resume {parent.path}")
        raise
    last = results[-1][1]
    summary = json.loads((last.run_dir / "summary.json").read_text())
    summary["seconds"] = round(sum(r.seconds for _, r in results), 2)
    summary["stages"] = [{"name": name, "best_epoch": r.best_epoch, "epochs_run": r.epochs_run,
                          "valid": r.valid, "test": r.test, "seconds": round(r.seconds, 2)} for name, r in results]
    parent.write_json("summary.json", summary)
    final = parent.finish()
    return dataclasses.replace(last, run_dir=final, seconds=summary["seconds"])
