"""A study's results as data: runs, rows (arms), tables, the report.

Shared by :mod:`seqcl_study.report` (which builds and renders them) and
:mod:`seqcl_study.plots` (which draws them), so neither imports the other's
module to get the types.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from seqcl.stages import results_folder

from .files import load_ranks, read_jsonl
from .plan import format_value
from .stats import Comparison, SeedComparison


@dataclass
class RunResult:
    """One finished run of the study."""

    run: str
    variant: str
    group: dict[str, Any]
    point: dict[str, Any]
    seed: int
    run_dir: Path
    summary: dict[str, Any]

    @cached_property
    def folder(self) -> Path:
        """Where its ``ranks.pt`` and ``metrics.jsonl`` are: a run in stages, its last stage's folder
        (whose results ``summary.json`` reports). Read once: the report asks for it per row and per plot."""
        return results_folder(self.run_dir)

    def ranks(self, split: str) -> np.ndarray:
        """FileNotFoundError if the run saved no ranks; a DataError naming a truncated file."""
        return load_ranks(self.folder / "ranks.pt", split)

    def history(self) -> list[dict[str, Any]]:
        """The per-epoch records of ``metrics.jsonl`` (empty when the file is absent)."""
        path = self.folder / "metrics.jsonl"
        return read_jsonl(path) if path.is_file() else []

    def seconds_per_epoch(self) -> float:
        """Mean wall seconds of an epoch (training and validation), from ``metrics.jsonl``; NaN without it.
        A run in stages: its last stage's epochs, as ``epochs_run`` and ``best_epoch`` are."""
        seconds = [float(r["seconds"]) for r in self.history() if "seconds" in r]
        return float(np.mean(seconds)) if seconds else math.nan


@dataclass
class Arm:
    """One row: a variant at one grid point (or one search trial), over its seeds."""

    group: dict[str, Any]
    variant: str
    point: dict[str, Any]
    runs: list[RunResult]
    label: str
    is_baseline: bool = False
    comparisons: dict[str, Comparison] = field(default_factory=dict)
    over_seeds: SeedComparison | None = None  # the headline metric against the baseline, paired over seeds
    reference: dict[str, Any] | None = None  # published numbers for this variant (the study's references:)

    def summary_values(self, key: str) -> list[float]:
        """A number of each run's ``summary.json`` (``best_epoch``, ``epochs_run``, ``seconds``)."""
        return [float(r.summary[key]) for r in self.runs if key in r.summary]

    def values(self, metric: str, split: str) -> list[float]:
        return [float(r.summary[split][metric]) for r in self.runs]

    def mean(self, metric: str, split: str) -> float:
        return float(np.mean(self.values(metric, split)))

    def std(self, metric: str, split: str) -> float:
        v = self.values(metric, split)
        return float(np.std(v, ddof=1)) if len(v) > 1 else math.nan

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.runs]


@dataclass
class Table:
    """The rows of one top-level grid point."""

    group: dict[str, Any]
    arms: list[Arm]
    baseline: Arm | None = None


@dataclass
class Report:
    name: str
    mode: str
    split: str
    metric: str  # headline metric
    metrics: list[str]
    tables: list[Table]
    missing: list[str]
    test: str
    n_boot: int
    boot_seed: int
    study_dir: Path
    notes: list[str] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)
    #: run dir name → its ``reused_from.json`` (runs copied from another study, not trained in this one)
    reused: dict[str, dict[str, Any]] = field(default_factory=dict)


def group_label(group: dict[str, Any]) -> str:
    """``key=value, …`` for row labels and headings (floats to 4 significant digits)."""
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={format_value(v)}" for k, v in group.items())
