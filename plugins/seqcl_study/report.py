"""The study report: a table in the paper's layout, a CSV, significance vs the baseline, plots.

Everything is read from the study directory — ``study.json`` (written by
``seqcl study``) and each run's ``summary.json`` / ``ranks.pt`` — never from the
ledger, so a report can be made anywhere the run directories are (copy
``runs/<study>/`` from several machines into one place first).

Layout (per top-level grid point, e.g. one table for ``objective=ce`` and one
for ``objective=sampled``): rows = variants (and their own grid points),
columns = HR/NDCG/MRR @K of the test split as mean ± std over seeds (sample
std, ddof = 1; a single seed shows the mean only), best **bold** and runner-up
<u>underlined</u> per column, and an *Improve* column: the relative change of
the headline metric against the baseline row, starred by the paired test
(* p < 0.05, ** p < 0.01). A second table gives, per variant and metric, the
difference to the baseline with its bootstrap CI and p-value
(:mod:`seqcl_study.stats`: per-user metrics averaged over seeds, then paired
over users).
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from seqcl.atomic import atomic_write_text
from seqcl.errors import ConfigError

from .files import read_json, read_json_dict
from .results import Arm, Report, RunResult, Table, group_label
from .reuse import reused_from
from .splits import SPLIT_TITLES
from .stats import compare_seeds, compare_users, ks_of, metric_names, seed_average


# ---------------------------------------------------------------- loading


def load_info(study_dir: Path) -> dict[str, Any]:
    path = Path(study_dir) / "study.json"
    if not path.is_file():
        raise ConfigError(f"{study_dir}: not a study directory (no study.json; run `seqcl study FILE` first)")
    return read_json_dict(path, ("name", "mode", "metric", "spec", "cells"))


def load_runs(study_dir: Path, info: dict[str, Any]) -> tuple[list[RunResult], list[str]]:
    """Finished runs (in the study's order) and the names of the runs not (yet) there."""
    runs_dir = Path(study_dir) / "runs"
    if info["mode"] == "search":
        cells = [read_json(p) for p in sorted(runs_dir.glob("*/cell.json"))]
    else:
        cells = info["cells"]
    found, missing = [], []
    for cell in cells:
        run_dir = runs_dir / (cell.get("same_as") or cell["run"])
        summary = run_dir / "summary.json"
        if not summary.is_file():
            missing.append(cell["run"])
            continue
        found.append(RunResult(cell["run"], cell["variant"], cell["group"], cell["point"], cell["seed"], run_dir,
                               read_json_dict(summary, ("valid", "test"))))
    return found, missing


def _arms(info: dict[str, Any], runs: list[RunResult]) -> list[Table]:
    spec = info["spec"]
    baseline = spec.get("baseline")
    tables: dict[str, Table] = {}
    arms: dict[tuple[str, str, str], Arm] = {}
    for r in runs:
        gkey = json.dumps(r.group, sort_keys=True)
        table = tables.setdefault(gkey, Table(r.group, []))
        key = (gkey, r.variant, json.dumps(r.point, sort_keys=True))
        if key not in arms:
            if info["mode"] == "search":
                trial = r.run.split("__")[0]
                label = f"{trial} ({r.variant}; {group_label(r.point)})"
            else:
                label = r.variant + (f" ({group_label(r.point)})" if r.point else "")
            arms[key] = Arm(r.group, r.variant, r.point, [], label, is_baseline=(r.variant == baseline))
            table.arms.append(arms[key])
            if arms[key].is_baseline:
                table.baseline = arms[key]
        arms[key].runs.append(r)
    return list(tables.values())


# -------------------------------------------------------------- building


def build_report(study_dir: str | Path, *, split: str | None = None, test: str = "ttest", n_boot: int = 2000,
                 boot_seed: int = 0) -> Report:
    """Aggregate the finished runs of a study and compare every row with its baseline.

    ``split`` None: the study file's ``split:`` (``valid`` for a study that chooses settings, so that
    its report never reads test), else ``test``."""
    study_dir = Path(study_dir)
    info = load_info(study_dir)
    split = split or info["spec"].get("split") or "test"
    runs, missing = load_runs(study_dir, info)
    if not runs:
        raise ConfigError(f"{study_dir}: no finished runs yet")
    metrics = metric_names(ks_of(list(runs[0].summary[split])))
    tables = _arms(info, runs)
    references = info["spec"].get("references") or {}
    for arm in (a for t in tables for a in t.arms):
        if not arm.point and arm.variant in references:
            arm.reference = references[arm.variant]
    notes: list[str] = []
    if info["mode"] == "search":
        for t in tables:
            t.arms.sort(key=lambda a: -a.mean(info["metric"], "valid"))
    for table in tables:
        base = table.baseline
        if base is None:
            continue
        try:
            base_users = seed_average([r.ranks(split) for r in base.runs], ks_of(metrics))
        except (FileNotFoundError, KeyError, ValueError) as exc:
            notes.append(f"{group_label(table.group) or 'table'}: no significance tests ({exc})")
            continue
        base_seeds = {r.seed: float(r.summary[split][info["metric"]]) for r in base.runs}
        for arm in table.arms:
            if arm is base:
                continue
            arm.over_seeds = compare_seeds(
                base_seeds, {r.seed: float(r.summary[split][info["metric"]]) for r in arm.runs}, info["metric"])
            try:
                users = seed_average([r.ranks(split) for r in arm.runs], ks_of(metrics))
                if len(next(iter(users.values()))) != len(next(iter(base_users.values()))):
                    raise ValueError("different numbers of users than the baseline")
            except (FileNotFoundError, KeyError, ValueError) as exc:
                notes.append(f"{arm.label}: no significance test ({exc})")
                continue
            arm.comparisons = compare_users(base_users, users, metrics, test, n_boot, boot_seed)
    reused = {r.run_dir.name: origin for r in runs if (origin := reused_from(r.run_dir)) is not None}
    return Report(info["name"], info["mode"], split, info["metric"], metrics, tables, missing, test, n_boot,
                  boot_seed, study_dir, notes, reused=reused)


# -------------------------------------------------------------- rendering


def _fmt(x: float, digits: int = 4) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _signed(x: float, digits: int = 4) -> str:
    return "–" if math.isnan(x) else f"{x:+.{digits}f}"


def _pct(x: float) -> str:
    return "–" if math.isnan(x) else f"{100 * x:+.2f}%"


def _p(p: float) -> str:
    return "–" if math.isnan(p) else ("<1e-4" if p < 1e-4 else f"{p:.4f}")


def _ranked(values: list[float]) -> tuple[float | None, float | None]:
    distinct = sorted({round(v, 12) for v in values if not math.isnan(v)}, reverse=True)
    return (distinct[0] if distinct else None, distinct[1] if len(distinct) > 1 else None)


def _cell(arm: Arm, metric: str, split: str, best: float | None, second: float | None) -> str:
    mean, std = arm.mean(metric, split), arm.std(metric, split)
    text = _fmt(mean) + ("" if math.isnan(std) else f" ± {_fmt(std)}")
    if best is not None and round(mean, 12) == best:
        return f"**{text}**"
    if second is not None and round(mean, 12) == second:
        return f"<u>{text}</u>"
    return text


def markdown(report: Report) -> str:
    """report.md: the paper-layout table(s), the baseline comparisons, plots, missing runs."""
    names = [m.upper() for m in report.metrics]
    head = report.metric.upper()
    lines = [f"# Study `{report.name}`", ""]
    n_users = next((len(a.runs[0].ranks(report.split)) for t in report.tables for a in t.arms
                    if (a.runs[0].folder / "ranks.pt").is_file()), None)
    lines += [f"{SPLIT_TITLES[report.split]}{f', {n_users} users' if n_users else ''}. Cells: mean ± std over "
              "seeds (sample std); **best** and <u>runner-up</u> per column."]
    if any(t.baseline for t in report.tables):
        test = "paired t-test" if report.test == "ttest" else "Wilcoxon signed-rank test"
        lines += [f"Improve: relative change of {head} against the baseline row; * p < 0.05, ** p < 0.01 "
                  f"({test} over users, each user's metric averaged over seeds first).", ""]
    else:
        lines += [""]
    search = report.mode == "search"
    for table in report.tables:
        if table.group:
            lines += [f"## {group_label(table.group)}", ""]
        cols = ["variant" if not search else "trial", "seeds"]
        if search:
            cols.append(f"valid {head}")
        cols += names
        if table.baseline:
            cols.append(f"Improve ({head})")
        lines += ["| " + " | ".join(cols) + " |", "|" + "|".join(["---"] + ["---:"] * (len(cols) - 1)) + "|"]
        ranked = {m: _ranked([a.mean(m, report.split) for a in table.arms]) for m in report.metrics}
        for arm in table.arms:
            row = [arm.label + (" (baseline)" if arm.is_baseline else ""), str(len(arm.runs))]
            if search:
                row.append(_fmt(arm.mean(report.metric, "valid")))
            row += [_cell(arm, m, report.split, *ranked[m]) for m in report.metrics]
            if table.baseline:
                if arm.is_baseline:
                    row.append("—")
                elif report.metric in arm.comparisons:
                    c = arm.comparisons[report.metric]
                    row.append(_pct(c.improve) + c.stars)
                else:
                    rel = arm.mean(report.metric, report.split) / table.baseline.mean(report.metric, report.split) - 1
                    row.append(_pct(rel))
            lines.append("| " + " | ".join(row) + " |")
            if arm.reference:
                ref = ["↳ *" + str(arm.reference["source"]) + "*", ""] + ([""] if search else [])
                ref += [_fmt(arm.reference[m]) if m in arm.reference else "" for m in report.metrics]
                lines.append("| " + " | ".join(ref + ([""] if table.baseline else [])) + " |")
        lines.append("")
        if not search:
            lines += _cost_table(table)
        compared = [a for a in table.arms if a.comparisons]
        if compared:
            c0 = compared[0].comparisons[report.metrics[0]]
            lines += [f"### Against `{table.baseline.label}` ({c0.n_users} users paired; 95% bootstrap CI of Δ, "
                      f"{report.n_boot} resamples, seed {report.boot_seed})", "",
                      "| variant | metric | value | baseline | Δ | Improve | 95% CI of Δ | p |",
                      "|---|---|---:|---:|---:|---:|---:|---:|"]
            for arm in compared:
                for m, name in zip(report.metrics, names):
                    c = arm.comparisons[m]
                    lines.append(f"| {arm.label} | {name} | {_fmt(c.b)} | {_fmt(c.a)} | {_signed(c.delta)} | "
                                 f"{_pct(c.improve)} | [{_signed(c.ci_low)}, {_signed(c.ci_high)}] | "
                                 f"{_p(c.p)}{c.stars} |")
            lines.append("")
        seeded = [a for a in table.arms if a.over_seeds is not None]
        if seeded:
            lines += [f"Over seeds ({head}, {report.split} split; paired t-test over the seeds both arms ran, "
                      "little power with 3 seeds):", "",
                      f"| variant | seeds paired | mean Δ {head} | p |", "|---|---|---:|---:|"]
            for arm in seeded:
                c = arm.over_seeds
                lines.append(f"| {arm.label} | {', '.join(map(str, c.seeds))} | {_signed(c.delta)} | {_p(c.p)} |")
            lines.append("")
    if report.plots:
        lines += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in report.plots] + [""]
    if report.missing:
        shown = ", ".join(report.missing[:20]) + (f" (+{len(report.missing) - 20} more)" if len(report.missing) > 20 else "")
        lines += [f"**Missing runs ({len(report.missing)}):** {shown}", ""]
    if report.reused:
        shown = ", ".join(f"{run} ← {o.get('study', '?')}/{o.get('run', '?')}" for run, o in report.reused.items())
        lines += [f"**Reused runs ({len(report.reused)}),** copied from another study with the identical config "
                  f"instead of trained here: {shown}", ""]
    for note in report.notes:
        lines += [f"Note: {note}", ""]
    return "\n".join(lines).rstrip() + "\n"


