"""Good gate runs, written as each gate writes its raw evidence, for any test to break.

One builder per gate writes the raw files of a clean run into a run directory in
that gate's CURRENT format (the one its `run()` writes and its `judge()` reads):

    go_no_go     go-no-go-summary.json: cycle rows, health probes with supervisor state
    security     security-tests.json + security-corpus.jsonl
    soak         soak-metrics.csv (per-window rows), soak-summary.json, soak-report.html
    durability   restore-drill.json: canary timeline, backups, kill, restore facts
    determinism  integration-tests.json (the run list) + junit-run<N>.xml per run
    chaos        chaos-report.json + chaos-history.jsonl

Each takes the parameters to record (`profile`, as the gate records
`dataclasses.asdict(profile)`; a small default otherwise) and a `change` callback
that edits the evidence before it is written: the way a test injects one bad row
(a zombie, a lost write, a flipped test) or a forged "GO". Nothing here decides a
verdict: the gate owners' judge tests and the release tests (through
`release_evidence`) hand these runs to the judges. Kept in one module so that
when a gate's format changes, one builder changes and every test follows.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import numpy as np

from sonia import SERVICES as STACK_SERVICES
from sonia.gates.chaos import history as h
from sonia.gates.chaos.evidence import DEPENDENTS, PG_RESTART, PG_RESTART_MODES
from sonia.gates.chaos.evidence import HISTORY as CHAOS_HISTORY
from sonia.gates.chaos.evidence import REPORT as CHAOS_REPORT
from sonia.gates.common.evidence import write_json
from sonia.gates.durability import PROFILES as DURABILITY_PROFILES
from sonia.gates.security import injection
from sonia.gates.security.corpus import corpus_dir, load_payloads
from sonia.gates.soak.gate import PROFILES as SOAK_PROFILES
from sonia.gates.soak.load_rows import (
    memory_field,
    restarts_field,
    route_field,
    row_columns,
    uptime_field,
)

Change = Callable[[dict[str, Any]], object]
"""Edits one gate's evidence (a dict about to be written as JSON) in place."""


def _unchanged(_data: Any) -> None:
    return None


def _plain(profile: Any) -> dict[str, Any]:
    """A profile as a gate records it in JSON (dataclass or mapping; tuples become lists)."""
    if dataclasses.is_dataclass(profile) and not isinstance(profile, type):
        profile = dataclasses.asdict(profile)
    plain: dict[str, Any] = json.loads(json.dumps(dict(profile)))
    return plain


def _prepared(run_dir: Path) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


# --- go-no-go ---------------------------------------------------------------------------------
GO_NO_GO_PROFILE: dict[str, Any] = {"cycles": 3, "health_minutes": 0.2, "health_interval": 1.0}
"""3 cycles and 12 probes a second apart: small enough to break one row of each."""


def cycle(number: int | str, **changes: Any) -> dict[str, Any]:
    """One clean start/stop cycle row (`changes` replaces fields: a zombie, a bound port)."""
    row: dict[str, Any] = {
        "cycle": number, "started": True, "time_to_ready_s": {"gateway": 1.2},
        "start_seconds": 1.5, "stop_seconds": 0.4, "escalations": [], "leftovers_killed": [],
        "ports_bound": [], "zombies": [], "orphans": [], "wal_not_checkpointed": []}
    return row | changes


def supervisor_state(restarted: str | None = None) -> dict[str, dict[str, int | None]]:
    """Every service's pid and restart count, as a probe reads them from the supervisor;
    `restarted` has a new pid and one restart."""
    return {name: {"pid": 1000 + i + (500 if name == restarted else 0),
                   "restarts": 1 if name == restarted else 0}
            for i, name in enumerate(STACK_SERVICES)}


def go_no_go_summary(profile: Any = None) -> dict[str, Any]:
    """A clean run at `profile` as `gonogo.run()` records it: every cycle, then the health
    phase's probes (as many as the gate plans), then the stop after it."""
    recorded = _plain(profile if profile is not None else GO_NO_GO_PROFILE)
    interval = float(recorded["health_interval"])
    minutes = float(recorded["health_minutes"])
    probes = max(1, int(round(minutes * 60 / interval)))
    return {
        "gate": "go-no-go", "subreaper": True, "profile": recorded,
        "cycles": [cycle(n) for n in range(1, int(recorded["cycles"]) + 1)]
        + [cycle("after-health")],
        "health": {"planned": probes, "interval_s": interval, "minutes": minutes,
                   "baseline": supervisor_state(),
                   "probes": [{"check": i, "at_s": i * interval, "failed": {},
                               "services": supervisor_state()} for i in range(probes)]},
    }


