"""``seqcl plot RUN_DIR…``: learning curves from ``metrics.jsonl``, several runs overlaid, in one PNG.

One panel for the validation metric (``train.metric`` of the first run's
``config.yaml`` unless ``--metric``) and one per loss part (``main`` and each
loss term, unweighted, as logged), against the epoch. Each run keeps one colour
in every panel; a run that lacks a loss term simply has no line in its panel.
Runs still training (``<name>.incomplete``) are read as they are; a run in
stages is read from its last stage's folder (the stage its results come from).

As for the study plots (:mod:`seqcl_study.figure`), the plotted numbers are
embedded as JSON in the PNG's ``Description`` text chunk, so a test (or a
reader) can check the figure against ``metrics.jsonl`` without reading pixels.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from seqcl.errors import DataError
from seqcl.runs import INCOMPLETE
from seqcl.stages import results_folder

from .figure import save_png


@dataclass
class Curves:
    """One run's per-epoch records, as plotted."""

    label: str
    epochs: list[int]
    valid: dict[str, list[float]]
    losses: dict[str, list[float | None]] = field(default_factory=dict)
    metric: str = ""  # the run's train.metric (config.yaml), "" if unknown


def read_curves(run_dir: str | Path) -> Curves:
    """The curves of one run folder; a folder without records is a one-line :class:`DataError`."""
    path = Path(run_dir)
    if not path.is_dir():
        raise DataError(f"{run_dir}: not a run folder (no such directory)")
    run, path = path, results_folder(path)  # a run in stages: its last stage's curves
    if not path.is_dir() and path.with_name(path.name + INCOMPLETE).is_dir():  # … that stage still training
        path = path.with_name(path.name + INCOMPLETE)
    source = path / "metrics.jsonl"
    if not source.is_file():
        raise DataError(f"{path}: no metrics.jsonl (not a run folder, or no epoch finished yet)")
    records = []
    for n, line in enumerate(source.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            records.append((int(record["epoch"]), record.get("loss", {}), record["valid"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{source}:{n}: not an epoch record ({type(exc).__name__}: {exc})") from None
    if not records:
        raise DataError(f"{source}: no epoch records yet")
    names = list(dict.fromkeys(name for _, loss, _ in records for name in loss))
    metrics = list(dict.fromkeys(m for _, _, valid in records for m in valid))
    curves = Curves(
        label=path.name if path == run else f"{run.resolve().name}/{path.name}",  # a run in stages: "run/2-finetune"
        epochs=[e for e, _, _ in records],
        valid={m: [valid.get(m) for _, _, valid in records] for m in metrics},
        losses={name: [loss.get(name) for _, loss, _ in records] for name in names},
    )
    config = path / "config.yaml"
    if config.is_file():
        try:
            curves.metric = str((yaml.safe_load(config.read_text()) or {}).get("train", {}).get("metric", ""))
        except yaml.YAMLError:
            pass
    return curves


def plot_curves(runs: list[Curves], output: str | Path, metric: str | None = None) -> Path:
    """Draw the panels (valid metric, then each loss part) and save the PNG; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    metric = metric or runs[0].metric or "mrr@10"
    for run in runs:
        if metric not in run.valid:
            raise DataError(f"{run.label}: no valid metric {metric!r} in metrics.jsonl "
                            f"(has {', '.join(run.valid) or 'none'}); choose one with --metric")
    losses = list(dict.fromkeys(name for run in runs for name in run.losses))
    panels = [(f"valid {metric}", lambda r: r.valid[metric])]
    panels += [(f"loss: {name}", lambda r, name=name: r.losses.get(name)) for name in losses]
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    data: dict[str, Any] = {"metric": metric, "runs": [r.label for r in runs], "panels": {}}
    for ax, (title, values) in zip(axes.flat, panels):
        data["panels"][title] = {}
        for i, run in enumerate(runs):
            ys = values(run)
            if ys is None:
                continue
            points = [(e, y) for e, y in zip(run.epochs, ys) if y is not None]
            ax.plot([e for e, _ in points], [y for _, y in points], marker="o", markersize=3, color=f"C{i % 10}",
                    label=run.label)
            data["panels"][title][run.label] = {"epoch": [e for e, _ in points], "value": [y for _, y in points]}
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    output = Path(output)
    if output.parent != Path("."):
        output.parent.mkdir(parents=True, exist_ok=True)
    return save_png(fig, output, data)
