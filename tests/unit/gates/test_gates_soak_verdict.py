"""The soak verdict catches each kind of degradation and passes a flat, noisy run."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from sonia.gates.evidence import Verdict
from sonia.gates.load_rows import memory_field, route_field, row_columns
from sonia.gates.soak_verdict import SoakProfile, evaluate_soak

ROUTES = ("chat", "actions")
SERVICES = ("gateway", "memory")
MIB = 1024 * 1024
PROFILE = SoakProfile(warmup_windows=5, min_windows=60, max_error_rate=0.005, use_wilson=True,
                      latency_p95_slope_ms_per_hour=5.0, memory_slope_bytes_per_hour=4 * MIB)


def synthetic_rows(
    windows: int = 180,
    *,
    seed: int = 1,
    p95: Callable[[int], float] = lambda i: 40.0,
    memory: Callable[[str, int], float] = lambda s, i: 80 * MIB,
    errors: Callable[[int], int] = lambda i: 0,
    behind: Callable[[int], bool] = lambda i: False,
    requests: int = 120,
) -> list[dict[str, Any]]:
    """Per-minute rows shaped like the load generator's, with noise on every series."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(windows):
        row: dict[str, Any] = dict.fromkeys(row_columns(ROUTES, SERVICES), 0)
        row.update({"window": i, "start_utc": "", "start_s": 60.0 * i, "end_s": 60.0 * (i + 1)})
        for route in ROUTES:
            failed = errors(i)
            base = p95(i) + rng.normal(0, 4)
            row.update({
                route_field(route, "scheduled"): requests, route_field(route, "count"): requests,
                route_field(route, "ok"): requests - failed,
                route_field(route, "errors"): failed, route_field(route, "err_5xx"): failed,
                route_field(route, "p50_ms"): base / 2, route_field(route, "p95_ms"): base,
                route_field(route, "p99_ms"): base * 1.5, route_field(route, "max_ms"): base * 2,
            })
        row["all.count"] = requests * len(ROUTES)
        row["all.errors"] = sum(row[route_field(r, "errors")] for r in ROUTES)
        row["lag_p99_ms"] = 300.0 if behind(i) else 1.0
        row["behind"] = int(behind(i))
        for service in SERVICES:
            row[memory_field(service)] = int(memory(service, i) + rng.normal(0, 2 * MIB))
        rows.append(row)
    return rows


def failed_checks(verdict: Verdict) -> list[str]:
    return [c.name for c in verdict.failures]


def test_a_flat_noisy_run_passes() -> None:
    verdict = evaluate_soak(synthetic_rows(), PROFILE, stuck_sessions=0)
    assert verdict.status == "GO", failed_checks(verdict)
    names = {c.name for c in verdict.checks}
    assert {"memory trend (gateway)", "p95 latency trend (chat)", "error rate (all routes)",
            "stuck sessions", "generator kept up"} <= names
    assert verdict.thresholds["max_error_rate"] == 0.005


def test_a_memory_leak_is_caught() -> None:
    leak = synthetic_rows(memory=lambda s, i: 80 * MIB + (i * MIB / 6 if s == "memory" else 0))
    verdict = evaluate_soak(leak, PROFILE, stuck_sessions=0)
    assert verdict.status == "NO-GO"
    assert failed_checks(verdict) == ["memory trend (memory)"]


def test_a_rising_p95_is_caught() -> None:
    verdict = evaluate_soak(synthetic_rows(p95=lambda i: 40.0 + i * 0.3), PROFILE,
                            stuck_sessions=0)
    assert verdict.status == "NO-GO"
    assert set(failed_checks(verdict)) == {"p95 latency trend (chat)",
                                           "p95 latency trend (actions)"}


def test_an_error_burst_is_caught() -> None:
    burst = synthetic_rows(errors=lambda i: 60 if 100 <= i < 105 else 0)
    verdict = evaluate_soak(burst, PROFILE, stuck_sessions=0)
    assert verdict.status == "NO-GO"
    assert "error rate (all routes)" in failed_checks(verdict)


def test_stuck_sessions_are_a_failure() -> None:
    verdict = evaluate_soak(synthetic_rows(), PROFILE, stuck_sessions=1)
    assert verdict.status == "NO-GO" and failed_checks(verdict) == ["stuck sessions"]


def test_a_generator_that_fell_behind_makes_the_run_invalid() -> None:
    verdict = evaluate_soak(synthetic_rows(behind=lambda i: i == 90), PROFILE, stuck_sessions=0)
    assert verdict.status == "INVALID"
    assert failed_checks(verdict) == ["generator kept up"]


def test_too_little_data_is_invalid_not_a_pass() -> None:
    verdict = evaluate_soak(synthetic_rows(windows=20), PROFILE, stuck_sessions=0)
    assert verdict.status == "INVALID"
    assert "windows after warm-up" in failed_checks(verdict)


def test_rows_read_back_from_csv_give_the_same_verdict(tmp_path: Path) -> None:
    rows = synthetic_rows(memory=lambda s, i: 80 * MIB + i * MIB / 6)
    path = tmp_path / "soak-metrics.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with open(path, newline="") as handle:
        from_csv = list(csv.DictReader(handle))
    assert evaluate_soak(from_csv, PROFILE, stuck_sessions=0).to_dict() == \
        evaluate_soak(rows, PROFILE, stuck_sessions=0).to_dict()