def go_no_go(run_dir: Path, profile: Any = None, change: Change = _unchanged) -> Path:
    data = go_no_go_summary(profile)
    change(data)
    write_json(_prepared(run_dir) / "go-no-go-summary.json", data)
    return run_dir


# --- security -----------------------------------------------------------------------------------
CLEAN_EFFECTS: dict[str, Any] = {
    "files_watched": 12, "changed": [], "created_outside": [], "removed_outside": [],
    "tree_entries": 30, "tree_changes": [],
    "markers": [], "marker_processes": []}
"""What the effect oracle records for a case that touched nothing."""


def security_case(case_id: str, category: str = "paths", *, status: Any = 403,
                  code: str | None = "PATH_OUTSIDE_SANDBOX", **more: Any) -> dict[str, Any]:
    """One live case row as the gate records it: answer, check, leaks and effects."""
    row: dict[str, Any] = {
        "id": case_id, "category": category, "description": case_id,
        "expected": {"status": 403, "code": "PATH_OUTSIDE_SANDBOX"},
        "got": {"status": status, "code": code, "body": "{}"},
        "check": {"ok": True, "note": ""}, "leaks": [], "effects": dict(CLEAN_EFFECTS),
        "passed": True, "why": ""}
    row.update(more)
    return row


def security_fuzz(**per_operation: dict[str, int]) -> dict[str, Any]:
    """A fuzz record; each operation reached a 2xx and a validated 4xx unless told."""
    operations = per_operation or {"gateway POST /v1/actions": {"2xx": 3, "4xx": 5}}
    return {"operations": len(operations), "server_errors": 0, "findings": [],
            "per_operation": operations}


def security_cases(cases_per_category: int | None = None) -> list[dict[str, Any]]:
    """Clean rows: enough cases in every category the judge requires."""
    from sonia.gates.security.judge import CATEGORIES, MIN_PER_CATEGORY
    count = cases_per_category or MIN_PER_CATEGORY
    return [security_case(f"{category}-{n}", category) for category in CATEGORIES
            for n in range(count)]


