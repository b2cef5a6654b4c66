"""The soak verdict: from per-window rows to GO, NO-GO or INVALID, every check listed.

The rows are the load generator's (`load_rows`), either as written to
`soak-metrics.csv` (strings) or as produced in memory (numbers). The profile holds
every threshold and is written into the summary beside the verdict, so a reader
sees what was required and not only what was seen.

Checks, in order (`kind` as in `evidence`):

    validity   enough windows after the warm-up to judge a trend
    validity   the generator kept up (windows flagged `behind`, after warm-up)
    validity   no request abandoned at the end (still running past its timeout)
    validity   requests were completed at all
    validity   per service: the supervisor's state read in >= 95 % of windows,
               memory read in >= 95 % of the windows in which the service was up
    criterion  per service: no restart (counter above 0, uptime going backwards,
               or a window in which the supervisor did not list it as running)
    criterion  error rate over the whole run, and per route, below the threshold
               (on the Wilson upper bound when `use_wilson`, else the observed rate)
    criterion  no rising p95 latency per route (after warm-up)
    criterion  per service: no rising memory (slope) and no memory growth (total)
    criterion  stuck sessions at most the allowed count (0)

The warm-up is the first `warmup_fraction` of the windows (at least
`warmup_windows`): start-up effects (caches filling, lazy imports) stay out of
the trend tests. Errors and restarts count from the first window: an error
during warm-up is still an error a user saw.

A trend that lacks data (fewer usable points than `min_windows`) is a validity
failure, not a pass. Memory is judged twice, because each test misses what the
other sees: the slope (Theil-Sen, confirmed by Mann-Kendall) catches a steady
leak, the growth (the median of the last tenth of the judged windows less the
median of the first tenth) catches a rise that comes in steps or late. The
growth allowed is `memory_growth_bytes_per_hour` times the hours between the
middles of those two tenths, so a release run of any length is held to the same
1 MiB/h (about 48 MiB over 48 hours).

A window in which the supervisor did not list a service as running does not
count against its memory coverage: nothing could be read, and the restart
check already fails the run for it. A window in which the service ran and its
memory could not be read is a missing sample; the empty cell is never a zero.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sonia.gates.common.evidence import CRITERION, VALIDITY, Check, Verdict
from sonia.gates.soak.load_rows import (
    memory_field,
    restarts_field,
    route_field,
    row_routes,
    row_services,
    uptime_field,
)
from sonia.gates.soak.stats import trend_verdict, wilson_upper

__all__ = ["MIB", "SoakProfile", "evaluate_soak", "memory_growth", "warmup_count"]

MIB = 1024 * 1024


@dataclass(frozen=True)
class SoakProfile:
    """The numbers a soak is judged by; `quick` and `release` differ only here."""

    warmup_windows: int = 5
    warmup_fraction: float = 0.1
    min_windows: int = 30
    max_error_rate: float = 0.005
    use_wilson: bool = True
    wilson_confidence: float = 0.95
    trend_alpha: float = 0.05
    latency_p95_slope_ms_per_hour: float = 5.0
    memory_slope_bytes_per_hour: float = 1 * MIB
    memory_growth_bytes_per_hour: float = 1 * MIB
    memory_slope_overrides: Mapping[str, float] = field(default_factory=dict)
    max_behind_window_fraction: float = 0.0
    max_abandoned: int = 0
    min_sampled_fraction: float = 0.95
    max_restarts: int = 0
    max_stuck_sessions: int = 0

    def memory_threshold(self, service: str) -> float:
        return float(self.memory_slope_overrides.get(service, self.memory_slope_bytes_per_hour))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["memory_slope_overrides"] = dict(self.memory_slope_overrides)
        return data


def warmup_count(windows: int, profile: SoakProfile) -> int:
    """How many leading windows are warm-up: a fraction of the run, at least a floor."""
    return max(profile.warmup_windows, math.ceil(profile.warmup_fraction * windows))


def _number(value: Any) -> float:
    """A cell as a float; empty or missing cells are NaN, anything else not a number raises."""
    if value is None or value == "":
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not a number: {value!r}") from exc


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
    significant = result.p_value < profile.trend_alpha
    if result.rising:
        detail = "rising"
    elif significant:  # say so: a certain rise below the threshold is not "no trend"
        scale, shown = (MIB, "MiB") if unit == "bytes" else (1.0, unit)
        detail = (f"rising at {result.slope_per_hour / scale:.2f} {shown}/h, "
                  f"within the {threshold_per_hour / scale:.2f} {shown}/h allowed")
    else:
        detail = "no significant upward trend"
    return Check(name, threshold, observed, not result.rising, CRITERION, detail)


def memory_growth(series: Sequence[tuple[float, float]]) -> tuple[float, float] | None:
    """(growth, hours): the median of the last tenth of the usable points less the
    median of the first tenth, and the hours between the middles of those two
    tenths (the time the growth took); None under 2 usable points."""
    points = sorted((t, v) for t, v in series if not math.isnan(v))
    if len(points) < 2:
        return None
    k = max(1, math.ceil(len(points) / 10))
    head = sorted(v for _, v in points[:k])
    tail = sorted(v for _, v in points[-k:])

    def median(values: list[float]) -> float:
        middle = len(values) // 2
        return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2

    times = [t for t, _ in points]
    hours = (median(times[-k:]) - median(times[:k])) / 3600.0
    return median(tail) - median(head), hours


def _growth_check(service: str, series: list[tuple[float, float]],
                  profile: SoakProfile) -> Check:
    name = f"memory growth ({service})"
    per_hour = profile.memory_growth_bytes_per_hour
    measured = memory_growth(series)
    points = sum(1 for _, v in series if not math.isnan(v))
    if measured is None or points < profile.min_windows:
        return Check(name, {"bytes_per_judged_hour_at_most": per_hour}, {"points": points},
                     False, VALIDITY, f"only {points} usable windows, "
                                      f"{profile.min_windows} needed")
    growth, hours = measured
    allowed = per_hour * hours
    return Check(name, {"bytes_per_judged_hour_at_most": per_hour, "bytes_at_most": allowed},
                 {"growth_bytes": growth, "judged_hours": hours, "points": points},
                 growth <= allowed, CRITERION,
                 f"{growth / MIB:.2f} MiB over {hours:.2f} h, {allowed / MIB:.2f} MiB allowed")


def _service_checks(rows: Sequence[Mapping[str, Any]], service: str,
                    profile: SoakProfile) -> list[Check]:
    """Coverage (validity) and restarts (criterion) of one service over every window."""
    restarts = [_number(r.get(restarts_field(service))) for r in rows]
    uptimes = [_number(r.get(uptime_field(service))) for r in rows]
    memory = [_number(r.get(memory_field(service))) for r in rows]
    windows = len(rows)
    state_read = sum(1 for v in restarts if not math.isnan(v))
    up = [i for i, (c, u) in enumerate(zip(restarts, uptimes, strict=True))
          if not math.isnan(c) and not math.isnan(u)]
    down = state_read - len(up)
    memory_read = sum(1 for i in up if not math.isnan(memory[i]))
    state_fraction = state_read / windows if windows else 0.0
    memory_fraction = memory_read / len(up) if up else 0.0
    minimum = profile.min_sampled_fraction
    # Uptime backs up the counter (a supervisor that restarted would reset it). It is
    # wall-clock based, but advances a whole window between rows, so only a clock
    # stepped back by more than a window could fake a drop.
    known = [u for u in uptimes if not math.isnan(u)]
    drops = sum(1 for before, after in zip(known, known[1:], strict=False) if after < before)
    most = int(max((c for c in restarts if not math.isnan(c)), default=0))
    restarted = most > profile.max_restarts or drops > 0 or down > 0
    details = []
    if most:
        details.append(f"the supervisor restarted {service} {most} time(s)")
    if drops:
        details.append(f"its uptime went back {drops} time(s)")
    if down:
        details.append(f"it was not running in {down} window(s)")
    return [
        Check(f"supervisor state sampled ({service})", {"window_fraction_at_least": minimum},
              {"windows": windows, "read": state_read, "fraction": state_fraction},
              windows > 0 and state_fraction >= minimum, VALIDITY,
              "restart count and uptime, from the supervisor's state file"),
        Check(f"memory sampled ({service})", {"up_window_fraction_at_least": minimum},
              {"windows_up": len(up), "read": memory_read, "fraction": memory_fraction},
              bool(up) and memory_fraction >= minimum, VALIDITY,
              "an empty cell is a reading that failed while the service ran"),
        Check(f"restarts ({service})", {"restarts_at_most": profile.max_restarts,
                                        "uptime_drops": 0, "windows_down": 0},
              {"restarts": most, "uptime_drops": drops, "windows_down": down},
              not restarted, CRITERION,
              "; ".join(details) if details else "up for the whole run"),
    ]


def evaluate_soak(rows: Sequence[Mapping[str, Any]], profile: SoakProfile, *,
                  stuck_sessions: int, abandoned: int = 0) -> Verdict:
    """Judge a soak run from its rows, the profile, stuck sessions and abandoned requests.

    Raises ValueError when a cell that must be a number is not one.
    """
    checks: list[Check] = []
    warmup = warmup_count(len(rows), profile)
    judged = list(rows[warmup:])
    checks.append(Check(
        "windows after warm-up", {"at_least": profile.min_windows},
        {"windows": len(judged), "warmup_windows": min(len(rows), warmup)},
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
    checks.append(Check(
        "requests abandoned", {"at_most": profile.max_abandoned}, {"abandoned": abandoned},
        abandoned <= profile.max_abandoned, VALIDITY,
        "requests still running past their timeout when the run ended have no outcome",
    ))

    routes = row_routes(rows[0]) if rows else []
    services = row_services(rows[0]) if rows else []
    total = sum(_count(r.get("all.count")) for r in rows)
    checks.append(Check("requests completed", {"at_least": 1}, {"requests": total},
                        total > 0, VALIDITY))
    if not services:
        checks.append(Check("services sampled", {"services_at_least": 1}, {"services": []},
                            False, VALIDITY, "the rows have no service columns"))
    for service in services:
        checks.extend(_service_checks(rows, service, profile))

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
        checks.append(_growth_check(service, series, profile))

    checks.append(Check("stuck sessions", {"at_most": profile.max_stuck_sessions},
                        stuck_sessions, stuck_sessions <= profile.max_stuck_sessions, CRITERION))
    return Verdict.of("soak", checks, profile.to_dict())
