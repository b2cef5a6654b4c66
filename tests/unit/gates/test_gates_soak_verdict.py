"""The soak verdict catches each kind of degradation and passes a flat, noisy run.

Each bad run is fed to the verdict and must come out with the status, and the
check, that says what went wrong: a restart, a service whose memory could not
be read, a 1.2 MiB/h leak at release thresholds, requests abandoned.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gate_runs import MIB, synthetic_rows, write_rows
from gate_runs import SOAK_SERVICES as SERVICES

from sonia.gates.common.evidence import Verdict
from sonia.gates.soak.gate import PROFILES
from sonia.gates.soak.load_rows import memory_field, restarts_field, uptime_field
from sonia.gates.soak.verdict import SoakProfile, evaluate_soak, memory_growth

PROFILE = SoakProfile(warmup_windows=5, min_windows=60, max_error_rate=0.005, use_wilson=True,
                      latency_p95_slope_ms_per_hour=5.0, memory_slope_bytes_per_hour=4 * MIB,
                      memory_growth_bytes_per_hour=4 * MIB)
RELEASE = PROFILES["release"].verdict


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
    assert failed_checks(verdict) == ["memory trend (memory)", "memory growth (memory)"]


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
    write_rows(path, rows)
    with open(path, newline="") as handle:
        from_csv = list(csv.DictReader(handle))
    assert evaluate_soak(from_csv, PROFILE, stuck_sessions=0).to_dict() == \
        evaluate_soak(rows, PROFILE, stuck_sessions=0).to_dict()


def test_one_restart_is_no_go_naming_the_service() -> None:
    rows = synthetic_rows()
    for i, row in enumerate(rows):
        if i == 120:  # memory was killed and the supervisor restarted it
            row[uptime_field("memory")] = ""
            row[memory_field("memory")] = ""
        if i >= 120:
            row[restarts_field("memory")] = 1
        if i > 120:
            row[uptime_field("memory")] = 60.0 * (i - 120)
    verdict = evaluate_soak(rows, PROFILE, stuck_sessions=0)
    assert verdict.status == "NO-GO"
    assert "restarts (memory)" in failed_checks(verdict)
    assert "restarts (gateway)" not in failed_checks(verdict)
    restart = next(c for c in verdict.checks if c.name == "restarts (memory)")
    assert restart.observed == {"restarts": 1, "uptime_drops": 1, "windows_down": 1}
    assert "restarted memory 1 time" in restart.detail


def test_a_restart_the_counter_missed_is_caught_by_the_uptime() -> None:
    rows = synthetic_rows()
    for i, row in enumerate(rows[100:]):
        row[uptime_field("gateway")] = 5.0 + 60.0 * i
    verdict = evaluate_soak(rows, PROFILE, stuck_sessions=0)
    assert verdict.status == "NO-GO" and failed_checks(verdict) == ["restarts (gateway)"]


def test_windows_a_service_was_down_do_not_hide_its_restart_behind_invalid() -> None:
    """Down for 12 of 180 windows (7 %): memory could not be read because nothing ran;
    that is the restart's NO-GO, not a measurement failure."""
    rows = synthetic_rows()
    for i, row in enumerate(rows):
        if 60 <= i < 72:
            row[uptime_field("memory")] = row[memory_field("memory")] = ""
        if i >= 60:
            row[restarts_field("memory")] = 1
    verdict = evaluate_soak(rows, PROFILE, stuck_sessions=0)
    assert verdict.status == "NO-GO"
    assert "restarts (memory)" in failed_checks(verdict)
    sampled = next(c for c in verdict.checks if c.name == "memory sampled (memory)")
    assert sampled.passed and sampled.observed["windows_up"] == 168


def test_one_service_with_missing_memory_samples_is_invalid() -> None:
    """Memory unreadable in 10 of 180 windows while the service ran: 94.4 % < 95 %."""
    rows = synthetic_rows(memory=lambda s, i: np.nan if s == "memory" and i % 18 == 0
                          else 80 * MIB)
    verdict = evaluate_soak(rows, PROFILE, stuck_sessions=0)
    assert verdict.status == "INVALID"
    assert failed_checks(verdict) == ["memory sampled (memory)"]
    sampled = next(c for c in verdict.checks if c.name == "memory sampled (memory)")
    assert sampled.observed["read"] == 170 and sampled.observed["windows_up"] == 180


