"""``seqcl compare A B``: metric deltas of run B against run A, paired over users.

Both runs must rank the same users: the same dataset and data settings, hence
the same user order. That is checked (dataset string, ``data`` section, number
of users, and the user ids of ``ids.json`` where both runs have one); a mismatch is an error, because pairing different users would give
a meaningless p-value. The statistics are those of the study report
(:mod:`seqcl_study.stats`), with one seed per side.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seqcl.errors import ConfigError
from seqcl.ids import IDS_FILE, IdMap
from seqcl.stages import results_folder

from .files import load_ranks, read_json_dict, read_yaml
from .stats import Comparison, compare_users, ks_of, metric_names, per_user_metrics


@dataclass
class RunInfo:
    path: Path
    summary: dict[str, Any]
    config: dict[str, Any]
    folder: Path  # where ranks.pt and ids.json are: a run in stages, its last stage's folder

    def describe(self) -> str:
        terms = ",".join(self.summary.get("terms", [])) or "-"
        return f"{self.path} (augmenter {self.summary.get('augmenter')}, terms {terms}, seed {self.summary.get('seed')})"


def load_run(path: str | Path) -> RunInfo:
    """A finished run's summary and config; a one-line error naming a missing or truncated file."""
    p = Path(path)
    for name in ("summary.json", "config.yaml"):
        if not (p / name).is_file():
            raise ConfigError(f"{p}: not a finished run directory (no {name})")
    folder = results_folder(p)
    if not (folder / "ranks.pt").is_file():
        raise ConfigError(f"{folder}: not a finished run directory (no ranks.pt)")
    return RunInfo(p, read_json_dict(p / "summary.json", ("valid", "test")), read_yaml(p / "config.yaml"), folder)


def _users(path: Path) -> list[str] | None:
    """The run's user ids in ranks.pt row order (``ids.json``); None for runs saved before id maps."""
    return IdMap.read(path / IDS_FILE).users if (path / IDS_FILE).is_file() else None


def compare_runs(a: str | Path, b: str | Path, *, split: str = "test", test: str = "ttest", n_boot: int = 2000,
                 seed: int = 0) -> tuple[RunInfo, RunInfo, dict[str, Comparison]]:
    """Compare run B against run A on every metric of the split."""
    ra, rb = load_run(a), load_run(b)
    data_a = (ra.config.get("dataset"), {k: v for k, v in ra.config.get("data", {}).items() if k != "cache_dir"})
    data_b = (rb.config.get("dataset"), {k: v for k, v in rb.config.get("data", {}).items() if k != "cache_dir"})
    if data_a != data_b:
        raise ConfigError(f"{ra.path} and {rb.path} were trained on different data ({data_a[0]} vs {data_b[0]}, "
                          "or other data.* settings): users cannot be paired")
    users_a, users_b = _users(ra.folder), _users(rb.folder)
    if users_a is not None and users_b is not None and users_a != users_b:
        raise ConfigError(f"{ra.path} and {rb.path} list different users in ids.json (ranks.pt row u is user "
                          "ids.json users[u]): users cannot be paired")
    ranks_a = load_ranks(ra.folder / "ranks.pt", split)
    ranks_b = load_ranks(rb.folder / "ranks.pt", split)
    if len(ranks_a) != len(ranks_b):
        raise ConfigError(f"{ra.path} ranks {len(ranks_a)} users, {rb.path} {len(ranks_b)}: users cannot be paired")
    ks = ks_of(list(ra.summary[split]))
    metrics = metric_names(ks)
    return ra, rb, compare_users(per_user_metrics(ranks_a, ks), per_user_metrics(ranks_b, ks), metrics, test,
                                 n_boot, seed)


def format_comparison(ra: RunInfo, rb: RunInfo, rows: dict[str, Comparison], split: str, n_boot: int,
                      seed: int) -> str:
    """A plain-text table for stdout."""
    first = next(iter(rows.values()))
    test = "paired t-test" if first.test == "ttest" else "Wilcoxon signed-rank"
    out = [f"A: {ra.describe()}", f"B: {rb.describe()}",
           f"{split} split, {first.n_users} users paired; Δ = B − A; 95% bootstrap CI ({n_boot} resamples, "
           f"seed {seed}); p: {test}", ""]
    head = f"{'metric':8} {'A':>8} {'B':>8} {'Δ':>9} {'Improve':>9}  {'95% CI of Δ':>21}  {'p':>8}"
    out += [head, "-" * len(head)]
    for m, c in rows.items():
        improve = "–" if c.improve != c.improve else f"{100 * c.improve:+.2f}%"
        p = "<1e-4" if c.p < 1e-4 else f"{c.p:.4f}"
        out.append(f"{m:8} {c.a:8.4f} {c.b:8.4f} {c.delta:+9.4f} {improve:>9}  "
                   f"[{c.ci_low:+.4f}, {c.ci_high:+.4f}]  {p:>8}{c.stars}")
    return "\n".join(out)
