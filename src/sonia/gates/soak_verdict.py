"""The soak verdict: from per-window rows to GO, NO-GO or INVALID, every check listed.

The rows are the load generator's (`loadgen.row_columns`), either as written to
`soak-metrics.csv` (strings) or as produced in memory (numbers). The profile holds
every threshold and is written into the summary beside the verdict, so a reader
sees what was required and not only what was seen.

Checks, in order (`kind` as in `evidence`):

    validity   enough windows after the warm-up to judge a trend
    validity   the generator kept up (windows flagged `behind`, after warm-up)
    validity   requests were completed at all; memory was sampled
    criterion  error rate over the whole run, and per route, below the threshold
               (on the Wilson upper bound when `use_wilson`, else the observed rate)
    criterion  no rising p95 latency per route (after warm-up)
    criterion  no rising memory per service (after warm-up)
    criterion  stuck sessions at most the allowed count (0)

A trend that lacks data (fewer usable points than `min_windows`) is a validity
failure, not a pass. Errors count from the first window: an error during warm-up
is still an error a user saw; warm-up only keeps start-up effects (caches
filling, lazy imports) out of the trend tests.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sonia.gates.evidence import CRITERION, VALIDITY, Check, Verdict
from sonia.gates.load_rows import memory_field, route_field, row_routes, row_services
from sonia.gates.stats import trend_verdict, wilson_upper

__all__ = ["SoakProfile", "evaluate_soak"]

MIB = 1024 * 1024


@dataclass(frozen=True)
class SoakProfile:
    """The numbers a soak is judged by; `quick` and `release` differ only here."""

    warmup_windows: int = 5
    min_windows: int = 30
    max_error_rate: float = 0.005
    use_wilson: bool = True
    wilson_confidence: float = 0.95
    trend_alpha: float = 0.05
    latency_p95_slope_ms_per_hour: float = 5.0
    memory_slope_bytes_per_hour: float = 4 * MIB
    memory_slope_overrides: Mapping[str, float] = field(default_factory=dict)
    max_behind_window_fraction: float = 0.0
    max_stuck_sessions: int = 0

    def memory_threshold(self, service: str) -> float:
        return float(self.memory_slope_overrides.get(service, self.memory_slope_bytes_per_hour))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["memory_slope_overrides"] = dict(self.memory_slope_overrides)
        return data


def _number(value: Any) -> float:
    """A cell as a float; empty or missing cells are NaN."""
    if value is None or value == "":
        return math.nan
    return float(value)


def _count(value: Any) -> int:
    number = _number(value)
    return 0 if math.isnan(number) else int(number)


def _midpoint(row: Mapping[str, Any]) -> float:
    return (_number(row["start_s"]) + _number(row["end_s"])) / 2.0


def _rate_check(name: str, errors: int, requests: int, profile: SoakProfile) -> Check:
    rate = errors / requests if requests else math.nan
    observed: dict[str, Any] = {"errors": errors, "requests": requests,
                                "rate": None if math.isnan(rate) else rate}
    if profile.use_wilson:
        bound = wilson_upper(errors, requests, profile.wilson_confidence)
        observed["wilson_upper"] = bound
        judged = bound
        threshold: Any = {"wilson_upper_below": profile.max_error_rate,
                          "confidence": profile.wilson_confidence}
    else:
        judged = rate
        threshold = {"rate_below": profile.max_error_rate}
    passed = requests > 0 and judged < profile.max_error_rate
    return Check(name, threshold, observed, passed, CRITERION)


def _trend_check(name: str, series: list[tuple[float, float]], threshold_per_hour: float,
                 profile: SoakProfile, unit: str) -> Check:
    result = trend_verdict(series, min_points=profile.min_windows,
                           slope_threshold_per_hour=threshold_per_hour,
                           alpha=profile.trend_alpha)
    threshold = {f"slope_{unit}_per_hour_at_most": threshold_per_hour,
                 "mann_kendall_alpha": profile.trend_alpha, "min_points": profile.min_windows}
    observed = {f"slope_{unit}_per_hour": result.slope_per_hour, "p_value": result.p_value,
                "tau": result.tau, "points": result.points}
    if not result.enough_data:
        return Check(name, threshold, observed, False, VALIDITY,
                     f"only {result.points} usable windows, {profile.min_windows} needed")
    detail = "rising" if result.rising else "no upward trend"
    return Check(name, threshold, observed, not result.rising, CRITERION, detail)


def evaluate_soak(rows: Sequence[Mapping[str, Any]], profile: SoakProfile, *,
                  stuck_sessions: int) -> Verdict:
    """Judge a soak run from its rows, the profile and the count of stuck sessions."""
    checks: list[Check] = []
    judged = list(rows[profile.warmup_windows:])
    checks.append(Check(
        "windows after warm-up", {"at_least": profile.min_windows},
        {"windows": len(judged), "warmup_windows": min(len(rows), profile.warmup_windows)},
        len(judged) >= profile.min_windows, VALIDITY,
    ))
    behind = sum(1 for r in judged if _count(r.get("behind")) > 0)
    behind_fraction = behind / len(judged) if judged else 0.0
    checks.append(Check(
        "generator kept up", {"behind_window_fraction_at_most":
                              profile.max_behind_window_fraction},
        {"behind_windows": behind, "windows": len(judged), "fraction": behind_fraction,
         "dropped": sum(_count(r.get("all.dropped")) for r in judged),
         "lag_p99_ms_max": max((v for v in (_number(r.get("lag_p99_ms")) for r in judged)
                                if not math.isnan(v)), default=None)},
        behind_fraction <= profile.max_behind_window_fraction, VALIDITY,
    ))

    routes = row_routes(rows[0]) if rows else []
    services = row_services(rows[0]) if rows else []
    total = sum(_count(r.get("all.count")) for r in rows)
    checks.append(Check("requests completed", {"at_least": 1}, {"requests": total},
                        total > 0, VALIDITY))
    checks.append(Check("memory sampled", {"services_at_least": 1}, {"services": services},
                        bool(services), VALIDITY))

    errors = sum(_count(r.get("all.errors")) for r in rows)
    checks.append(_rate_check("error rate (all routes)", errors, total, profile))
    for route in routes:
        route_errors = sum(_count(r.get(route_field(route, "errors"))) for r in rows)
        route_total = sum(_count(r.get(route_field(route, "count"))) for r in rows)
        checks.append(_rate_check(f"error rate ({route})", route_errors, route_total, profile))

    for route in routes:
        series = [(_midpoint(r), _number(r.get(route_field(route, "p95_ms")))) for r in judged]
        checks.append(_trend_check(f"p95 latency trend ({route})", series,
                                   profile.latency_p95_slope_ms_per_hour, profile, "ms"))
    for service in services:
        series = [(_midpoint(r), _number(r.get(memory_field(service)))) for r in judged]
        checks.append(_trend_check(f"memory trend ({service})", series,
                                   profile.memory_threshold(service), profile, "bytes"))

    checks.append(Check("stuck sessions", {"at_most": profile.max_stuck_sessions},
                        stuck_sessions, stuck_sessions <= profile.max_stuck_sessions, CRITERION))
    return Verdict.of("soak", checks, profile.to_dict())
