"""Paired statistics over users: per-user metrics from ranks, tests, bootstrap CIs.

Two runs on the same data rank the same users' targets, so they are compared
*per user*: each user contributes one paired difference per metric. That is
far more powerful than comparing two means, and it is why every run saves
``ranks.pt``.

* Per-user metrics follow :func:`seqcl.evaluation.metrics_from_ranks` exactly:
  ``hr@K = [r < K]``, ``ndcg@K = [r < K] / log2(r + 2)``, ``mrr@K = [r < K] / (r + 1)``
  for a 0-based rank ``r``; their mean over users is the reported metric.
* Several seeds: each user's metric is **averaged over the seeds first**, then
  users are paired. Seeds of the two arms need not match one to one, and the
  test is about users (the population we generalise to), not about seeds.
* Test: paired t-test (``scipy.stats.ttest_rel``, default) or Wilcoxon
  signed-rank (``scipy.stats.wilcoxon``). When every paired difference is 0 the
  p-value is 1 (SciPy returns NaN there).
* CI: percentile bootstrap of the mean difference, resampling users with
  replacement, ``numpy.random.default_rng(seed)`` — the same seed gives the
  same interval.

* Over seeds (:func:`compare_seeds`): the headline metric of runs with the same
  seed in both arms, paired t-test over those seeds. With 3 seeds it has little
  power; it says whether a difference is stable across seeds, the user-level
  test whether it is larger than the users' noise.

No correction for multiple comparisons is applied; with many variants × six
metrics, read single p-values near 0.05 with care.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

TESTS = ("ttest", "wilcoxon")
METRIC_ORDER = ("hr", "ndcg", "mrr")


def metric_names(ks: Sequence[int]) -> list[str]:
    """Paper order: HR@5, HR@10, NDCG@5, NDCG@10, MRR@5, MRR@10."""
    return [f"{m}@{k}" for m in METRIC_ORDER for k in ks]


def ks_of(names: Sequence[str]) -> list[int]:
    return sorted({int(n.split("@")[1]) for n in names})


def per_user_metrics(ranks: np.ndarray, ks: Sequence[int]) -> dict[str, np.ndarray]:
    """``{"hr@5": (U,) float64, …}`` from 0-based ranks (U,)."""
    r = np.asarray(ranks, dtype=np.float64)
    if r.ndim != 1 or r.size == 0 or (r < 0).any():
        raise ValueError("ranks must be a non-empty 1-d array of 0-based ranks")
    out: dict[str, np.ndarray] = {}
    for k in ks:
        hit = (r < k).astype(np.float64)
        out[f"hr@{k}"] = hit
        out[f"ndcg@{k}"] = hit / np.log2(r + 2.0)
        out[f"mrr@{k}"] = hit / (r + 1.0)
    return out


def seed_average(rank_sets: Sequence[np.ndarray], ks: Sequence[int]) -> dict[str, np.ndarray]:
    """Per-user metrics of several seeds' ranks, averaged over the seeds (users must align)."""
    if not rank_sets:
        raise ValueError("no ranks")
    sizes = {len(r) for r in rank_sets}
    if len(sizes) != 1:
        raise ValueError(f"runs rank different numbers of users: {sorted(sizes)}")
    per = [per_user_metrics(r, ks) for r in rank_sets]
    return {name: np.mean([p[name] for p in per], axis=0) for name in per[0]}


def paired_p(a: np.ndarray, b: np.ndarray, test: str = "ttest") -> float:
    """Two-sided p-value of a paired test between per-user values ``a`` and ``b``."""
    from scipy import stats

    if test not in TESTS:
        raise ValueError(f"test must be one of {', '.join(TESTS)}, got {test!r}")
    d = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    if d.size == 0:
        raise ValueError("no paired values")
    if not np.any(d != 0):
        return 1.0
    if test == "ttest":
        if np.all(d == d[0]):  # constant non-zero difference: no variance, certainly different
            return 0.0
        p = stats.ttest_rel(b, a).pvalue
    else:
        p = stats.wilcoxon(b, a).pvalue
    return float(p) if math.isfinite(p) else 1.0


def bootstrap_ci(diffs: np.ndarray, n_boot: int = 2000, seed: int = 0, level: float = 0.95,
                 chunk: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Percentile CI of the mean of each column of ``diffs`` (U, M) over user resamples.

    Returns ``(low, high)``, each (M,). Resamples are drawn in chunks so memory
    stays at ``chunk × U × M`` floats whatever ``n_boot`` is.
    """
    d = np.asarray(diffs, dtype=np.float64)
    if d.ndim == 1:
        d = d[:, None]
    u = d.shape[0]
    rng = np.random.default_rng(seed)
    means = np.empty((n_boot, d.shape[1]))
    for start in range(0, n_boot, chunk):
        n = min(chunk, n_boot - start)
        idx = rng.integers(0, u, size=(n, u))
        means[start:start + n] = d[idx].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    return np.quantile(means, alpha, axis=0), np.quantile(means, 1.0 - alpha, axis=0)


@dataclass
class Comparison:
    """B against A (the baseline) on one metric, paired over users."""

    metric: str
    a: float  # mean of A (seed-averaged per user, then over users)
    b: float
    delta: float  # b - a
    improve: float  # relative: delta / a (NaN when a == 0)
    ci_low: float
    ci_high: float
    p: float
    test: str
    n_users: int

    @property
    def stars(self) -> str:
        return "**" if self.p < 0.01 else "*" if self.p < 0.05 else ""


def compare_users(a: dict[str, np.ndarray], b: dict[str, np.ndarray], metrics: Sequence[str],
                  test: str = "ttest", n_boot: int = 2000, seed: int = 0) -> dict[str, Comparison]:
    """Compare per-user metric arrays of B against A for every metric (one shared bootstrap)."""
    diffs = np.stack([b[m] - a[m] for m in metrics], axis=1)
    low, high = bootstrap_ci(diffs, n_boot, seed) if n_boot > 0 else (np.full(len(metrics), np.nan),) * 2
    out = {}
    for i, m in enumerate(metrics):
        ma, mb = float(a[m].mean()), float(b[m].mean())
        out[m] = Comparison(m, ma, mb, mb - ma, (mb - ma) / ma if ma else math.nan, float(low[i]),
                            float(high[i]), paired_p(a[m], b[m], test), test, int(diffs.shape[0]))
    return out


@dataclass
class SeedComparison:
    """B against A on one metric, paired over the seeds both arms ran."""

    metric: str
    seeds: list[int]
    delta: float  # mean over the paired seeds of b - a
    p: float  # paired t-test over seeds (NaN with fewer than 2 seeds)


def compare_seeds(a: dict[int, float], b: dict[int, float], metric: str) -> SeedComparison | None:
    """Pair the per-seed values ``{seed: value}`` of two arms; None when no seed is shared."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    va = np.array([a[s] for s in seeds], dtype=np.float64)
    vb = np.array([b[s] for s in seeds], dtype=np.float64)
    p = paired_p(va, vb, "ttest") if len(seeds) > 1 else math.nan
    return SeedComparison(metric, seeds, float(np.mean(vb - va)), p)