def test_nine_missing_samples_of_180_are_still_enough() -> None:
    rows = synthetic_rows(memory=lambda s, i: np.nan if s == "memory" and i % 20 == 0
                          else 80 * MIB)
    assert evaluate_soak(rows, PROFILE, stuck_sessions=0).status == "GO"


def test_an_unreadable_supervisor_state_is_invalid() -> None:
    rows = synthetic_rows()
    for row in rows[:20]:
        row[restarts_field("gateway")] = row[uptime_field("gateway")] = ""
    verdict = evaluate_soak(rows, PROFILE, stuck_sessions=0)
    assert verdict.status == "INVALID"
    assert "supervisor state sampled (gateway)" in failed_checks(verdict)


def test_abandoned_requests_make_the_run_invalid() -> None:
    verdict = evaluate_soak(synthetic_rows(), PROFILE, stuck_sessions=0, abandoned=2)
    assert verdict.status == "INVALID" and failed_checks(verdict) == ["requests abandoned"]


def release_rows(leak_mib_per_hour: float) -> list[dict[str, Any]]:
    """48 hours of per-minute rows, every service leaking at the same rate."""
    return synthetic_rows(windows=48 * 60, memory_noise=1 * MIB,
                          memory=lambda s, i: 80 * MIB + leak_mib_per_hour * MIB * i / 60)


def test_a_leak_of_1_2_mib_an_hour_over_48_hours_is_no_go_at_release_thresholds() -> None:
    verdict = evaluate_soak(release_rows(1.2), RELEASE, stuck_sessions=0)
    assert verdict.status == "NO-GO"
    assert set(failed_checks(verdict)) == {
        f"memory {kind} ({s})" for kind in ("trend", "growth") for s in SERVICES}
    growth = next(c for c in verdict.checks if c.name == "memory growth (memory)")
    # 1 MiB/h over the 38.9 h between the middles of the first and last tenth judged
    assert 38 * MIB < growth.threshold["bytes_at_most"] < 40 * MIB
    assert growth.observed["growth_bytes"] > 45 * MIB


def test_a_leak_under_1_mib_an_hour_passes_release() -> None:
    verdict = evaluate_soak(release_rows(0.8), RELEASE, stuck_sessions=0)
    assert verdict.status == "GO", failed_checks(verdict)


def test_a_late_step_in_memory_is_caught_by_growth_when_the_slope_misses_it() -> None:
    rows = synthetic_rows(windows=600, memory=lambda s, i: 80 * MIB + (
        60 * MIB if s == "gateway" and i >= 560 else 0))
    verdict = evaluate_soak(rows, PROFILE, stuck_sessions=0)
    assert failed_checks(verdict) == ["memory growth (gateway)"]


def test_memory_growth_compares_the_medians_of_the_first_and_last_tenth() -> None:
    values = [10, 99, 10, *[20] * 24, 40, 5, 40]  # one spike in each tenth is outvoted
    series = [(3600.0 * i / 29, float(v)) for i, v in enumerate(values)]
    growth, hours = memory_growth(series) or (0.0, 0.0)
    assert growth == 30.0
    assert hours == pytest.approx(27 / 29)  # between the middles of the two tenths
    assert memory_growth([(0.0, 1.0), (1.0, float("nan"))]) is None


def test_the_warm_up_is_a_tenth_of_the_run() -> None:
    rows = synthetic_rows(windows=300, memory=lambda s, i: 80 * MIB + (
        0 if i >= 30 else -40 * MIB + i * 4 / 3 * MIB))
    verdict = evaluate_soak(rows, PROFILE, stuck_sessions=0)
    assert verdict.status == "GO", failed_checks(verdict)
    windows = next(c for c in verdict.checks if c.name == "windows after warm-up")
    assert windows.observed == {"windows": 270, "warmup_windows": 30}


def test_a_certain_rise_within_the_threshold_is_reported_as_a_rise() -> None:
    """Passing is not "no trend": the issue's one-hour run rose at 0.7-2.6 MiB/h and
    was reported as flat. The check passes but its detail names the rise."""
    verdict = evaluate_soak(release_rows(0.8), RELEASE, stuck_sessions=0)
    trend = next(c for c in verdict.checks if c.name == "memory trend (memory)")
    assert trend.passed
    assert trend.detail == "rising at 0.80 MiB/h, within the 1.00 MiB/h allowed"
    flat = evaluate_soak(synthetic_rows(), PROFILE, stuck_sessions=0)
    assert next(c for c in flat.checks if c.name == "memory trend (memory)").detail == \
        "no significant upward trend"
