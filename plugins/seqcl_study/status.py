"""``seqcl study status runs/<study>``: where every run of a long study stands, read from disk.

Why: a study on a small machine takes days and is stopped and resumed many times;
the report counts finished runs only. This reads each run's folder — finished
(``<run>/summary.json``), in progress (``<run>.incomplete/metrics.jsonl``: resumable from
its last epoch), started (a ``<run>.incomplete`` without an epoch yet) or not started —
and says how far each one is from early stopping (epochs since its best, against its
patience). A run in stages (S3Rec: pre-training, then fine-tuning) is read from its
latest stage's folder, and says which stage that is. Nothing is trained, locked or written,
so it is safe while the study runs.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seqcl.errors import ConfigError
from seqcl.runs import stage_folder_name

from .files import read_json_dict, read_jsonl, read_yaml


@dataclass
class RunStatus:
    """One cell of a study as its folder shows it."""

    run: str
    state: str  # finished | failed | in progress | started (no epoch saved) | not started | same as <run>
    epochs: int = 0
    best: float | None = None  # best valid headline metric so far
    best_epoch: int = 0
    patience: int | None = None
    seconds_per_epoch: float | None = None  # median of the last five epochs (validation included)
    rss_mb: float | None = None  # resident memory after its last epoch
    stage: str | None = None  # a run in stages: the stage read, "2/2 finetune"

    @property
    def since_best(self) -> int:
        return self.epochs - self.best_epoch


def run_status(runs_dir: Path, cell: dict[str, Any], metric: str) -> RunStatus:
    """The status of ``cell`` (a ``study.json`` cell) from ``runs_dir/<run>[.incomplete]``."""
    name = cell["run"]
    if cell.get("same_as"):
        return RunStatus(name, f"same as {cell['same_as']}")
    done, partial = runs_dir / name, runs_dir / f"{name}.incomplete"
    folder = done if done.is_dir() else partial if partial.is_dir() else None
    if folder is None:
        return RunStatus(name, "not started")
    if (folder / "failed.json").is_file():
        state = "failed"
    elif folder == done and (done / "summary.json").is_file():
        state = "finished"
    else:
        state = "in progress"
    index, stage, metrics_folder = _latest_stage(folder)
    records = read_jsonl(metrics_folder / "metrics.jsonl") if (metrics_folder / "metrics.jsonl").is_file() else []
    if state == "in progress" and not records and index <= 1:
        state = "started"  # running its first epoch, or stopped before one was saved: nothing to resume
    status = RunStatus(name, state, stage=stage)
    scored = [r for r in records if metric in (r.get("valid") or {})]
    if scored:
        top = max(scored, key=lambda r: r["valid"][metric])  # the first of equal scores: early stopping's best
        status.epochs, status.best, status.best_epoch = int(records[-1]["epoch"]), top["valid"][metric], top["epoch"]
        seconds = [float(r["seconds"]) for r in records[-5:] if "seconds" in r]
        status.seconds_per_epoch = statistics.median(seconds) if seconds else None
        status.rss_mb = records[-1].get("rss_mb")
    if (metrics_folder / "config.yaml").is_file():
        status.patience = (read_yaml(metrics_folder / "config.yaml").get("train") or {}).get("patience")
    return status


def _latest_stage(folder: Path) -> tuple[int, str | None, Path]:
    """``(i, "i/n name", its folder)`` of the last stage a run in stages has begun; ``(0, None, folder)``
    for a run without stages or one that has begun none."""
    config = read_yaml(folder / "config.yaml") if (folder / "config.yaml").is_file() else {}
    stages = config.get("stages") or []
    for i in range(len(stages), 0, -1):
        name = stage_folder_name(i, stages[i - 1])
        for candidate in (folder / name, folder / f"{name}.incomplete"):
            if candidate.is_dir():
                return i, f"{i}/{len(stages)} {stages[i - 1]['name']}", candidate
    return 0, None, folder


def study_status(study_dir: str | Path) -> tuple[dict[str, Any], list[RunStatus]]:
    """``study.json`` and the status of each of its cells, in the study's order."""
    study_dir = Path(study_dir)
    path = study_dir / "study.json"
    if not path.is_file():
        raise ConfigError(f"{study_dir}: not a study directory (no study.json; run `seqcl study FILE` first)")
    info = read_json_dict(path, ("name", "mode", "metric", "cells"))
    if info["mode"] == "search":
        cells = [{"run": p.name.removesuffix(".incomplete")} for p in sorted((study_dir / "runs").glob("*"))
                 if p.is_dir()]
    else:
        cells = info["cells"]
    return info, [run_status(study_dir / "runs", cell, info["metric"]) for cell in cells]


def format_status(info: dict[str, Any], runs: list[RunStatus]) -> str:
    """A table (one row per run) and a count line."""
    metric = info["metric"]
    head = f"| run | state | epochs | best valid {metric} (epoch) | since best / patience | s / epoch | RSS MiB |"
    lines = [f"study {info['name']}", "", head, "|---|---|---:|---:|---:|---:|---:|"]
    for s in runs:
        best = f"{s.best:.4f} ({s.best_epoch})" if s.best is not None else "–"
        since = f"{s.since_best} / {s.patience if s.patience is not None else '?'}" if s.best is not None else "–"
        secs = f"{s.seconds_per_epoch:.0f}" if s.seconds_per_epoch is not None else "–"
        rss = f"{s.rss_mb:.0f}" if s.rss_mb is not None else "–"
        state = f"{s.state}, stage {s.stage}" if s.stage else s.state
        lines.append(f"| {s.run} | {state} | {s.epochs or '–'} | {best} | {since} | {secs} | {rss} |")
    counts: dict[str, int] = {}
    for s in runs:
        key = "same config as another run" if s.state.startswith("same as") else s.state
        counts[key] = counts.get(key, 0) + 1
    lines += ["", ", ".join(f"{n} {state}" for state, n in counts.items())]
    return "\n".join(lines) + "\n"