def _cost_table(table: Table) -> list[str]:
    """Best epoch, epochs run and wall time per arm (from summary.json and metrics.jsonl)."""
    staged = any(r.folder != r.run_dir for a in table.arms for r in a.runs)
    note = "; a run in stages: best epoch, epochs run and s / epoch of its last stage, wall time of all" * staged
    lines = [f"Training cost (mean ± std over seeds; s / epoch includes validation{note}):", "",
             "| variant | best epoch | epochs run | s / epoch | wall time per run | wall time, all seeds |",
             "|---|---:|---:|---:|---:|---:|"]
    for arm in table.arms:
        best, run, secs = (arm.summary_values(k) for k in ("best_epoch", "epochs_run", "seconds"))
        per_epoch = [r.seconds_per_epoch() for r in arm.runs]
        per_epoch = [x for x in per_epoch if not math.isnan(x)]
        lines.append(f"| {arm.label} | {_mean_std(best, 1)} | {_mean_std(run, 1)} | {_mean_std(per_epoch, 1)} | "
                     f"{_duration(sum(secs) / len(secs)) if secs else '–'} | {_duration(sum(secs)) if secs else '–'} |")
    return lines + [""]


def _mean_std(values: list[float], digits: int) -> str:
    if not values:
        return "–"
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{seconds / 60:.1f} min"


