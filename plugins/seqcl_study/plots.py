"""PNG line plots of one-parameter sweeps (the paper's Figures 3–4): metric vs value; learning curves.

A *sweep* is a variant whose rows differ in exactly one numeric key: its own
``grid`` with one key, or a one-key top-level grid (then across the tables).
Each plot shows HR, NDCG and MRR at the smallest K (as in the paper), mean ±
std over seeds as error bars, and the baseline as dotted lines. Search studies
get one scatter per numeric parameter instead. Grid studies also get
``plot-curves.png``: the validation headline metric per epoch of every run
(one colour per row, one line style per seed), from each run's ``metrics.jsonl``.

The plotted numbers are embedded as JSON in the PNG's ``Description`` text
chunk (``PIL.Image.open(p).text["Description"]``), so a plot can be checked
against the table without reading pixels. Agg backend: no display needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .figure import save_png
from .plan import slug
from .results import Arm, Report, group_label
from .stats import ks_of


@dataclass
class Sweep:
    variant: str
    key: str
    where: str  # group label ("" when the sweep is across groups or there are none)
    arms: list[Arm]  # sorted by x
    baselines: list[Arm | None]  # per x (same length) — constant for a variant's own grid

    def xs(self) -> list[float]:
        return [float({**a.group, **a.point}[self.key]) for a in self.arms]


def _numeric(values: list[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values) and len(set(values)) > 1


def find_sweeps(report: Report) -> list[Sweep]:
    out: list[Sweep] = []
    for table in report.tables:  # a variant's own one-key grid, inside one table
        by_variant: dict[str, list[Arm]] = {}
        for arm in table.arms:
            if len(arm.point) == 1:
                by_variant.setdefault(arm.variant, []).append(arm)
        for variant, arms in by_variant.items():
            key = next(iter(arms[0].point))
            if all(list(a.point) == [key] for a in arms) and _numeric([a.point[key] for a in arms]):
                arms = sorted(arms, key=lambda a: a.point[key])
                out.append(Sweep(variant, key, group_label(table.group), arms, [table.baseline] * len(arms)))
    keys = {tuple(t.group) for t in report.tables}
    if len(report.tables) > 1 and len(keys) == 1 and len(next(iter(keys))) == 1:  # a one-key top-level grid
        key = next(iter(keys))[0]
        if _numeric([t.group[key] for t in report.tables]):
            tables = sorted(report.tables, key=lambda t: t.group[key])
            variants = [a.variant for a in tables[0].arms if not a.point]
            for variant in variants:
                arms = [next((a for a in t.arms if a.variant == variant and not a.point), None) for t in tables]
                pairs = [(a, t.baseline) for a, t in zip(arms, tables) if a is not None]
                if len(pairs) > 1:
                    base = [b if b is not None and b.variant != variant else None for _, b in pairs]
                    out.append(Sweep(variant, key, "", [a for a, _ in pairs], base))
    return out


def _log_axis(xs: list[float]) -> bool:
    return min(xs) > 0 and max(xs) / min(xs) >= 10


def plot_sweep(sweep: Sweep, report: Report) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = ks_of(report.metrics)[0]
    metrics = [f"{m}@{k}" for m in ("hr", "ndcg", "mrr")]
    xs = sweep.xs()
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    data: dict[str, Any] = {"variant": sweep.variant, "key": sweep.key, "group": sweep.where, "split": report.split,
                            "x": xs, "series": {}, "baseline": {}}
    for i, m in enumerate(metrics):
        color = f"C{i}"
        means = [a.mean(m, report.split) for a in sweep.arms]
        stds = [a.std(m, report.split) for a in sweep.arms]
        ax.errorbar(xs, means, yerr=[0 if math.isnan(s) else s for s in stds], marker="o", capsize=3,
                    color=color, label=m.upper())
        data["series"][m] = {"mean": means, "std": [None if math.isnan(s) else s for s in stds]}
        if any(b is not None for b in sweep.baselines):
            base = [b.mean(m, report.split) if b is not None else math.nan for b in sweep.baselines]
            ax.plot(xs, base, linestyle=":", color=color, alpha=0.8)
            data["baseline"][m] = [None if math.isnan(v) else v for v in base]
    if _log_axis(xs):
        ax.set_xscale("log")
    ax.set_xticks(xs, [f"{x:g}" for x in xs])
    ax.minorticks_off()
    ax.set_xlabel(sweep.key)
    ax.set_ylabel(f"{report.split} metric")
    names = {b.label for b in sweep.baselines if b is not None}
    base_note = f"; dotted: {', '.join(sorted(names))}" if names else ""
    n = max(len(a.runs) for a in sweep.arms)
    ax.set_title(f"{report.name}: {sweep.variant}{f' ({sweep.where})' if sweep.where else ''}\n"
                 f"mean ± std over {n} seed{'s' if n > 1 else ''}{base_note}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    where = f"-{slug(sweep.where)}" if sweep.where else ""
    return save_png(fig, report.study_dir / f"plot-{slug(sweep.variant)}-{slug(sweep.key)}{where}.png", data)


def plot_search(report: Report) -> list[Path]:
    """One scatter per numeric search parameter: valid headline metric and test metrics vs value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = [a for t in report.tables for a in t.arms]
    keys = [k for k in (arms[0].point if arms else {}) if _numeric([a.point.get(k) for a in arms])]
    out = []
    for key in keys:
        xs = [float(a.point[key]) for a in arms]
        fig, ax = plt.subplots(figsize=(5.2, 3.6))
        data: dict[str, Any] = {"key": key, "x": xs, "series": {}}
        series = [(f"valid {report.metric}", [a.mean(report.metric, "valid") for a in arms])]
        series += [(f"{report.split} {report.metric}", [a.mean(report.metric, report.split) for a in arms])]
        for i, (name, ys) in enumerate(series):
            ax.scatter(xs, ys, color=f"C{i}", label=name, s=18)
            data["series"][name] = ys
        if _log_axis(xs):
            ax.set_xscale("log")
        ax.set_xlabel(key)
        ax.set_title(f"{report.name}: search over {key} ({len(arms)} trials)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        out.append(save_png(fig, report.study_dir / f"plot-search-{slug(key)}.png", data))
    return out


def _valid_curve(run_dir: Path, metric: str) -> tuple[list[int], list[float | None]]:
    """Epochs and the valid metric of one run, read as ``seqcl plot`` reads them."""
    from .curves import read_curves

    curves = read_curves(run_dir)
    return curves.epochs, curves.valid.get(metric, [None] * len(curves.epochs))


def plot_curves(report: Report) -> Path | None:
    """Valid headline metric per epoch, every row and seed; None when no run has ``metrics.jsonl``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = [a for t in report.tables for a in t.arms]
    seeds = sorted({r.seed for a in arms for r in a.runs})
    styles = ["-", "--", ":", "-."]
    fig, ax = plt.subplots(figsize=(7.0, 4.2))
    data: dict[str, Any] = {"metric": report.metric, "series": {}}
    for i, arm in enumerate(arms):
        for run in arm.runs:
            points = [(e, y) for e, y in zip(*_valid_curve(run.run_dir, report.metric)) if y is not None]
            if not points:
                continue
            xs, ys = [e for e, _ in points], [float(y) for _, y in points]
            label = arm.label if run is arm.runs[0] else None
            ax.plot(xs, ys, color=f"C{i % 10}", linestyle=styles[seeds.index(run.seed) % len(styles)],
                    linewidth=1.1, marker="." if len(xs) < 10 else None, label=label)
            data["series"][run.run] = {"row": arm.label, "seed": run.seed, "epoch": xs, "valid": ys}
    if not data["series"]:
        plt.close(fig)
        return None
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"valid {report.metric.upper()}")
    style_note = ", ".join(f"seed {s} {styles[j % len(styles)]}" for j, s in enumerate(seeds))
    ax.set_title(f"{report.name}: learning curves ({style_note})", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return save_png(fig, report.study_dir / "plot-curves.png", data)


def make_plots(report: Report) -> list[Path]:
    """Every plot of the report: sweeps (none when nothing is swept) and, for grids, the learning curves."""
    for old in report.study_dir.glob("plot-*.png"):
        old.unlink()
    if report.mode == "search":
        return plot_search(report)
    curves = plot_curves(report)
    return [plot_sweep(s, report) for s in find_sweeps(report)] + ([curves] if curves else [])
