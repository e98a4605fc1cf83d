"""Paired statistics: per-user metrics, tests against SciPy, bootstrap CIs on known cases."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from seqcl.evaluation import metrics_from_ranks
from seqcl_study.stats import (bootstrap_ci, compare_users, metric_names, paired_p, per_user_metrics,
                               seed_average)


def test_per_user_metrics_average_to_metrics_from_ranks():
    ranks = np.random.default_rng(0).integers(0, 30, size=500)
    per_user = per_user_metrics(ranks, [5, 10])
    expected = metrics_from_ranks(torch.as_tensor(ranks), [5, 10])
    assert set(per_user) == set(expected)
    for name, values in per_user.items():
        assert values.mean() == pytest.approx(expected[name], abs=1e-12)
    assert metric_names([5, 10]) == ["hr@5", "hr@10", "ndcg@5", "ndcg@10", "mrr@5", "mrr@10"]


def test_identical_ranks_give_p_one_and_zero_delta():
    ranks = np.random.default_rng(1).integers(0, 50, size=300)
    users = per_user_metrics(ranks, [5, 10])
    for test in ("ttest", "wilcoxon"):
        result = compare_users(users, users, list(users), test=test, n_boot=200, seed=0)
        for c in result.values():
            assert c.delta == 0 and c.p == 1.0 and c.ci_low == 0 and c.ci_high == 0 and c.improve == 0


def test_clear_difference_tiny_p_matching_scipy():
    rng = np.random.default_rng(2)
    a_ranks = rng.integers(5, 100, size=400)  # mostly outside the top 10
    b_ranks = np.where(rng.random(400) < 0.6, rng.integers(0, 5, size=400), a_ranks)  # B pulls 60% into top 5
    a, b = per_user_metrics(a_ranks, [5, 10]), per_user_metrics(b_ranks, [5, 10])
    result = compare_users(a, b, list(a), test="ttest", n_boot=500, seed=3)
    for name, c in result.items():
        assert c.p < 1e-20
        assert c.p == pytest.approx(stats.ttest_rel(b[name], a[name]).pvalue, rel=1e-9)
        assert c.delta == pytest.approx(b[name].mean() - a[name].mean())
        assert c.ci_low < c.delta < c.ci_high and c.ci_low > 0
    w = compare_users(a, b, ["hr@5"], test="wilcoxon", n_boot=0)["hr@5"]
    assert w.p == pytest.approx(stats.wilcoxon(b["hr@5"], a["hr@5"]).pvalue, rel=1e-9)
    assert math.isnan(w.ci_low)


def test_no_difference_in_distribution_gives_large_p():
    rng = np.random.default_rng(4)
    a = per_user_metrics(rng.integers(0, 40, size=2000), [10])
    b = per_user_metrics(rng.integers(0, 40, size=2000), [10])
    c = compare_users(a, b, ["hr@10"], n_boot=1000, seed=0)["hr@10"]
    assert c.p > 0.01 and c.ci_low < 0 < c.ci_high


def test_bootstrap_is_seeded_and_matches_a_direct_loop():
    d = np.random.default_rng(5).normal(0.1, 1.0, size=(300, 2))
    low1, high1 = bootstrap_ci(d, n_boot=300, seed=7)
    low2, high2 = bootstrap_ci(d, n_boot=300, seed=7, chunk=13)  # chunking does not change the draws
    np.testing.assert_allclose(low1, low2)
    np.testing.assert_allclose(high1, high2)
    rng = np.random.default_rng(7)
    means = np.array([d[rng.integers(0, 300, size=300)].mean(axis=0) for _ in range(300)])
    np.testing.assert_allclose(low1, np.quantile(means, 0.025, axis=0))
    np.testing.assert_allclose(high1, np.quantile(means, 0.975, axis=0))
    assert not np.allclose(bootstrap_ci(d, n_boot=300, seed=8)[0], low1)


def test_seed_average_and_edge_cases():
    r1, r2 = np.array([0, 9, 20]), np.array([4, 0, 20])
    avg = seed_average([r1, r2], [5])
    np.testing.assert_allclose(avg["hr@5"], [1.0, 0.5, 0.0])
    np.testing.assert_allclose(avg["mrr@5"], [(1 + 1 / 5) / 2, 0.5, 0.0])
    with pytest.raises(ValueError, match="different numbers of users"):
        seed_average([r1, np.array([1, 2])], [5])
    assert paired_p(np.zeros(5), np.ones(5)) == 0.0  # a constant non-zero difference
    with pytest.raises(ValueError):
        paired_p(np.zeros(3), np.ones(3), test="nope")