def csv_rows(report: Report) -> tuple[list[str], list[dict[str, Any]]]:
    """One row per table row; every number at full precision."""
    keys: list[str] = []
    for t in report.tables:
        for a in t.arms:
            for k in [*a.group, *a.point]:
                if k not in keys:
                    keys.append(k)
    header = ["group", "variant", "label", "is_baseline", "n_seeds", "seeds", *[f"param:{k}" for k in keys]]
    if report.mode == "search":
        header.append(f"valid_{report.metric}_mean")
    header += [f"{m}_{s}" for m in report.metrics for s in ("mean", "std")]
    header += [f"{m}_{s}" for m in report.metrics for s in ("delta", "improve_pct", "ci_low", "ci_high", "p")]
    rows = []
    for t in report.tables:
        for a in t.arms:
            row: dict[str, Any] = {"group": group_label(a.group), "variant": a.variant, "label": a.label,
                                   "is_baseline": a.is_baseline, "n_seeds": len(a.runs),
                                   "seeds": ";".join(map(str, a.seeds))}
            values = {**a.group, **a.point}
            for k in keys:
                row[f"param:{k}"] = values.get(k, "")
            if report.mode == "search":
                row[f"valid_{report.metric}_mean"] = a.mean(report.metric, "valid")
            for m in report.metrics:
                row[f"{m}_mean"] = a.mean(m, report.split)
                std = a.std(m, report.split)
                row[f"{m}_std"] = "" if math.isnan(std) else std
                c = a.comparisons.get(m)
                if c is not None:
                    row.update({f"{m}_delta": c.delta, f"{m}_improve_pct": 100 * c.improve, f"{m}_ci_low": c.ci_low,
                                f"{m}_ci_high": c.ci_high, f"{m}_p": c.p})
            rows.append(row)
    return header, rows


def report_stem(split: str) -> str:
    """``report`` for the default split, ``report-<split>`` for any other, so that reports on two
    splits of one study (e.g. both test protocols) sit side by side instead of overwriting each other."""
    return "report" if split == "test" else f"report-{split}"


def write_report(report: Report, plots: bool = True) -> list[Path]:
    """Write report[-<split>].md, report[-<split>].csv and the plots into the study directory; return the paths."""
    out = report.study_dir
    stem = report_stem(report.split)
    if plots:
        from .plots import make_plots

        report.plots = make_plots(report)
    header, rows = csv_rows(report)
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=header, restval="")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / f"{stem}.csv", buffer.getvalue())
    atomic_write_text(out / f"{stem}.md", markdown(report))
    return [out / f"{stem}.md", out / f"{stem}.csv", *report.plots]
