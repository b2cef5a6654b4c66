"""The row format of load-generator evidence (`soak-metrics.csv`), shared by writer and readers.

The load generator writes one row per window; the soak verdict and the report
read them back, from memory (numbers) or from the CSV (strings; empty cells mean
"no data"). Columns, in order:

    window, start_utc, start_s, end_s,
    <route>.scheduled, <route>.count, <route>.ok, <route>.errors,
    <route>.err_<class> for class in ERROR_CLASSES, <route>.dropped,
    <route>.p50_ms, <route>.p95_ms, <route>.p99_ms, <route>.max_ms,   (per route)
    all.scheduled, all.count, all.errors, all.dropped, lag_p99_ms, lag_max_ms,
    in_flight, behind,
    uss.<service>                                                     (bytes, per service)

`start_s`/`end_s` are seconds since the run started (monotonic clock);
percentiles are of successful requests, measured from the scheduled send time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "ERROR_CLASSES",
    "memory_field",
    "route_field",
    "row_columns",
    "row_routes",
    "row_services",
]

ERROR_CLASSES: tuple[str, ...] = ("4xx", "5xx", "timeout", "connect", "transport", "other")
"""Failure classes; anything else a stream reports is counted as "other"."""

_ROUTE_FIELDS: tuple[str, ...] = (
    "scheduled", "count", "ok", "errors", *(f"err_{c}" for c in ERROR_CLASSES), "dropped",
    "p50_ms", "p95_ms", "p99_ms", "max_ms",
)
_WINDOW_FIELDS: tuple[str, ...] = ("window", "start_utc", "start_s", "end_s")
_TOTAL_FIELDS: tuple[str, ...] = (
    "all.scheduled", "all.count", "all.errors", "all.dropped", "lag_p99_ms", "lag_max_ms",
    "in_flight", "behind",
)


def route_field(route: str, name: str) -> str:
    """The column of `name` (e.g. "p95_ms") for `route`."""
    return f"{route}.{name}"


def memory_field(service: str) -> str:
    """The column holding `service`'s memory in bytes."""
    return f"uss.{service}"


def row_columns(routes: Sequence[str], services: Sequence[str]) -> list[str]:
    """Every column of a metrics row, in CSV order."""
    columns = list(_WINDOW_FIELDS)
    for route in routes:
        columns += [route_field(route, name) for name in _ROUTE_FIELDS]
    columns += list(_TOTAL_FIELDS)
    columns += [memory_field(s) for s in services]
    return columns


def row_routes(row: Mapping[str, Any]) -> list[str]:
    """The routes a metrics row has columns for, in column order."""
    return [k[: -len(".count")] for k in row if k.endswith(".count") and k != "all.count"]


def row_services(row: Mapping[str, Any]) -> list[str]:
    """The services a metrics row has a memory column for."""
    return [k[len("uss."):] for k in row if k.startswith("uss.")]
