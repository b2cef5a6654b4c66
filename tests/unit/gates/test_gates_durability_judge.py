"""The durability judge, fed recorded drills: one good run, then runs that each hide one
failure the seed cares about (an old loss, a database left out of the backup, a broken
restored audit chain, unexpected errors). The judge reads `restore-drill.json` only."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from gate_runs import BACKUP_AT, durability, good_drill

from sonia.backup import create_backup, verify_backup
from sonia.errors import ConfigError, GateError
from sonia.gates.durability import EVIDENCE, PROFILES, _databases_in, judge
from sonia.home import Home

INTERVAL = float(PROFILES["quick"].backup_interval_s)
"""`good_drill()` is a quick-profile drill: the last of two backups this far apart restored."""


def verdict_of(tmp_path: Path, change: Callable[[dict[str, Any]], object] = lambda d: None
               ) -> tuple[str, dict[str, Any]]:
    verdict = judge(durability(tmp_path, change=change))
    return verdict.status, {c.name: c for c in verdict.failures}


def test_a_good_drill_is_go_and_reports_the_loss_against_the_interval(tmp_path: Path) -> None:
    status, failed = verdict_of(tmp_path)
    assert status == "GO", failed
    (tmp_path / EVIDENCE).write_text(json.dumps(good_drill()))
    rpo = next(c for c in judge(tmp_path).checks if c.name.startswith("RPO"))
    assert rpo.observed["lost"] == 18
    assert rpo.observed["oldest_lost_age_s"] == pytest.approx(2.2, abs=0.01)
    assert rpo.threshold == {"oldest_lost_age_s_at_most": INTERVAL}


def test_a_lost_write_older_than_the_last_backup_is_no_go(tmp_path: Path) -> None:
    def lose_an_old_one(d: dict[str, Any]) -> None:
        d["read_back"]["restored"].remove(10)  # acknowledged 2 s before the backup

    status, failed = verdict_of(tmp_path, lose_an_old_one)
    assert status == "NO-GO"
    assert failed["no loss older than the restored backup"].observed == 1
    assert "10" in failed["no loss older than the restored backup"].detail


def test_a_database_missing_from_the_manifest_is_no_go_by_name(tmp_path: Path) -> None:
    status, failed = verdict_of(
        tmp_path, lambda d: d["data_dir_databases"].append("openclaw.sqlite"))
    assert status == "NO-GO"
    assert "openclaw.sqlite" in failed["every database in the backup"].detail


def test_a_broken_restored_audit_chain_is_no_go(tmp_path: Path) -> None:
    def break_chain(d: dict[str, Any]) -> None:
        d["audit"] = {"ok": False, "count": 6, "first_bad_seq": 3,
                      "reason": "record 3: hash does not match its content"}

    status, failed = verdict_of(tmp_path, break_chain)
    assert status == "NO-GO"
    assert "record 3" in failed["restored audit chain verifies"].detail


def test_unexpected_errors_before_the_kill_are_no_go_with_a_count(tmp_path: Path) -> None:
    def fail_two(d: dict[str, Any]) -> None:
        d["canary"]["errors"] += [{"seq": 5, "error": "status 503", "sent_at": BACKUP_AT,
                                   "at": BACKUP_AT + 0.1}] * 2

    status, failed = verdict_of(tmp_path, fail_two)
    assert status == "NO-GO"
    assert failed["unexpected errors"].observed["canary_writes_before_kill"] == 2

    status, failed = verdict_of(
        tmp_path, lambda d: d["read_back"]["unexpected"].append({"seq": 3, "status": 500}))
    assert failed["unexpected errors"].observed["read_back"] == 1


def test_a_configured_interval_beyond_the_objective_is_no_go(tmp_path: Path) -> None:
    for hours in (12.0, 0.0):
        def configure(drill: dict[str, Any], hours: float = hours) -> None:
            drill["configured_interval_h"] = hours

        status, failed = verdict_of(tmp_path, configure)
        assert status == "NO-GO"
        assert "configured backup interval meets the RPO objective" in failed


def test_a_loss_older_than_one_interval_fails_the_rpo(tmp_path: Path) -> None:
    def late_kill(d: dict[str, Any]) -> None:
        d["kill"]["at"] = BACKUP_AT + 2 * INTERVAL  # also outside the kill window

    status, failed = verdict_of(tmp_path, late_kill)
    assert status == "INVALID"
    assert "kill between two scheduled backups" in failed
    assert "RPO: data lost within one backup interval" in failed


def test_a_drill_that_never_wrote_after_the_backup_is_invalid(tmp_path: Path) -> None:
    def nothing_after(d: dict[str, Any]) -> None:
        d["canary"]["acknowledged"] = [a for a in d["canary"]["acknowledged"]
                                       if a[2] < BACKUP_AT]

    status, failed = verdict_of(tmp_path, nothing_after)
    assert status == "INVALID"
    assert failed["canaries exposed on both sides of the backup"].observed["after"] == 0


def test_missing_or_malformed_evidence_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(GateError, match="restore-drill.json is missing"):
        judge(tmp_path)
    (tmp_path / EVIDENCE).write_text("{")
    with pytest.raises(GateError, match="not readable JSON"):
        judge(tmp_path)
    drill = good_drill()
    del drill["audit"]
    (tmp_path / EVIDENCE).write_text(json.dumps(drill))
    with pytest.raises(ConfigError, match="no audit"):
        judge(tmp_path)


def test_a_real_backup_that_leaves_a_database_out_is_caught(tmp_path: Path) -> None:
    """A real home with a `.sqlite` database beside the `.db` ones, a real backup (which
    takes `*.db` only): the listing the drill records and the manifest disagree, by name."""
    home = Home.at(tmp_path / "home")
    home.init(base_port=7000)
    for name in ("memory.db", "plugins.sqlite"):
        conn = sqlite3.connect(home.data / name)
        conn.execute("CREATE TABLE t (x)")
        conn.close()
    manifest = verify_backup(create_backup(home, tmp_path / "backups")).manifest or {}

    def real_listing(d: dict[str, Any]) -> None:
        d["data_dir_databases"] = _databases_in(home.data)
        d["backups"]["restored"]["databases"] = {
            n: Path(db["path"]).name for n, db in manifest["databases"].items()}

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    status, failed = verdict_of(run_dir, real_listing)
    assert status == "NO-GO"
    assert failed["every database in the backup"].observed["missing"] == ["plugins.sqlite"]


def test_the_drill_counts_only_backups_that_began_after_its_data_was_in_place(
        tmp_path: Path) -> None:
    """On a loaded machine the schedule may finish backups before the first canary is
    acknowledged; such a backup holds nothing the drill looks for, so it must not be the
    one restored (a run restoring it was INVALID: no canary before the backup)."""
    from types import SimpleNamespace

    from sonia.gates.durability import CanaryWriter, _wait_for_backups

    backups = tmp_path / "backups"
    for name, created in (("b1", "2026-11-29T21:00:00Z"), ("b2", "2026-11-29T21:00:04Z"),
                          ("b3", "2026-11-29T21:00:08Z")):
        (backups / name).mkdir(parents=True)
        (backups / name / "manifest.json").write_text(json.dumps({"created_at": created}))
    stack = SimpleNamespace(home=SimpleNamespace(backups=backups))
    first_canary = datetime(2026, 11, 29, 21, 0, 2, tzinfo=UTC).timestamp()
    chosen = _wait_for_backups(stack, PROFILES["quick"],  # type: ignore[arg-type]
                               CanaryWriter("http://127.0.0.1:9", {}, 1.0), after=first_canary)
    assert [b["name"] for b in chosen] == ["b2", "b3"]


def on_postgresql(drill: dict[str, Any], **storage: Any) -> None:
    """The drill as a PostgreSQL run records it: every ledger in the server, no SQLite."""
    drill["profile"]["storage"] = "postgresql"
    drill["restore"]["databases"], drill["integrity_after_run"] = {}, {}
    drill["data_dir_databases"], drill["backups"]["restored"]["databases"] = [], {}
    schemas = ["eva", "gateway", "memory", "openclaw"]
    drill["storage"] = {"backend": "postgresql", "restored_stack_backend": "postgresql",
                        "schemas_after_loss": [],
                        "dump_schemas": schemas, "restored_schemas": schemas} | storage


def test_a_postgresql_drill_is_judged_on_its_dump(tmp_path: Path) -> None:
    status, failed = verdict_of(tmp_path / "good", on_postgresql)
    assert status == "GO", failed

    status, failed = verdict_of(tmp_path / "kept", lambda d: on_postgresql(
        d, schemas_after_loss=["memory"]))
    assert status == "INVALID", "a database that was never lost proves no restore"
    assert failed["PostgreSQL lost before the restore"].observed == ["memory"]

    status, failed = verdict_of(tmp_path / "partial", lambda d: on_postgresql(
        d, restored_schemas=["eva", "gateway", "openclaw"]))
    assert status == "NO-GO"
    assert "PostgreSQL dump restored" in failed

    status, failed = verdict_of(tmp_path / "nodump", lambda d: on_postgresql(
        d, dump_schemas=[]))
    assert status == "NO-GO" and "PostgreSQL dump restored" in failed


def test_restored_sqlite_files_are_judged_on_either_backend(tmp_path: Path) -> None:
    """On SQLite a drill that restored no database proves nothing (NO-GO); on
    PostgreSQL no SQLite file is expected, but one that is there must be intact."""
    def nothing_restored(d: dict[str, Any]) -> None:
        d["restore"]["databases"], d["integrity_after_run"] = {}, {}

    status, failed = verdict_of(tmp_path / "sqlite", nothing_restored)
    assert status == "NO-GO" and "databases restored intact" in failed

    def a_torn_sqlite_file(d: dict[str, Any]) -> None:
        on_postgresql(d)
        d["restore"]["databases"] = {"gateway.db": {"present": True,
                                                    "integrity_check": "malformed"}}
        d["integrity_after_run"] = {"gateway.db": "ok"}

    status, failed = verdict_of(tmp_path / "postgresql", a_torn_sqlite_file)
    assert status == "NO-GO" and "databases restored intact" in failed


def test_a_drill_that_ran_on_another_backend_than_its_profile_is_invalid(
    tmp_path: Path,
) -> None:
    def profile_says_postgresql(drill: dict[str, Any]) -> None:
        drill["profile"]["storage"] = "postgresql"

    status, failed = verdict_of(tmp_path, profile_says_postgresql)
    assert status == "INVALID"
    assert failed["storage as profiled"].observed["configured"] == "sqlite"

    def restored_on_sqlite(drill: dict[str, Any]) -> None:
        on_postgresql(drill, restored_stack_backend="sqlite")

    status, failed = verdict_of(tmp_path / "restored", restored_on_sqlite)
    assert status == "INVALID", "what the restored stack served from is observed"
    assert failed["storage as profiled"].observed == {"configured": "postgresql",
                                                      "restored_stack": "sqlite"}
