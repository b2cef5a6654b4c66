"""The chaos gate on PostgreSQL, quick profile (one SIGKILL per service): the stack runs
on a server the gate starts, which is restarted under load with `pg_ctl stop -m fast`
and then `-m immediate`; the services reconnect on their own and nothing acknowledged is
lost or run twice. Not a `gate` test: `make run` runs the gates on SQLite only, so this
is where the PostgreSQL profile runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sonia import pgserver
from sonia.gates import registry
from sonia.gates.chaos.evidence import PG_RESTART, PG_RESTART_MODES
from sonia.gates.chaos.history import HistoryChecks

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(420),
              pytest.mark.skipif(pgserver.missing() is not None,
                                 reason=f"needs {pgserver.missing()}")]


def test_quick_chaos_on_postgresql_restarts_the_server_and_is_go(tmp_path: Path) -> None:
    run = registry.run_gate("chaos", "quick", tmp_path,
                            {"storage": "postgresql", "kills_per_service": 1},
                            show_progress=False)
    failed = {c.name: (c.observed, c.detail) for c in run.verdict.failures}
    assert run.verdict.status == "GO", failed

    report = json.loads((run.run_dir / "chaos-report.json").read_text())
    stated = json.loads((run.run_dir / "verdict.json").read_text())
    assert stated["parameters"]["storage"] == report["profile"]["storage"] == "postgresql"
    assert report["storage"]["backend"] == "postgresql" and report["storage"]["server_version"]
    provenance = json.loads((run.run_dir / "provenance.json").read_text())
    assert provenance["storage"] == "postgresql"
    assert report["stored"]["storage_backend"] == "postgresql"
    assert report["stored"]["ledger_files"] == []
    assert not (run.run_dir / "stack-home" / "data" / "memory.db").exists()
    assert report["stored"]["memory_rows"] > 0 and report["stored"]["audit_chain_ok"]
    assert report["checks"]["counts"] == {rule: 0 for rule in HistoryChecks.RULES}

    restarts = [f for f in report["faults"] if f["kind"] == PG_RESTART]
    assert [f["detail"]["mode"] for f in restarts] == list(PG_RESTART_MODES)
    for fault in restarts:
        detail = fault["detail"]
        assert detail["new_pid"] != detail["pid"]
        assert detail["new_started"] > detail["started"]
        assert fault["effect_s"] is not None and fault["recovered"]
        window = report["fast_fail"][f"{PG_RESTART}:{detail['mode']}"]
        assert window["failed"]["count"] >= 1
    assert report["supervisor_restarts"] == dict.fromkeys(report["supervisor_restarts"], 1), \
        "no service crashed for PostgreSQL going away; only the SIGKILLs restarted them"
    assert registry.judge("chaos", run.run_dir).to_dict() == run.verdict.to_dict()
