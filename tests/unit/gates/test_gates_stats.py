"""Verdict statistics: trends are called only when slope and significance agree."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as scipy_stats

from sonia.gates.soak.stats import mann_kendall, theil_sen_slope, trend_verdict, wilson_upper


def test_theil_sen_ignores_a_single_outlier() -> None:
    xs = list(range(20))
    ys = [2.0 * x for x in xs]
    ys[10] = 1000.0
    assert theil_sen_slope(xs, ys) == pytest.approx(2.0)


def test_mann_kendall_finds_a_monotonic_rise_and_not_noise() -> None:
    rng = np.random.default_rng(7)
    rising = np.arange(60) * 0.5 + rng.normal(0, 1, 60)
    tau, p = mann_kendall(rising.tolist(), alternative="greater")
    assert tau > 0.5 and p < 1e-6
    noise = rng.normal(0, 1, 60)
    _, p_noise = mann_kendall(noise.tolist(), alternative="greater")
    assert p_noise > 0.05


def test_mann_kendall_agrees_with_kendalls_tau_against_time() -> None:
    rng = np.random.default_rng(3)
    ys = np.round(rng.normal(0, 1, 80) + np.arange(80) * 0.01, 1)  # rounding makes ties
    _, p = mann_kendall(ys.tolist())
    reference = scipy_stats.kendalltau(np.arange(80), ys)
    assert p == pytest.approx(reference.pvalue, abs=0.02)


def test_mann_kendall_of_constant_or_tiny_series_is_no_evidence() -> None:
    assert mann_kendall([5.0] * 30) == (0.0, 1.0)
    assert mann_kendall([1.0, 2.0]) == (0.0, 1.0)


def test_wilson_upper_bound_accounts_for_sample_size() -> None:
    assert wilson_upper(0, 30) > 0.05  # 30 clean requests prove little
    assert wilson_upper(0, 200_000) < 0.0001
    assert wilson_upper(10, 1000) > 0.01
    assert wilson_upper(0, 0) == 1.0
    with pytest.raises(ValueError):
        wilson_upper(5, 3)


def test_trend_verdict_needs_both_slope_and_significance() -> None:
    minutes = [(60.0 * i, 100.0 + 0.001 * i) for i in range(120)]  # certain but harmless
    tiny = trend_verdict(minutes, min_points=30, slope_threshold_per_hour=1.0, alpha=0.05)
    assert tiny.p_value < 0.05 and not tiny.rising
    steep = [(60.0 * i, 100.0 + 0.5 * i) for i in range(120)]  # 30 units per hour
    result = trend_verdict(steep, min_points=30, slope_threshold_per_hour=1.0, alpha=0.05)
    assert result.rising and result.slope_per_hour == pytest.approx(30.0)


def test_trend_verdict_without_enough_points_is_not_a_pass() -> None:
    result = trend_verdict([(0.0, 1.0), (60.0, float("nan")), (120.0, 9.0)], min_points=10,
                           slope_threshold_per_hour=0.0, alpha=0.05)
    assert not result.enough_data and not result.rising and result.points == 2
