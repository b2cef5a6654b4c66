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
    uss.<service>, uptime_s.<service>, restarts.<service>             (per service)

`start_s`/`end_s` are seconds since the run started (monotonic clock);
percentiles are of successful requests, measured from the scheduled send time.

The service cells are sampled as the window closes: `uss` is the memory (USS, in
bytes) of the service's whole process tree, `uptime_s` how long its current
process has run and `restarts` how often the supervisor restarted it. A cell
whose reading failed is EMPTY, never zero: a zero would read as "no memory"
or "never restarted", and an empty cell is counted as a missing sample.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sonia.gates.common.processes import ServiceSample

__all__ = [
    "ERROR_CLASSES",
    "SERVICE_FIELDS",
    "ServiceSample",
    "memory_field",
    "restarts_field",
    "route_field",
    "row_columns",
    "row_routes",
    "row_services",
    "service_cells",
    "uptime_field",
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


SERVICE_FIELDS: tuple[str, ...] = ("uss", "uptime_s", "restarts")
"""The per-service columns, as `<field>.<service>`."""


def route_field(route: str, name: str) -> str:
    """The column of `name` (e.g. "p95_ms") for `route`."""
    return f"{route}.{name}"


def memory_field(service: str) -> str:
    """The column holding `service`'s memory in bytes."""
    return f"uss.{service}"


def uptime_field(service: str) -> str:
    """The column holding how long `service`'s current process has been up, in seconds."""
    return f"uptime_s.{service}"


def restarts_field(service: str) -> str:
    """The column holding how often the supervisor has restarted `service`."""
    return f"restarts.{service}"


def service_cells(service: str, sample: ServiceSample | None) -> dict[str, Any]:
    """The row cells of one service; a missing sample or reading is an empty cell."""
    sample = sample or ServiceSample()
    return {
        memory_field(service): "" if sample.uss_bytes is None else int(sample.uss_bytes),
        uptime_field(service): "" if sample.uptime_s is None else round(sample.uptime_s, 3),
        restarts_field(service): "" if sample.restarts is None else int(sample.restarts),
    }


def row_columns(routes: Sequence[str], services: Sequence[str]) -> list[str]:
    """Every column of a metrics row, in CSV order."""
    columns = list(_WINDOW_FIELDS)
    for route in routes:
        columns += [route_field(route, name) for name in _ROUTE_FIELDS]
    columns += list(_TOTAL_FIELDS)
    for service in services:
        columns += [memory_field(service), uptime_field(service), restarts_field(service)]
    return columns


def row_routes(row: Mapping[str, Any]) -> list[str]:
    """The routes a metrics row has columns for, in column order."""
    return [k[: -len(".count")] for k in row if k.endswith(".count") and k != "all.count"]


def row_services(row: Mapping[str, Any]) -> list[str]:
    """The services a metrics row has columns for (its memory column names them)."""
    return [k[len("uss."):] for k in row if k.startswith("uss.")]