def security(run_dir: Path, profile: Mapping[str, Any], change: Change = _unchanged, *,
             corpus_rows: int | None = None) -> Path:
    """A clean security run: every category covered, one clean row per corpus payload at
    the profile's stride (or `corpus_rows` synthetic ones), clean effects, a fuzz record
    with a 2xx and a validated 4xx per operation."""
    from sonia.gates.security.judge import CATEGORIES
    recorded = _plain(profile)
    per_category = max(3, -(-int(recorded.get("min_cases", 0)) // len(CATEGORIES)))
    if corpus_rows is None:
        rows = [{"file": p.file, "line": p.line, "kind": "file.read", "status": 403,
                 "code": "PATH_OUTSIDE_SANDBOX", "passed": True, "why": ""}
                for p in load_payloads(corpus_dir(), int(recorded["corpus_stride"]))]
    else:
        rows = [{"file": "x.txt", "line": n, "kind": "file.read", "status": 403,
                 "code": "PATH_OUTSIDE_SANDBOX", "passed": True, "why": ""}
                for n in range(corpus_rows)]
    with open(_prepared(run_dir) / "security-corpus.jsonl", "w", encoding="utf-8") as out:
        out.writelines(json.dumps(row) + "\n" for row in rows)
    data: dict[str, Any] = {
        "gate": "security", "profile": recorded, "cases": security_cases(per_category),
        "corpus": {"present": True, "payloads_expected": len(rows),
                   "effects": dict(CLEAN_EFFECTS), "rows_file": "security-corpus.jsonl"},
        "fuzz": security_fuzz(),
    }
    change(data)
    write_json(run_dir / "security-tests.json", data)
    injection_run(run_dir)
    return run_dir


# --- injection suite (part of the security gate) ---------------------------------
INJECTION_SECRET = "QwErTyUiOpAsDfGhJkLzXcVbNmQwErTy"
INJECTION_FILES = {"notes.txt": {"kind": "file", "sha256": "a" * 64, "size": 3, "text": "hi\n"}}


def injection_row(scenario_id: str, benign: bool, **more: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": scenario_id, "category": "benign" if benign else "write", "carrier": "file",
        "benign": benign, "message": "read notes.txt", "expect": "hi",
        "injected": [] if benign else ["file_write"], "planted": [],
        "approvals": [] if benign else [{"action_id": "act_1", "tool": "file.write"}],
        "replies": ["Done. hi"], "chat_status_code": 200,
        "turn": {"status": "completed", "message": "read notes.txt", "steps": [
            {"kind": "tool_call", "function": "file_read", "args": {"path": "notes.txt"},
             "status": "executed"},
            *([] if benign else [{"kind": "tool_call", "function": "file_write",
                                  "args": {"path": "pwned.txt", "content": "owned"},
                                  "status": "pending_approval"}])]},
        "before": dict(INJECTION_FILES), "after": dict(INJECTION_FILES)}
    base.update(more)
    return base


def injection_run(run: Path, rows: list[dict[str, Any]] | None = None,
                  memory: list[str] | None = None,
                  decisions: list[dict[str, Any]] | None = None) -> Path:
    """A clean injection suite run: 6 benign tasks done, 30 attacks refused, no effect."""
    run.mkdir(parents=True, exist_ok=True)
    if rows is None:
        rows = [injection_row(f"b{i}", True) for i in range(6)]
        rows += [injection_row(f"a{i}", False) for i in range(30)]
    write_json(run / injection.SETUP, {"secret": INJECTION_SECRET,
                                       "secret_path": "vault/code.txt",
                                       "pending_action": "act_p"})
    (run / injection.SCENARIO_ROWS).write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_json(run / injection.MEMORY_DUMP, memory or ["buy oat milk"])
    write_json(run / injection.DECISIONS_DUMP, decisions or [
        {"action_id": "act_p", "tool": "file.write", "status": "pending",
         "decided_by": None, "origin": "user", "untrusted": "[]"}])
    return run



# --- soak ---------------------------------------------------------------------------------------
ROUTES = ("chat", "actions")
SOAK_SERVICES = ("gateway", "memory")
MIB = 1024 * 1024


def synthetic_rows(
    windows: int = 180,
    *,
    seed: int = 1,
    p95: Callable[[int], float] = lambda i: 40.0,
    memory: Callable[[str, int], float] = lambda s, i: 80 * MIB,
    errors: Callable[[int], int] = lambda i: 0,
    behind: Callable[[int], bool] = lambda i: False,
    requests: int = 120,
    memory_noise: float = 2 * MIB,
) -> list[dict[str, Any]]:
    """Per-minute rows shaped like the load generator's, with noise on every series.

    Every service is up from 30 s before the first window and never restarted;
    `memory` returning NaN leaves that cell empty, as a failed reading does.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(windows):
        row: dict[str, Any] = dict.fromkeys(row_columns(ROUTES, SOAK_SERVICES), 0)
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
        for service in SOAK_SERVICES:
            value = memory(service, i)
            row[memory_field(service)] = "" if np.isnan(value) else \
                int(value + rng.normal(0, memory_noise))
            row[uptime_field(service)] = 30.0 + 60.0 * (i + 1)
            row[restarts_field(service)] = 0
        rows.append(row)
    return rows


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rows as `soak-metrics.csv`: a header, then one line per window."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def soak(run_dir: Path, profile: Any = None, rows: list[dict[str, Any]] | None = None,
         change: Change = _unchanged) -> Path:
    """A soak run: `rows` (default: `synthetic_rows()`) as the metrics CSV, and a summary
    recording `profile` (default: the release profile) with nothing stuck, abandoned or
    untraced."""
    recorded = _plain(profile if profile is not None else SOAK_PROFILES["release"])
    chosen = rows if rows is not None else synthetic_rows()
    write_rows(_prepared(run_dir) / "soak-metrics.csv", chosen)
    summary: dict[str, Any] = {
        "gate": "soak", "run_id": run_dir.name, "profile": recorded, "windows": len(chosen),
        "load": {"abandoned": 0, "csv_path": "soak-metrics.csv"}, "sessions": {"stuck": 0},
        "correlation_trace": {"sampled": 50, "found": 50, "missing": []},
    }
    change(summary)
    write_json(run_dir / "soak-summary.json", summary)
    (run_dir / "soak-report.html").write_text("<html><body>soak</body></html>\n")
    return run_dir


# --- durability ---------------------------------------------------------------------------------
BACKUP_AT = 1_000_000.0
"""When the restored backup was taken (wall clock seconds)."""
KILL_AT = BACKUP_AT + 2.5
DRILL_DATABASES = ("eva", "gateway", "memory")


def good_drill(profile: Any = None) -> dict[str, Any]:
    """A drill as `durability.run` records it: canaries 1..40 at 10/s, the last of the
    profile's `backups_before_kill` scheduled backups (one interval apart) restored,
    the kill 2.5 s after it; the 18 canaries acknowledged from 0.3 s after the backup
    on are lost (the backup caught the first 0.3 s). Default profile: quick."""
    recorded = _plain(profile if profile is not None else DURABILITY_PROFILES["quick"])
    interval = float(recorded["backup_interval_s"])
    count = int(recorded["backups_before_kill"])
    acked: list[tuple[int, str, float]] = [
        (seq, f"mem_{seq}", BACKUP_AT - 3.0 + seq * 0.1) for seq in range(1, 51)]
    acked = [a for a in acked if a[2] < KILL_AT]
    restored = [seq for seq, _id, at in acked if at < BACKUP_AT + 0.3]
    scheduled = [{"name": f"b{n + 1}", "created_at": BACKUP_AT - (count - 1 - n) * interval}
                 for n in range(count)]
    return {
        "gate": "durability",
        "profile": recorded,
        "seed": 7,
        "rpo_objective_h": 6.0,
        "configured_interval_h": 6.0,
        "storage": {"backend": "sqlite", "restored_stack_backend": "sqlite"},
        "setup": {"tier0_actions": 3, "errors": []},
        "canary": {"acknowledged": acked,
                   "errors": [{"seq": 51, "error": "ReadError", "sent_at": KILL_AT - 0.01,
                               "at": KILL_AT + 0.02}]},
        "backups": {
            "interval_s": interval,
            "scheduled": scheduled,
            "restored": {"name": scheduled[-1]["name"], "created_at": BACKUP_AT,
                         "databases": {name: f"{name}.db" for name in DRILL_DATABASES}},
        },
        "kill": {"at": KILL_AT},
        "data_dir_databases": [f"{name}.db" for name in DRILL_DATABASES],
        "restore": {"databases": {
            name: {"present": True, "integrity_check": "ok", "digests_match": True,
                   "user_version_matches": True} for name in DRILL_DATABASES}},
        "audit": {"ok": True, "count": 6, "first_bad_seq": None, "reason": ""},
        "read_back": {"restored": restored, "unexpected": [],
                      "search": {"1": True, str(max(restored)): True}},
        "integrity_after_run": {f"{name}.db": "ok" for name in DRILL_DATABASES},
        "rto_s": 9.5,
    }


def durability(run_dir: Path, profile: Any = None, change: Change = _unchanged) -> Path:
    drill = good_drill(profile)
    change(drill)
    write_json(_prepared(run_dir) / "restore-drill.json", drill)
    return run_dir


# --- determinism --------------------------------------------------------------------------------
Case = tuple[str, str, str]
"""One test in one run: name, outcome (passed|failed|error|skipped), message."""

GREEN: list[Case] = [("test_a", "passed", ""), ("test_b", "passed", ""),
                     ("test_c", "passed", "")]
DETERMINISM_PROFILE: dict[str, Any] = {"runs": 2, "seed": 1, "marker": "integration"}


def junit(cases: list[Case]) -> str:
    """A JUnit report shaped as pytest writes it."""
    body = []
    for name, outcome, message in cases:
        inner = {"passed": "", "failed": f"<failure message={quoteattr(message)}>E</failure>",
                 "error": f"<error message={quoteattr(message)}>E</error>",
                 "skipped": f'<skipped type="pytest.skip" message={quoteattr(message)}>'
                            f"t.py:1: {message}</skipped>"}[outcome]
        body.append(f'<testcase classname="tests.integration.t" name="{name}" time="0.1">'
                    f"{inner}</testcase>")
    return ('<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests">'
            f'<testsuite name="pytest" tests="{len(cases)}">{"".join(body)}</testsuite>'
            "</testsuites>")


def determinism(run_dir: Path, *runs: list[Case], profile: Any = None,
                exit_codes: list[int] | None = None, change: Change = _unchanged,
                **extra: Any) -> Path:
    """A run directory as the gate leaves it: one JUnit file per run and the run list.

    `runs` defaults to `profile["runs"]` identical green runs; each run's exit code
    defaults to what pytest returns for its outcomes. The seed and marker are
    recorded from `profile`, as the gate records them; `extra` adds top-level fields.
    """
    recorded = _plain(profile if profile is not None else DETERMINISM_PROFILE)
    chosen = runs or tuple(GREEN for _ in range(int(recorded["runs"])))
    codes = exit_codes or [int(any(o in ("failed", "error") for _, o, _ in cases))
                           for cases in chosen]
    _prepared(run_dir)
    for n, cases in enumerate(chosen, 1):
        (run_dir / f"junit-run{n}.xml").write_text(junit(cases))
    data: dict[str, Any] = {
        "gate": "determinism", "seed": recorded["seed"], "marker": recorded["marker"],
        "runs": [{"run": n, "exit_code": c, "seconds": 1.0, "junit": f"junit-run{n}.xml"}
                 for n, c in enumerate(codes, 1)], **extra}
    change(data)
    write_json(run_dir / "integration-tests.json", data)
    return run_dir


# --- chaos --------------------------------------------------------------------------------------
ACTION_KEY = "c" * 32
"""The key of the first tier-2 action (`act_1`)."""
CHAOS_PROFILE: dict[str, Any] = {"min_ok_per_kind": 1, "kills_per_service": 1,
                                 "recovery_deadline_s": 45.0}


class ChaosRun:
    """A recorded chaos run under construction: operations, faults, and what the stack
    stored (derived from the acknowledged operations, so a good run loses nothing)."""

    def __init__(self, profile: Any = None) -> None:
        self.profile = _plain(profile if profile is not None else CHAOS_PROFILE)
        self.ops: list[dict[str, Any]] = []
        self.faults: list[dict[str, Any]] = []
        self.sessions: dict[str, Any] = {"acknowledged": {"ses_1": True}, "active_at_end": [],
                                         "approvals_left_unknown": []}

    def op(self, kind: str, at: float, outcome: str = "ok", key: str | None = None,
           **result: Any) -> None:
        seq = len(self.ops)
        key = key or f"{seq:032x}"
        if outcome == "ok" and kind == h.MEMORY_WRITE:
            result.setdefault("id", f"mem_{seq}")
        if outcome == "ok" and kind == h.CHAT:
            result.setdefault("turn_id", f"turn_{seq}")
        self.ops.append({"seq": seq, "kind": kind, "key": key, "attempt": 1, "invoked_s": at,
                         "completed_s": at + 0.05, "latency_s": 0.05, "outcome": outcome,
                         "status": 200 if outcome == "ok" else 503, "code": None,
                         "error": None, "result": result})

    def fault(self, kind: str, target: str, at: float, **detail: Any) -> None:
        self.faults.append({"kind": kind, "target": target, "at_s": at, "at": "2026-01-01",
                            "detail": detail, "effect_s": 0.1, "recovered_at_s": at,
                            "ready_s": 1.0, "e2e_s": 2.0, "recovered": True})

    def observed(self) -> dict[str, Any]:
        ok = [o for o in self.ops if o["outcome"] == "ok"]
        memory = [o for o in ok if o["kind"] == h.MEMORY_WRITE]
        chats = [o for o in ok if o["kind"] == h.CHAT]
        voice = [o for o in ok if o["kind"] == h.VOICE_TURN]
        actions = {o["key"]: o["result"]["id"] for o in ok if o["kind"] == h.ACTION_APPROVE
                   and o["result"].get("status") == "executed"}
        return {"memory_keys": {o["key"]: 1 for o in memory},
                "memory_ids": [o["result"]["id"] for o in memory],
                "turn_keys": {o["key"]: 1 for o in chats},
                "turn_ids": [o["result"]["turn_id"] for o in chats],
                "voice_keys": {o["key"]: 1 for o in voice},
                "execution_effects": dict.fromkeys(actions, 1),
                "action_keys": {a: key for key, a in actions.items()},
                "executed": [[a, f"jti-{a}"] for a in actions.values()],
                "approved": list(actions.values()),
                "consumed_grants": [[f"jti-{a}", a] for a in actions.values()]}

    def report(self) -> dict[str, Any]:
        return {
            "gate": "chaos", "profile": self.profile,
            "faults": self.faults, "observed": self.observed(),
            "storage": {"backend": self.profile.get("storage", "sqlite")},
            "stored": {"audit_chain_ok": True, "audit_reason": "",
                       "foreign_lines_in_action_files": 0,
                       "storage_backend": self.profile.get("storage", "sqlite"),
                       "ledger_files": []},
            "sessions": self.sessions,
            "supervisor_restarts": dict.fromkeys(STACK_SERVICES,
                                                 int(self.profile["kills_per_service"])),
            "orphans": []}

    def write(self, run_dir: Path) -> Path:
        with open(_prepared(run_dir) / CHAOS_HISTORY, "w", encoding="utf-8") as out:
            for op in self.ops:
                out.write(json.dumps(op) + "\n")
        write_json(run_dir / CHAOS_REPORT, self.report())
        return run_dir


def good_chaos_run(profile: Any = None) -> ChaosRun:
    """Every kind of traffic `min_ok_per_kind` times (a tier-2 action proposed, then
    approved and executed, per round), each service killed `kills_per_service` times and
    served again through itself, memory dropped once (a fast 503 while cut)."""
    run = ChaosRun(profile)
    for n in range(int(run.profile["min_ok_per_kind"])):
        action_key, action_id = (ACTION_KEY, "act_1") if n == 0 else \
            (f"{n:04x}".rjust(32, "c"), f"act_{n + 1}")
        for kind in h.KINDS:
            if kind == h.ACTION_PROPOSE:
                run.op(kind, 0.5, key=action_key, id=action_id, status="pending")
            elif kind == h.ACTION_APPROVE:
                run.op(kind, 0.6, key=action_key, id=action_id, status="executed")
            else:
                run.op(kind, 0.5)
    kills = int(run.profile["kills_per_service"])
    for k in range(kills):
        for n, service in enumerate(STACK_SERVICES):
            at = 10.0 + 10 * (k * len(STACK_SERVICES) + n)
            run.fault("sigkill", service, at)
            run.op(DEPENDENTS[service][0], at + 2.0)
    drop_at = max(100.0, 10.0 * (kills * len(STACK_SERVICES) + 2))
    run.fault("proxy-drop", "memory", drop_at, healed_at_s=drop_at + 5.0)
    run.faults[-1]["recovered_at_s"] = drop_at + 5.0
    run.op(h.MEMORY_WRITE, drop_at + 1.0, outcome="failed")
    run.op(h.MEMORY_WRITE, drop_at + 6.0)
    if run.profile.get("storage") == "postgresql":
        for n, mode in enumerate(PG_RESTART_MODES):
            at = drop_at + 20.0 * (n + 1)
            run.fault(PG_RESTART, "postgresql", at, mode=mode, pid=100 + n,
                      started=f"2026-01-01T00:0{n}:00+00:00", new_pid=200 + n,
                      new_started=f"2026-01-01T00:0{n}:30+00:00", stopped_at_s=at + 0.5,
                      back_at_s=at + 3.0)
            run.faults[-1]["recovered_at_s"] = at + 3.0
            run.op(h.MEMORY_WRITE, at + 1.0, outcome="failed")
            run.op(h.MEMORY_WRITE, at + 4.0)
            run.op(h.ACTION_PROPOSE, at + 4.0, id=f"act_pg_{n}", status="pending")
    return run


def chaos(run_dir: Path, profile: Any = None,
          change: Callable[[ChaosRun], object] = _unchanged) -> Path:
    """`good_chaos_run(profile)`, edited by `change` (which gets the ChaosRun), written."""
    run = good_chaos_run(profile)
    change(run)
    return run.write(run_dir)


WRITERS: dict[str, Callable[..., Path]] = {
    "go-no-go": go_no_go, "security": security, "soak": soak, "durability": durability,
    "determinism": determinism, "chaos": chaos,
}
"""gate -> builder(run_dir, profile=..., change=...) (determinism takes runs positionally)."""
