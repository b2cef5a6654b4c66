"""Gate durability: the scheduled backups bound the data a disaster can lose (RPO), and a
restore brings everything they hold back, fast (RTO).

The drill, in a fresh home (stack A) whose supervisor takes scheduled backups
every `backup_interval_s` (the product's `[backup] interval_hours`, shortened
for the drill so that it finishes; the product default is judged separately):

1. a few tier-0 actions, so EVA's audit chain has records to verify later;
2. a canary writer stores sequenced records through the public API
   (`POST /v1/memory {"content": "canary <seq>"}`), one after the other at a
   fixed rate, remembering each acknowledged record's id and wall time;
3. once the first canary is acknowledged, and `backups_before_kill` scheduled
   backups that began after it have completed (earlier ones, taken while a
   loaded machine was still setting up, hold nothing to look for), a kill moment is
   drawn at random (seeded, the seed is in the evidence) between the end of the
   latest backup and the start of the next one; at that moment the whole stack
   (supervisor first, then every service) is SIGKILLed: a power cut;
4. the data directory of A is listed (every `*.db`, `*.sqlite`, `*.sqlite3`), so
   that a database the backup does not hold is noticed; A is given up. With
   `storage = "postgresql"` (`--storage postgresql`) stack A ran on a server of
   the run's own, the scheduled backups hold its `pg_dump`, and the server's
   database is lost too (dropped and made again, empty);
5. recovery, timed from the kill: a clean home B, `restore_backup` of the latest
   scheduled backup into it (the dump, on PostgreSQL, into the empty database;
   before B starts: the restored audit chain is verified with EVA's own
   verification, through the backend), then B's stack started and ready
   (RTO); every canary is read back by id, a sample through search.

Evidence, `restore-drill.json`, holds the raw facts (every acknowledged canary
with its time, every error with its time, the restored sequence numbers, the
backups and their times, the kill, the data-directory listing, the manifest's
databases, the audit verification). `judge` derives the verdict from that file
alone. RPO is data lost: acknowledged canaries absent after the restore (count,
and the age of the oldest at the kill). Only writes acknowledged after the
restored backup began may be lost; an older loss means the backup did not hold
what it claims, NO-GO. The verdict also holds the product's configured interval
against the seed's 6 h objective, and the measured loss against the interval.

Ports: a restore brings the backed-up `sonia.toml`, ports included, exactly as
when a lost home is rebuilt on the same machine; stack A is dead by then, so
those ports are free again. Home B keeps its own secrets (backups never hold
secrets), so the drill reads with B's own API key.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import secrets
import signal
import threading
import time
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from sonia.backup import database_facts, read_backup_key, restore_backup, verify_backup
from sonia.errors import ConfigError
from sonia.gates.common.evidence import (
    VALIDITY,
    Check,
    Verdict,
    capture_environment,
    read_evidence,
    write_json,
)
from sonia.gates.common.progress import GateProgress
from sonia.gates.common.storage import GateStorage, gate_storage, verify_audit
from sonia.home import DEFAULT_CONFIG, Home
from sonia.supervisor import control
from sonia.testing import FreshStack

__all__ = ["EVIDENCE", "EVIDENCE_FILES", "PROFILES", "CanaryWriter", "DurabilityProfile",
           "judge", "run"]

EVIDENCE = "restore-drill.json"
EVIDENCE_FILES: tuple[str, ...] = (EVIDENCE,)
"""What a run leaves in its run directory (the registry checks for each)."""
RPO_OBJECTIVE_H = 6.0
"""The seed's recovery point objective: at most six hours of data may be lost."""
DB_PATTERNS = ("*.db", "*.sqlite", "*.sqlite3")
"""What counts as a database in a home's data directory."""
INTERVAL_ENV = "SONIA_BACKUP__INTERVAL_HOURS"
"""The drill's own backup interval reaches stack A's supervisor through its environment,
so the backed-up `sonia.toml` (and the interval it configures) is the product's own."""


@dataclass(frozen=True)
class DurabilityProfile:
    backup_interval_s: float
    """the scheduled-backup interval stack A runs with during the drill"""
    backups_before_kill: int
    """scheduled backups that complete before the kill window opens"""
    canary_per_s: float
    rto_target_s: float
    search_sample: int = 5
    audit_actions: int = 3
    seed: int | None = None
    """seeds the kill moment; None draws one (recorded in the evidence)"""
    storage: str = "sqlite"
    """where stack A keeps its ledgers: sqlite, or postgresql (a server of the run's own;
    the power cut then also loses the database, and the restore brings the backup's
    pg_dump back into it)"""


