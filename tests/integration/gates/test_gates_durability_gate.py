"""The durability gate end to end in its quick profile: backup under load, disaster,
restore into a clean home, and the evidence of what came back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sonia.gates import registry

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_the_quick_restore_drill_is_go_and_measures_rto_and_rpo(tmp_path: Path) -> None:
    run = registry.run_gate("durability", "quick", tmp_path, {}, show_progress=False)

    assert run.verdict.status == "GO", [c.to_dict() for c in run.verdict.failures]
    drill = json.loads((run.run_dir / "restore-drill.json").read_text())
    assert drill["rto_s"] < 60
    rpo = drill["rpo"]
    assert rpo["newest_restored_seq"] >= drill["backup"]["acked_before_start"] >= 1
    assert rpo["records"] == rpo["last_written_seq"] - rpo["newest_restored_seq"]
    assert drill["api_check"]["prefix"] is True
    assert set(drill["backup"]["databases"]) >= {"memory", "gateway", "eva"}
    assert all(v == "ok" for v in drill["integrity_after_run"].values())
    assert drill["disaster"]["still_readable"] is False
