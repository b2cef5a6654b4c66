"""The durability drill on PostgreSQL, quick profile: stack A on a server the gate
starts, scheduled backups holding its pg_dump, a power cut that also loses the
database, a restore of the dump into the empty database, the same RPO/RTO judge. Not a
`gate` test: `make run` runs the gates on SQLite only, so this is where it runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sonia import pgserver
from sonia.gates import registry
from sonia.pgdump import SCHEMAS

pytestmark = [pytest.mark.integration, pytest.mark.slow,
              pytest.mark.skipif(pgserver.missing() is not None,
                                 reason=f"needs {pgserver.missing()}")]


def test_the_quick_drill_on_postgresql_is_go_and_restores_the_dump(tmp_path: Path) -> None:
    run = registry.run_gate("durability", "quick", tmp_path, {"storage": "postgresql"},
                            show_progress=False)

    assert run.verdict.status == "GO", [c.to_dict() for c in run.verdict.failures]
    assert registry.judge("durability", run.run_dir).to_dict() == run.verdict.to_dict()
    drill = json.loads((run.run_dir / "restore-drill.json").read_text())
    assert drill["profile"]["storage"] == "postgresql"
    provenance = json.loads((run.run_dir / "provenance.json").read_text())
    assert provenance["storage"] == "postgresql"
    storage = drill["storage"]
    assert storage["backend"] == "postgresql" and storage["schemas_after_loss"] == []
    assert storage["dump_schemas"] == storage["restored_schemas"] == list(SCHEMAS)
    assert "memory.db" not in drill["data_dir_databases"]
    restored = set(drill["read_back"]["restored"])
    backup_at = drill["backups"]["restored"]["created_at"]
    acked = drill["canary"]["acknowledged"]
    assert all(seq in restored for seq, _id, at in acked if at < backup_at)
    assert any(at < backup_at for _seq, _id, at in acked), "the dump held canaries"
    assert drill["audit"]["ok"] is True and drill["audit"]["count"] >= 3
    rto = next(c for c in run.verdict.checks if c.name.startswith("RTO"))
    assert rto.passed and rto.observed == drill["rto_s"]
