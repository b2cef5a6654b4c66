"""The durability gate end to end in its quick profile: scheduled backups at a short
interval, a SIGKILL of the whole stack between two of them, restore into a clean home,
and the evidence of what came back and what was lost."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sonia.gates import registry

# A whole gate run: `make run` runs it, so `make test` leaves it out (marker `gate`).
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.gate]


def test_the_quick_drill_is_go_and_measures_rpo_against_the_backup_interval(
        tmp_path: Path) -> None:
    run = registry.run_gate("durability", "quick", tmp_path, {}, show_progress=False)

    assert run.verdict.status == "GO", [c.to_dict() for c in run.verdict.failures]
    assert registry.judge("durability", run.run_dir).to_dict() == run.verdict.to_dict()
    drill = json.loads((run.run_dir / "restore-drill.json").read_text())
    interval = drill["backups"]["interval_s"]
    backup_at = drill["backups"]["restored"]["created_at"]
    kill_at = drill["kill"]["at"]
    assert len(drill["backups"]["scheduled"]) >= 2
    assert backup_at < kill_at < backup_at + interval
    restored = set(drill["read_back"]["restored"])
    acked = drill["canary"]["acknowledged"]
    assert all(seq in restored for seq, _id, at in acked if at < backup_at)
    lost = [at for seq, _id, at in acked if seq not in restored]
    rpo = next(c for c in run.verdict.checks if c.name.startswith("RPO"))
    assert rpo.observed["lost"] == len(lost)
    assert 0 <= rpo.observed["oldest_lost_age_s"] <= interval
    assert set(drill["data_dir_databases"]) == set(
        drill["backups"]["restored"]["databases"].values())
    assert drill["audit"]["ok"] is True and drill["audit"]["count"] >= 3
    assert drill["configured_interval_h"] == 6
    assert set(drill["kill"]["killed"]) >= {
        "supervisor", "memory", "gateway"}