PROFILES: dict[str, DurabilityProfile] = {
    "quick": DurabilityProfile(backup_interval_s=4.0, backups_before_kill=2, canary_per_s=10.0,
                               rto_target_s=60.0),
    "release": DurabilityProfile(backup_interval_s=30.0, backups_before_kill=3,
                                 canary_per_s=20.0, rto_target_s=60.0, search_sample=20),
}


@dataclass
class CanaryWriter:
    """Writes "canary <seq>" records one at a time, at `rate` per second, in a thread.

    Times are wall-clock (`time.time()`), the clock a backup's manifest is stamped
    with, so an acknowledgement can be placed before or after a backup began.
    """

    base_url: str
    headers: dict[str, str]
    rate: float
    written: list[tuple[int, str, float]] = field(default_factory=list)
    """(seq, id, acknowledged at) of every acknowledged record, in order"""
    errors: list[dict[str, Any]] = field(default_factory=list)
    """every failed write: seq, what, and when it ended (wall time)"""
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

    def first_acknowledged(self, timeout: float = 60.0) -> float:
        """When the first canary was acknowledged (waiting for it, within `timeout`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self.written:
                    return self.written[0][2]
            self.keep_writing(0.02)
        raise ConfigError(f"no canary was acknowledged within {timeout:.0f} s",
                          key="durability")

    def _run(self) -> None:
        interval = 1.0 / self.rate
        start = time.monotonic()
        seq = 0
        with httpx.Client(base_url=self.base_url, headers=self.headers, timeout=10) as client:
            while not self._stop.is_set():
                seq += 1
                self.attempts += 1
                sent = time.time()
                try:
                    r = client.post("/v1/memory", json={"content": f"canary {seq}"},
                                    headers={"X-Correlation-ID": f"canary-{seq}"})
                    if r.status_code == 201:
                        with self._lock:
                            self.written.append((seq, str(r.json()["id"]), time.time()))
                    else:
                        self._error(seq, sent, f"status {r.status_code}")
                        seq -= 1  # the sequence numbers of acknowledged records stay dense
                except (httpx.HTTPError, ValueError, KeyError) as exc:
                    self._error(seq, sent, type(exc).__name__)
                    seq -= 1
                self._stop.wait(max(0.0, start + self.attempts * interval - time.monotonic()))

    def _error(self, seq: int, sent: float, what: str) -> None:
        with self._lock:
            self.errors.append({"seq": seq, "error": what, "sent_at": sent, "at": time.time()})


# -- the drill -------------------------------------------------------------------------
def _iso_epoch(text: str) -> float:
    return dt.datetime.fromisoformat(text).timestamp()


def _completed_backups(home: Home) -> list[dict[str, Any]]:
    """The complete backups in the home (a `.partial` folder is not one), oldest first."""
    found = []
    for folder in sorted(home.backups.iterdir()) if home.backups.is_dir() else []:
        manifest = folder / "manifest.json"
        if folder.name.startswith(".") or not manifest.is_file():
            continue
        try:
            created = json.loads(manifest.read_text())["created_at"]
        except (ValueError, KeyError):
            continue
        found.append({"name": folder.name, "created_at": _iso_epoch(str(created))})
    return found


def _tier0_actions(stack: FreshStack, count: int) -> list[dict[str, Any]]:
    """Tier-0 reads, so that EVA's audit chain holds records for the restore to verify."""
    errors = []
    with httpx.Client(base_url=stack.url(), headers=stack.user_headers(), timeout=30) as client:
        for _ in range(count):
            r = client.post("/v1/actions", json={"tool": "file.list", "args": {"path": "."}})
            if r.status_code >= 300:
                errors.append({"status": r.status_code, "at": time.time()})
    return errors


