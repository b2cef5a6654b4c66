"""Verdict statistics: is a series trending up, and is an error rate low enough?

A soak gate must tell a leak or a slow degradation from noise. Two tests agree
before a series is called rising:

- the Theil-Sen slope (median of pairwise slopes; robust to outliers such as one
  garbage-collection spike) is above a threshold the profile sets in units per
  hour, so a statistically certain but harmless drift of a few bytes does not fail
  a release; and
- the Mann-Kendall test (a rank test: no assumption of normal residuals) finds a
  monotonic upward trend at significance `alpha`, so a large slope fitted to pure
  noise does not fail it either.

Error rates can be judged on the observed rate or, more strictly, on the upper
bound of the one-sided Wilson score interval, which accounts for how many requests
were made: 0 errors in 30 requests does not prove a rate below 0.5 %.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np


def _scipy_stats() -> Any:
    """scipy.stats, imported on first use: it costs seconds, and most commands never need it."""
    from scipy import stats

    return stats

__all__ = [
    "TrendResult",
    "mann_kendall",
    "theil_sen_slope",
    "trend_verdict",
    "wilson_upper",
]


def theil_sen_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """The Theil-Sen slope of ys against xs (units of y per unit of x); 0.0 under 2 points."""
    if len(xs) != len(ys):
        raise ValueError(f"xs has {len(xs)} points but ys has {len(ys)}")
    if len(xs) < 2:
        return 0.0
    result = _scipy_stats().theilslopes(np.asarray(ys, dtype=float), np.asarray(xs, dtype=float))
    return float(result.slope)


def mann_kendall(ys: Sequence[float],
                 alternative: Literal["two-sided", "greater", "less"] = "two-sided",
                 ) -> tuple[float, float]:
    """The Mann-Kendall trend test of ys in the order given: (tau, p_value).

    S = sum over i < j of sign(y_j - y_i); its variance under "no trend" is
    n(n-1)(2n+5)/18 less the tie correction sum t(t-1)(2t+5)/18 over groups of
    equal values, and Z = (S - sign(S)) / sqrt(var) with the usual continuity
    correction. tau is Kendall's tau-a, S / (n(n-1)/2). `alternative="greater"`
    asks for a one-sided upward test. Fewer than 3 points, or all points equal,
    give (0.0, 1.0): no evidence of a trend.

    S is computed lag by lag, O(n^2) time and O(n) memory: 48 hours of per-minute
    windows (2880 points) take a few tens of milliseconds.
    """
    y = np.asarray(ys, dtype=float)
    n = int(y.size)
    if n < 3:
        return 0.0, 1.0
    s = 0
    for lag in range(1, n):
        s += int(np.sign(y[lag:] - y[:-lag]).sum())
    _, counts = np.unique(y, return_counts=True)
    ties = counts[counts > 1].astype(float)
    var = (n * (n - 1) * (2 * n + 5) - float(np.sum(ties * (ties - 1) * (2 * ties + 5)))) / 18.0
    tau = s / (n * (n - 1) / 2.0)
    if var <= 0:
        return 0.0, 1.0
    z = (s - math.copysign(1, s)) / math.sqrt(var) if s != 0 else 0.0
    if alternative == "greater":
        p = float(_scipy_stats().norm.sf(z))
    elif alternative == "less":
        p = float(_scipy_stats().norm.cdf(z))
    else:
        p = float(2 * _scipy_stats().norm.sf(abs(z)))
    return float(tau), min(1.0, p)


def wilson_upper(errors: int, total: int, confidence: float = 0.95) -> float:
    """Upper bound of the one-sided Wilson score interval for errors/total.

    With probability `confidence` the true error rate is below this bound. No
    requests at all prove nothing: the bound is then 1.0.
    """
    if errors < 0 or total < 0 or errors > total:
        raise ValueError(f"need 0 <= errors <= total, got errors={errors}, total={total}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    if total == 0:
        return 1.0
    z = float(_scipy_stats().norm.ppf(confidence))
    p = errors / total
    denominator = 1 + z * z / total
    centre = p + z * z / (2 * total)
    margin = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
    return min(1.0, (centre + margin) / denominator)


@dataclass(frozen=True)
class TrendResult:
    """Whether a series rises, and the numbers that decided it (written to the summary)."""

    slope_per_hour: float
    p_value: float
    tau: float
    points: int
    rising: bool
    enough_data: bool
    slope_threshold_per_hour: float
    alpha: float
    min_points: int

    def to_dict(self) -> dict[str, float | int | bool]:
        return {
            "slope_per_hour": self.slope_per_hour,
            "p_value": self.p_value,
            "tau": self.tau,
            "points": self.points,
            "rising": self.rising,
            "enough_data": self.enough_data,
            "slope_threshold_per_hour": self.slope_threshold_per_hour,
            "alpha": self.alpha,
            "min_points": self.min_points,
        }


def trend_verdict(series: Sequence[tuple[float, float]], *, min_points: int,
                  slope_threshold_per_hour: float, alpha: float) -> TrendResult:
    """Decide whether `series` of (time in seconds, value) rises.

    Points whose value is NaN (a window without data) are left out. Rising means
    both: the Theil-Sen slope exceeds `slope_threshold_per_hour` (value units per
    hour) and the one-sided Mann-Kendall test rejects "no upward trend" at `alpha`.
    With fewer than `min_points` usable points, `enough_data` is False and
    `rising` is False: the caller must treat that as an invalid run, not a pass.
    """
    points = [(float(t), float(v)) for t, v in series if not math.isnan(float(v))]
    points.sort()
    xs = [t for t, _ in points]
    ys = [v for _, v in points]
    enough = len(points) >= max(min_points, 3)
    slope = theil_sen_slope(xs, ys) * 3600.0 if len(points) >= 2 else 0.0
    tau, p_value = mann_kendall(ys, alternative="greater")
    rising = enough and slope > slope_threshold_per_hour and p_value < alpha
    return TrendResult(
        slope_per_hour=slope, p_value=p_value, tau=tau, points=len(points), rising=rising,
        enough_data=enough, slope_threshold_per_hour=slope_threshold_per_hour, alpha=alpha,
        min_points=min_points,
    )
