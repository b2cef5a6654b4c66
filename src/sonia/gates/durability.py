"""Gate durability: a backup taken under load restores everything it should, and fast.

The drill, in a fresh home (stack A):

1. a canary writer stores sequenced records through the public API
   (`POST /v1/memory {"content": "canary <seq>"}`), one after the other at a
   fixed rate, remembering each acknowledged record's id and time;
2. an online backup is taken while it writes (`backup.create_backup`, into a
   folder outside the home: a backup kept in the home is lost with it);
3. the writer keeps going a little, then stops: the last acknowledged record is
   the newest data a user was told is safe;
4. disaster: the memory service is SIGKILLed (pid from `run/memory.pid`) and its
   database overwritten with garbage; the home is given up (stack A stopped);
5. recovery, timed from the disaster: a clean home B, `restore_backup` into it,
   then B's stack started and ready. That is the RTO.

Then the gate checks: every database of the backup is restored with
integrity_check "ok" and the row digests of the manifest (before B starts, so
nothing has written yet); the restored canaries are exactly records 1..K (a
prefix: no holes), K covers every record acknowledged before the backup began,
and each one is served by the API (`GET /v1/memory/{id}`, and a sample through
search); after B ran and stopped, integrity_check is still "ok". RPO is what was
acknowledged but not restored: (last written - K) records and the seconds
between their acknowledgements.

Ports: a restore brings the backed-up `sonia.toml`, ports included, exactly as
when a lost home is rebuilt on the same machine; stack A is stopped first (its
home is "lost"), so those ports are free again. Home B keeps its own secrets
(backups never hold secrets), so the drill reads with B's own API key.

Evidence: `restore-drill.json`.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from sonia.backup import create_backup, database_facts, restore_backup, verify_backup
from sonia.gates.evidence import VALIDITY, Check, Verdict, capture_environment, write_json
from sonia.gates.fresh_stack import FreshStack
from sonia.gates.progress import GateProgress

__all__ = ["PROFILES", "CanaryWriter", "DurabilityProfile", "run"]

EVIDENCE = "restore-drill.json"


@dataclass(frozen=True)
class DurabilityProfile:
    canary_per_s: float
    write_before_backup_s: float
    write_after_backup_s: float
    rto_target_s: float
    rpo_target_s: float
    search_sample: int = 5


PROFILES: dict[str, DurabilityProfile] = {
    "quick": DurabilityProfile(canary_per_s=20.0, write_before_backup_s=3.0,
                               write_after_backup_s=2.0, rto_target_s=60.0, rpo_target_s=30.0),
    "release": DurabilityProfile(canary_per_s=20.0, write_before_backup_s=20.0,
                                 write_after_backup_s=10.0, rto_target_s=60.0,
                                 rpo_target_s=30.0, search_sample=20),
}


@dataclass
class Canary:
    seq: int
    id: str
    acked_at: float
    """time.monotonic() when the write was acknowledged"""


@dataclass
class CanaryWriter:
    """Writes "canary <seq>" records one at a time, at `rate` per second, in a thread."""

    base_url: str
    headers: dict[str, str]
    rate: float
    written: list[Canary] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    attempts: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="canary-writer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)

    def keep_writing(self, seconds: float) -> None:
        """Let the writer run for `seconds` (returns early if it was stopped)."""
        self._stop.wait(seconds)

    def last(self) -> int:
        """The sequence number of the newest acknowledged record (0: none yet)."""
        with self._lock:
            return self.written[-1].seq if self.written else 0

    def _run(self) -> None:
        interval = 1.0 / self.rate
        start = time.monotonic()
        seq = 0
        with httpx.Client(base_url=self.base_url, headers=self.headers, timeout=10) as client:
            while not self._stop.is_set():
                seq += 1
                self.attempts += 1
                try:
                    r = client.post("/v1/memory", json={"content": f"canary {seq}"},
                                    headers={"X-Correlation-ID": f"canary-{seq}"})
                    if r.status_code == 201:
                        with self._lock:
                            self.written.append(Canary(seq, str(r.json()["id"]),
                                                       time.monotonic()))
                    else:
                        self._error(seq, f"status {r.status_code}")
                        seq -= 1  # the sequence numbers of acknowledged records stay dense
                except (httpx.HTTPError, ValueError, KeyError) as exc:
                    self._error(seq, type(exc).__name__)
                    seq -= 1
                self._stop.wait(max(0.0, start + self.attempts * interval - time.monotonic()))

    def _error(self, seq: int, what: str) -> None:
        if len(self.errors) < 20:
            self.errors.append({"seq": seq, "error": what})


def _kill_and_corrupt(stack: FreshStack) -> dict[str, Any]:
    """SIGKILL the memory service and overwrite its database: the data is gone."""
    pid_file = stack.home.run / "memory.pid"
    pid = int(pid_file.read_text().strip())
    os.kill(pid, signal.SIGKILL)
    db = stack.home.db_path("memory")
    size = db.stat().st_size
    with open(db, "r+b") as handle:
        handle.write(os.urandom(min(size, 8192)))
        handle.flush()
        os.fsync(handle.fileno())
    for side in ("-wal", "-shm"):
        Path(f"{db}{side}").unlink(missing_ok=True)
    try:
        readable = database_facts(db)["integrity_check"] == "ok"
    except sqlite3.Error:
        readable = False
    return {"killed_pid": pid, "database": db.name, "overwritten_bytes": min(size, 8192),
            "still_readable": readable}


def _restored_facts(home_data: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Each backed-up database in the restored home: integrity and digests vs. the manifest."""
    result: dict[str, Any] = {}
    for name, expected in sorted(manifest.get("databases", {}).items()):
        path = home_data / Path(str(expected["path"])).name
        if not path.exists():
            result[name] = {"present": False}
            continue
        facts = database_facts(path)
        result[name] = {
            "present": True, "integrity_check": facts["integrity_check"],
            "user_version_matches": facts["user_version"] == expected.get("user_version"),
            "digests_match": facts["tables"] == expected.get("tables"),
            "rows": sum(int(t["rows"]) for t in facts["tables"].values()),
        }
    return result