def _wait_for_backups(stack: FreshStack, profile: DurabilityProfile,
                      writer: CanaryWriter, after: float) -> list[dict[str, Any]]:
    """Poll until `backups_before_kill` scheduled backups that began after `after` (the
    drill's data in place: audit records and a first canary) are complete; each with the
    time it was first seen complete (an upper bound on when it finished). Backups the
    schedule made earlier, while a loaded machine was still setting up, do not count:
    they hold nothing the drill could look for."""
    seen: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + profile.backups_before_kill * profile.backup_interval_s + 120
    while time.monotonic() < deadline:
        for backup in _completed_backups(stack.home):
            if backup["created_at"] > after:
                seen.setdefault(backup["name"], backup | {"seen_at": time.time()})
        if len(seen) >= profile.backups_before_kill:
            return sorted(seen.values(), key=lambda b: b["name"])
        writer.keep_writing(0.05)
    raise ConfigError(f"the supervisor completed {len(seen)} of "
                      f"{profile.backups_before_kill} scheduled backups in time", key="backup")


def _kill_stack(home: Home) -> dict[str, Any]:
    """SIGKILL the supervisor (so nothing is restarted), then every service: a power cut."""
    killed: dict[str, int] = {}
    supervisor = control.supervisor_pid(home)
    if supervisor is not None:
        os.kill(supervisor, signal.SIGKILL)
        killed["supervisor"] = supervisor
    for pid_file in sorted(home.run.glob("*.pid")):
        try:
            pid = int(pid_file.read_text().strip())
            os.kill(pid, signal.SIGKILL)
        except (ValueError, ProcessLookupError):
            continue
        killed[pid_file.stem] = pid
    return killed


def _databases_in(data: Path) -> list[str]:
    return sorted({p.name for pattern in DB_PATTERNS for p in data.glob(pattern)})


def _restored_facts(home_data: Path, manifest: Mapping[str, Any]) -> dict[str, Any]:
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
        }
    return result


