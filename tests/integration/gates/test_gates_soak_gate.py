"""The soak gate end to end, shortened: real stack, real traffic, every piece of evidence.

A 25-second run cannot judge a trend (too few windows), so its verdict must say
INVALID for that reason and no other: the traffic itself (chat, actions with
approvals, voice turns over the session WebSocket) must be error-free, every
service's memory, uptime and restart count sampled in every window, nothing
restarted, no session left open, and the sampled correlation IDs found in the
gateway log.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from sonia import SERVICES
from sonia.gates import catalog, registry

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROUTES = ("chat", "action_read", "action_write", "voice_session")


def test_a_short_soak_leaves_complete_evidence(tmp_path: Path) -> None:
    run = registry.run_gate("soak", "quick", tmp_path, {"duration_s": 25.0},
                            show_progress=False)

    for name in catalog.load("soak").EVIDENCE_FILES:
        assert (run.run_dir / name).is_file(), name
    with open(run.run_dir / "soak-metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) >= 4
    for route in ROUTES:
        assert sum(int(r[f"{route}.count"]) for r in rows) > 0, route
    assert all(r[f"uss.{s}"] and r[f"uptime_s.{s}"] and r[f"restarts.{s}"] == "0"
               for r in rows for s in SERVICES)
    # a voice turn succeeds only when the voice service answered it (session.ready,
    # reply events, response.final come from voice through the gateway's relay)
    assert sum(int(r["voice_session.ok"]) for r in rows) > 0

    checks = {c.name: c for c in run.verdict.checks}
    failed = {c.name for c in run.verdict.failures}
    assert run.verdict.status == "INVALID"
    assert "windows after warm-up" in failed
    assert all(c.kind == "validity" for c in run.verdict.failures), failed
    assert checks["error rate (all routes)"].passed
    assert checks["error rate (voice_session)"].passed
    assert all(checks[f"restarts ({s})"].passed for s in SERVICES)
    assert all(checks[f"memory sampled ({s})"].passed for s in SERVICES)
    assert checks["stuck sessions"].passed
    assert checks["correlation IDs found in the gateway log"].passed

    summary = json.loads((run.run_dir / "soak-summary.json").read_text())
    assert summary["verdict"]["status"] == "INVALID"
    assert summary["sessions"]["method"] == "api"
    assert summary["environment"]["python"]
    report = (run.run_dir / "soak-report.html").read_text()
    assert "data:image/png;base64," in report and "INVALID" in report


def test_the_soak_profiles_take_a_duration_override() -> None:
    release = registry.profile_for("soak", "release", {"duration_s": 3600.0})
    assert release.duration_s == 3600.0 and release.window_seconds == 60.0
    assert release.verdict.use_wilson
    quick = registry.profile_for("soak", "quick", {})
    assert quick.duration_s <= 180 and quick.window_seconds <= 10
    windows = quick.duration_s / quick.window_seconds - quick.verdict.warmup_windows
    assert windows >= quick.verdict.min_windows, "quick must judge trends, not be INVALID"