def _integrity_after(home_data: Path) -> dict[str, str]:
    return {db.stem: database_facts(db)["integrity_check"]
            for db in sorted(home_data.glob("*.db"))}


def _served(stack: FreshStack, key: str, canaries: list[Canary], sample: int) -> dict[str, Any]:
    """Which canaries the restored API serves by id to `key`, and whether search finds a
    sample."""
    restored: list[int] = []
    wrong: list[dict[str, Any]] = []
    with httpx.Client(base_url=stack.url(), headers={"Authorization": f"Bearer {key}"},
                      timeout=30) as client:
        for canary in canaries:
            r = client.get(f"/v1/memory/{canary.id}")
            if r.status_code == 200 and r.json().get("content") == f"canary {canary.seq}":
                restored.append(canary.seq)
            elif r.status_code != 404 and len(wrong) < 10:
                wrong.append({"seq": canary.seq, "status": r.status_code})
        newest = max(restored, default=0)
        step = max(1, newest // max(1, sample))
        picks = sorted({1, newest, *range(step, newest, step)}) if newest else []
        searched: dict[str, bool] = {}
        for seq in picks:
            r = client.get("/v1/memory/search", params={"q": f"canary {seq}", "limit": 50})
            found = r.status_code == 200 and any(
                hit.get("content") == f"canary {seq}" for hit in r.json().get("results", []))
            searched[str(seq)] = found
    return {"restored": restored, "unexpected": wrong, "search": searched}


def run(run_dir: Path, profile: DurabilityProfile, progress: GateProgress) -> Verdict:
    task = progress.task("durability drill", 6)
    backups = run_dir / "backups"
    with FreshStack(run_dir / "stack-home") as stack:
        stack.up()
        progress.advance(task)
        writer = CanaryWriter(stack.url(), stack.user_headers(), profile.canary_per_s)
        started = time.monotonic()
        writer.start()
        try:
            writer.keep_writing(profile.write_before_backup_s)
            acked_before_backup = writer.last()
            backup_start = time.monotonic()
            backup_path = create_backup(stack.home, backups)
            backup_end = time.monotonic()
            acked_after_backup = writer.last()
            progress.advance(task)
            writer.keep_writing(profile.write_after_backup_s)
        finally:
            writer.stop()
        progress.advance(task)
        disaster = time.monotonic()
        damage = _kill_and_corrupt(stack)
        down = stack.down()
    down_s = time.monotonic() - disaster
    progress.advance(task)

    with FreshStack(run_dir / "restored-home") as restored_stack:
        t = time.monotonic()
        restored = restore_backup(restored_stack.home, backup_path)
        restore_s = time.monotonic() - t
        manifest = verify_backup(backup_path).manifest or {}
        facts = _restored_facts(restored_stack.home.data, manifest)
        restored_stack.settings = restored_stack.home.check()
        t = time.monotonic()
        restored_stack.up()
        up_s = time.monotonic() - t
        ready = time.monotonic()
        rto_s = ready - disaster
        progress.advance(task)
        # Memories belong to a key id: the writer's key is re-issued under its id, as
        # the lost-home runbook does (keys are not in backups).
        owner_key = restored_stack.home.create_api_key("user", stack.user_key.split("-")[2])
        served = _served(restored_stack, owner_key, writer.written, profile.search_sample)
        restored_stack.down()
    integrity_after = _integrity_after(restored_stack.home.data)
    progress.advance(task)

    written = writer.written
    last = written[-1].seq if written else 0
    seqs = served["restored"]
    newest = max(seqs, default=0)
    prefix = seqs == list(range(1, newest + 1))
    acked_at = {c.seq: c.acked_at for c in written}
    rpo_records = last - newest
    rpo_s = (acked_at[last] - acked_at[newest]) if newest and last else \
        (acked_at[last] - started if last else 0.0)
    databases_ok = bool(facts) and all(
        f.get("present") and f.get("integrity_check") == "ok" and f.get("digests_match")
        and f.get("user_version_matches") for f in facts.values())
    checks = [
        Check("canaries written before the backup", {"at_least": 1}, acked_before_backup,
              acked_before_backup >= 1, VALIDITY),
        Check("the disaster destroyed the data", {"memory database readable": False},
              {"still_readable": damage["still_readable"]}, not damage["still_readable"],
              VALIDITY),
        Check("canary write errors", 0, len(writer.errors), not writer.errors,
              detail="writes through the API while the backup ran"),
        Check("databases restored intact", "integrity ok, digests = manifest",
              {n: {k: v for k, v in f.items() if k != "rows"} for n, f in facts.items()},
              databases_ok),
        Check("restored canaries are a prefix (no holes)", "1..K",
              {"restored": len(seqs), "newest": newest}, prefix),
        Check("nothing acknowledged before the backup was lost",
              {"newest_restored_at_least": acked_before_backup}, newest,
              newest >= acked_before_backup),
        Check("restored records served by search", "every sampled canary found",
              served["search"], bool(served["search"]) and all(served["search"].values())),
        Check("integrity after the restored stack ran", "ok", integrity_after,
              bool(integrity_after) and all(v == "ok" for v in integrity_after.values())),
        Check("RTO (disaster to ready)", {"seconds_below": profile.rto_target_s},
              round(rto_s, 3), rto_s < profile.rto_target_s),
        Check("RPO (acknowledged, not restored)", {"seconds_at_most": profile.rpo_target_s},
              {"records": rpo_records, "seconds": round(rpo_s, 3)},
              rpo_s <= profile.rpo_target_s),
    ]
    verdict = Verdict.of("durability", checks, asdict(profile))
    write_json(run_dir / EVIDENCE, {
        "gate": "durability",
        "verdict": verdict.to_dict(),
        "profile": asdict(profile),
        "canary": {
            "rate_per_s": profile.canary_per_s, "attempts": writer.attempts,
            "acknowledged": len(written), "last_seq": last, "errors": writer.errors,
        },
        "backup": {
            "path": str(backup_path), "started_after_s": round(backup_start - started, 3),
            "duration_s": round(backup_end - backup_start, 3),
            "acked_before_start": acked_before_backup, "acked_at_end": acked_after_backup,
            "databases": sorted(manifest.get("databases", {})),
            "files": len(manifest.get("files", [])),
        },
        "disaster": damage | {"stack_down_s": round(down_s, 3),
                              "escalations": down.escalations},
        "restore": restored.to_dict() | {
            "target_home": "a new home with its own secrets; config and ports from the backup",
            "phases_s": {"stop_lost_stack": round(down_s, 3), "restore": round(restore_s, 3),
                         "start_until_ready": round(up_s, 3)},
            "databases": facts,
        },
        "rto_s": round(rto_s, 3),
        "rpo": {"records": rpo_records, "seconds": round(rpo_s, 3),
                "newest_restored_seq": newest, "last_written_seq": last},
        "api_check": {"restored": len(seqs), "newest": newest, "prefix": prefix,
                      "unexpected": served["unexpected"], "search": served["search"]},
        "integrity_after_run": integrity_after,
        "environment": capture_environment(),
    })
    return verdict