def _served(stack: FreshStack, key: str, written: list[tuple[int, str, float]],
            sample: int) -> dict[str, Any]:
    """Which canaries the restored API serves by id to `key` (memories belong to the key
    that wrote them), and whether search finds a sample."""
    restored: list[int] = []
    unexpected: list[dict[str, Any]] = []
    with httpx.Client(base_url=stack.url(), headers={"Authorization": f"Bearer {key}"},
                      timeout=30) as client:
        for seq, mem_id, _at in written:
            r = client.get(f"/v1/memory/{mem_id}")
            if r.status_code == 200 and r.json().get("content") == f"canary {seq}":
                restored.append(seq)
            elif r.status_code != 404:
                unexpected.append({"seq": seq, "status": r.status_code})
        newest = max(restored, default=0)
        step = max(1, newest // max(1, sample))
        picks = sorted({1, newest, *range(step, newest, step)}) if newest else []
        searched: dict[str, bool] = {}
        for seq in picks:
            r = client.get("/v1/memory/search", params={"q": f"canary {seq}", "limit": 50})
            searched[str(seq)] = r.status_code == 200 and any(
                hit.get("content") == f"canary {seq}" for hit in r.json().get("results", []))
    return {"restored": restored, "unexpected": unexpected, "search": searched}


def _memory_backend(stack: FreshStack) -> str | None:
    """The backend the restored stack's memory service says it serves from (its
    `/v1/stats`): observed, where the run's own configuration is only what was asked."""
    try:
        r = httpx.get(stack.url("memory") + "/v1/stats", timeout=30,
                      headers=stack.service_headers("gateway"))
        return str(r.json()["backend"]) if r.status_code == 200 else None
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return None


def _product_interval_h() -> float:
    """The interval a home gets from `sonia init`, when the backup holds no config."""
    return float(tomllib.loads(DEFAULT_CONFIG.format(base_port=7000))["backup"]["interval_hours"])


def run(run_dir: Path, profile: DurabilityProfile, progress: GateProgress) -> Verdict:
    with gate_storage(profile.storage) as storage:
        return _drill(run_dir, profile, progress, storage)


def _drill(run_dir: Path, profile: DurabilityProfile, progress: GateProgress,
           storage: GateStorage) -> Verdict:
    task = progress.task("durability drill", 6)
    seed = profile.seed if profile.seed is not None else secrets.randbits(32)
    rng = random.Random(seed)
    os.environ[INTERVAL_ENV] = repr(profile.backup_interval_s / 3600.0)
    try:
        stack = FreshStack(run_dir / "stack-home", config=storage.config())
        with stack:
            storage.prepare(stack.home)
            stack.up()
            os.environ.pop(INTERVAL_ENV, None)  # the supervisor has read it; B must not
            started = time.time()
            progress.advance(task)
            setup_errors = _tier0_actions(stack, profile.audit_actions)
            writer = CanaryWriter(stack.url(), stack.user_headers(), profile.canary_per_s)
            writer.start()
            try:
                backups = _wait_for_backups(stack, profile, writer,
                                            after=writer.first_acknowledged())
                latest = backups[-1]
                low = max(time.time(), latest["seen_at"])
                high = latest["created_at"] + 0.9 * profile.backup_interval_s
                planned = rng.uniform(low, max(low, high))
                progress.advance(task)
                writer.keep_writing(max(0.0, planned - time.time()))
                kill_at = time.time()
                killed = _kill_stack(stack.home)
            finally:
                writer.stop()
            progress.advance(task)
            data_dir = _databases_in(stack.home.data)
            at_kill = _completed_backups(stack.home)
            down = stack.down()  # reaps what the kill left; the home is given up
    finally:
        os.environ.pop(INTERVAL_ENV, None)
    chosen = at_kill[-1]
    backup_path = stack.home.backups / chosen["name"]
    # The operator carries the lost home's backup key to the new machine (operations.md).
    backup_key = read_backup_key(stack.home.backup_key_file)
    storage.recreate_database()  # the server's data went with the machine
    schemas_after_loss = storage.schemas()
    progress.advance(task)

    with FreshStack(run_dir / "restored-home") as restored_stack:
        storage.prepare(restored_stack.home)  # the operator's secret, as the backup key
        t = time.monotonic()
        restored = restore_backup(restored_stack.home, backup_path, key=backup_key)
        restore_s = time.monotonic() - t
        manifest = verify_backup(backup_path, backup_key).manifest or {}
        facts = _restored_facts(restored_stack.home.data, manifest)
        chain = verify_audit(restored_stack.home)
        restored_schemas = storage.schemas()
        restored_stack.settings = restored_stack.home.check()
        configured_h = (restored_stack.settings.backup.interval_hours
                        if (backup_path / "sonia.toml").is_file() else _product_interval_h())
        t = time.monotonic()
        restored_stack.up()
        up_s = time.monotonic() - t
        rto_s = time.time() - kill_at
        progress.advance(task)
        # Memories belong to a key id: the writer's key is re-issued under its id, as
        # the lost-home runbook does (keys are not in backups).
        owner_key = restored_stack.home.create_api_key("user", stack.user_key.split("-")[2])
        served = _served(restored_stack, owner_key, writer.written, profile.search_sample)
        served_from = _memory_backend(restored_stack)
        restored_stack.down()
    integrity_after = {name: database_facts(path)["integrity_check"] for name, path in
                       ((p, restored_stack.home.data / p)
                        for p in _databases_in(restored_stack.home.data))}
    progress.advance(task)

    write_json(run_dir / EVIDENCE, {
        "gate": "durability",
        "profile": asdict(profile),
        "seed": seed,
        "rpo_objective_h": RPO_OBJECTIVE_H,
        "configured_interval_h": configured_h,
        "storage": storage.facts() | {
            "schemas_after_loss": schemas_after_loss,
            "dump_schemas": list((manifest.get("postgres") or {}).get("schemas") or []),
            "restored_schemas": restored_schemas, "restored_stack_backend": served_from},
        "drill_started_at": started,
        "setup": {"tier0_actions": profile.audit_actions, "errors": setup_errors},
        "canary": {
            "rate_per_s": profile.canary_per_s, "attempts": writer.attempts,
            "acknowledged": [list(w) for w in writer.written], "errors": writer.errors,
        },
        "backups": {
            "interval_s": profile.backup_interval_s,
            "scheduled": at_kill,
            "waited_for": backups,
            "restored": {"name": chosen["name"], "created_at": chosen["created_at"],
                         "databases": {name: Path(str(db["path"])).name for name, db in
                                       sorted(manifest.get("databases", {}).items())},
                         "files": len(manifest.get("files", []))},
        },
        "kill": {"window": [low, high], "planned_at": planned, "at": kill_at,
                 "killed": killed, "escalations": down.escalations},
        "data_dir_databases": data_dir,
        "restore": restored.to_dict() | {
            "target_home": "a new home with its own secrets; config and ports from the backup",
            "phases_s": {"restore": round(restore_s, 3), "start_until_ready": round(up_s, 3)},
            "databases": facts,
        },
        "audit": {"ok": chain.ok, "count": chain.count, "first_bad_seq": chain.first_bad_seq,
                  "reason": chain.reason},
        "read_back": served,
        "integrity_after_run": integrity_after,
        "rto_s": round(rto_s, 3),
        "environment": capture_environment(),
    })
    return judge(run_dir)


# -- the verdict, from the evidence alone -------------------------------------------------
def _load(run_dir: Path) -> dict[str, Any]:
    return read_evidence(run_dir, EVIDENCE)


def _field(data: Mapping[str, Any], *path: str) -> Any:
    value: Any = data
    for name in path:
        if not isinstance(value, Mapping) or name not in value:
            raise ConfigError(f"{EVIDENCE} has no {'.'.join(path)}", key="evidence")
        value = value[name]
    return value


def _storage_checks(profile: Mapping[str, Any], storage: Mapping[str, Any]) -> list[Check]:
    """The drill ran on the backend its profile names; on PostgreSQL the database was
    lost (no Sonia schema left) before the restore, and the dump brought every schema
    it holds back."""
    wanted = str(profile.get("storage", "sqlite"))
    ran = {"configured": storage.get("backend"),
           "restored_stack": storage.get("restored_stack_backend")}
    checks = [Check("storage as profiled", wanted, ran, set(ran.values()) == {wanted},
                    VALIDITY, detail="the run's configuration, and the backend the restored "
                                     "stack's memory service said it served from")]
    if wanted == "postgresql":
        lost = list(storage.get("schemas_after_loss", ["unknown"]))
        dumped = list(storage.get("dump_schemas") or [])
        restored = list(storage.get("restored_schemas") or [])
        checks += [
            Check("PostgreSQL lost before the restore", [], lost, not lost, VALIDITY,
                  detail="the run's database was dropped and made again, empty: what is "
                         "there after the restore came from the backup's pg_dump"),
            Check("PostgreSQL dump restored", {"schemas": dumped or "at least one"},
                  restored, bool(dumped) and set(dumped) <= set(restored)),
        ]
    return checks


def _sqlite_checks(profile: Mapping[str, Any], facts: Mapping[str, Any],
                   intact: Mapping[str, Any], after: Mapping[str, Any]) -> list[Check]:
    """The restored SQLite files: intact, and intact again after the restored stack ran.
    On SQLite there must be some; on PostgreSQL every ledger is in the server (the
    dump's checks judge it) and a SQLite file, if one appears, is judged the same."""
    on_sqlite = str(profile.get("storage", "sqlite")) == "sqlite"
    if not on_sqlite and not facts and not after:
        return []
    return [
        Check("databases restored intact", "integrity ok, digests = manifest",
              intact or "all", bool(facts) and not intact),
        Check("integrity after the restored stack ran", "ok", after,
              bool(after) and all(v == "ok" for v in after.values())),
    ]


def judge(run_dir: Path) -> Verdict:
    """The durability verdict, derived from `restore-drill.json` only (never verdict.json).

    Lost data is what was acknowledged and is not served after the restore. A loss
    acknowledged before the restored backup began is a backup that did not hold
    what it claims (NO-GO); losses after it are the RPO, measured as a count and
    the age of the oldest at the kill, and held against the backup interval.
    """
    data = _load(run_dir)
    profile = _field(data, "profile")
    interval_s = float(_field(data, "backups", "interval_s"))
    backup = _field(data, "backups", "restored")
    backup_at = float(backup["created_at"])
    scheduled = [float(b["created_at"]) for b in _field(data, "backups", "scheduled")]
    kill_at = float(_field(data, "kill", "at"))
    acked = [(int(s), float(at)) for s, _id, at in _field(data, "canary", "acknowledged")]
    restored = {int(s) for s in _field(data, "read_back", "restored")}
    configured_h = float(_field(data, "configured_interval_h"))
    objective_h = float(data.get("rpo_objective_h", RPO_OBJECTIVE_H))

    lost = [(s, at) for s, at in acked if s not in restored]
    older = [s for s, at in lost if at < backup_at]
    oldest_age = round(kill_at - min(at for _s, at in lost), 3) if lost else 0.0
    before = sum(1 for _s, at in acked if at < backup_at)
    exposed = sum(1 for _s, at in acked if at >= backup_at)
    gaps = [round(b - a, 3) for a, b in zip(scheduled, scheduled[1:], strict=False)]
    regular = bool(gaps) and all(0.5 * interval_s <= g <= 1.5 * interval_s + 1 for g in gaps)
    in_window = backup_at <= kill_at < backup_at + interval_s and \
        backup["name"] == _field(data, "backups", "scheduled")[-1]["name"]

    errors = [e for e in _field(data, "canary", "errors") if float(e["at"]) < kill_at]
    unexpected = {"canary_writes_before_kill": len(errors),
                  "read_back": len(_field(data, "read_back", "unexpected")),
                  "setup_actions": len(_field(data, "setup", "errors"))}
    in_dir = list(_field(data, "data_dir_databases"))
    backed_up = set(backup["databases"].values())
    missing = sorted(set(in_dir) - backed_up)
    facts = _field(data, "restore", "databases")
    intact = {n: f for n, f in facts.items() if not (
        f.get("present") and f.get("integrity_check") == "ok" and f.get("digests_match")
        and f.get("user_version_matches"))}
    chain = _field(data, "audit")
    seqs = sorted(restored)
    prefix = seqs == list(range(1, len(seqs) + 1))
    search = _field(data, "read_back", "search")
    after = _field(data, "integrity_after_run")
    rto_s = float(_field(data, "rto_s"))
    rto_target = float(profile["rto_target_s"])

    checks = [
        Check("scheduled backups before the kill", {"at_least": profile["backups_before_kill"],
              "spacing_s": interval_s}, {"count": len(scheduled), "gaps_s": gaps},
              len(scheduled) >= int(profile["backups_before_kill"]) and regular, VALIDITY,
              detail="the supervisor's own schedule, at the drill's interval"),
        Check("kill between two scheduled backups",
              {"after_backup": backup["name"], "within_s": interval_s},
              round(kill_at - backup_at, 3), in_window, VALIDITY,
              detail="the restored backup is the latest one taken before the kill"),
        Check("canaries exposed on both sides of the backup", {"before": ">= 1", "after": ">= 1"},
              {"before": before, "after": exposed}, before >= 1 and exposed >= 1, VALIDITY),
        Check("restored audit chain has records", ">= 1", chain.get("count"),
              int(chain.get("count") or 0) >= 1, VALIDITY,
              detail="tier-0 actions ran before the backups, so the chain is not empty"),
        Check("configured backup interval meets the RPO objective",
              {"hours_at_most": objective_h, "enabled": True}, configured_h,
              0 < configured_h <= objective_h,
              detail="[backup] interval_hours of the backed-up configuration"),
        Check("no loss older than the restored backup", 0, len(older), not older,
              detail=f"lost seqs acknowledged before the backup began: {older[:10]}"
              if older else "every write acknowledged before the backup came back"),
        Check("RPO: data lost within one backup interval",
              {"oldest_lost_age_s_at_most": interval_s},
              {"lost": len(lost), "oldest_lost_age_s": oldest_age},
              oldest_age <= interval_s,
              detail="acknowledged canaries absent after the restore, age at the kill"),
        Check("every database in the backup", {"missing": []}, {"missing": missing,
              "in_data_dir": in_dir}, not missing,
              detail=f"not in the manifest: {', '.join(missing)}" if missing else ""),
        *_sqlite_checks(profile, facts, intact, after)[:1],
        Check("restored audit chain verifies", True, chain.get("ok"), chain.get("ok") is True,
              detail=str(chain.get("reason") or "")),
        Check("unexpected errors", 0, unexpected, not any(unexpected.values()),
              detail="failed canary writes before the kill, odd answers reading back, "
                     "failed setup actions"),
        Check("restored canaries are a prefix (no holes)", "1..K",
              {"restored": len(seqs), "newest": max(seqs, default=0)}, prefix),
        Check("restored records served by search", "every sampled canary found",
              search, bool(search) and all(search.values())),
        *_sqlite_checks(profile, facts, intact, after)[1:],
        Check("RTO (kill to restored stack ready)", {"seconds_below": rto_target},
              rto_s, rto_s < rto_target),
        *_storage_checks(profile, data.get("storage") or {"backend": "sqlite"}),
    ]
    return Verdict.of("durability", checks, {
        "rpo_objective_h": objective_h, "backup_interval_s": interval_s,
        "rto_target_s": rto_target})
