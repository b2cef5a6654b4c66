"""The chaos gate's findings: what the stack stored, how fast it recovered, and the checks.

Read after the run, with the stack stopped: the databases are opened read-only
(`file:...?mode=ro`), the files the tier-2 actions wrote are counted, and the
operation history is held against all of it (`history.check_history`). Kept
apart from `chaos` (which drives traffic and faults) so that the judging can be
read, and tested, on its own.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sonia import SERVICES
from sonia.gates import history as h
from sonia.gates.evidence import Check
from sonia.gates.history import History, Observed, Operation
from sonia.home import Home
from sonia.kit.client import DEFAULT_TIMEOUT
from sonia.kit.db import connect
from sonia.services.eva import audit
from sonia.supervisor.state import read_json, state_file

if TYPE_CHECKING:
    from sonia.gates.chaos import ChaosProfile

__all__ = ["CLIENT_TIMEOUT_S", "DEPENDENTS", "MEMORY_KINDS", "Fault", "chaos_checks",
           "fast_fail", "observe", "percentile", "recovery", "supervisor_restarts"]

CLIENT_TIMEOUT_S = float(DEFAULT_TIMEOUT.read or 10.0)
"""The gateway's internal read timeout: a fault must outlast it to be a real stall."""
DEPENDENTS: dict[str, tuple[str, ...]] = {
    "gateway": h.KINDS,
    "router": (h.CHAT,),
    "memory": (h.MEMORY_WRITE, h.MEMORY_SEARCH, h.CHAT),
    "voice": h.KINDS,  # no traffic kind goes through voice: any request counts
    "openclaw": (h.ACTION_READ, h.ACTION_APPROVE),
    "eva": (h.ACTION_READ, h.ACTION_PROPOSE, h.ACTION_APPROVE),
}
"""The kinds of request whose success shows, end to end, that a service is back."""
MEMORY_KINDS = DEPENDENTS["memory"]
MEMORY_TEXT = re.compile(r"^chaos memory ([0-9a-f]{32})$")
TURN_TEXT = re.compile(r"^chaos turn ([0-9a-f]{32})$")
ACTION_PATH = re.compile(r"^chaos/([0-9a-f]{32})\.txt$")


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile (None for no values): exact, no interpolation."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


@dataclass
class Fault:
    """One injected fault: when (history seconds and wall clock), its effect, its recovery.

    `effect_s`: from injection to the effect being seen; `ready_s` / `e2e_s`: from
    the recovery point (the kill itself, SIGCONT, the proxy passing again) to the
    service's /readyz answering 200 / to the first successful dependent request.
    """

    kind: str
    target: str
    at_s: float
    at: str
    detail: dict[str, Any] = field(default_factory=dict)
    effect_s: float | None = None
    recovered_at_s: float | None = None
    ready_s: float | None = None
    e2e_s: float | None = None
    recovered: bool = False

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in data.items()}



# -- what the stack stored ------------------------------------------------------------
def _rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    """Rows of a read-only query; [] when the database or its table does not exist."""
    if not path.is_file():
        return []
    conn = connect(path, readonly=True)
    try:
        return [tuple(r) for r in conn.execute(sql).fetchall()]
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise
    finally:
        conn.close()


def _count(counts: dict[str, int], pattern: re.Pattern[str], text: object) -> None:
    match = pattern.match(text) if isinstance(text, str) else None
    if match is not None:
        counts[match.group(1)] = counts.get(match.group(1), 0) + 1


def observe(home: Home) -> tuple[Observed, dict[str, Any]]:
    """Read what the stack stored (databases read-only, workspace files), after it stopped."""
    memory_db, eva_db = home.db_path("memory"), home.db_path("eva")
    memory_keys: dict[str, int] = {}
    memory_ids = set()
    for mem_id, content in _rows(memory_db, "SELECT id, content FROM memories"):
        memory_ids.add(str(mem_id))
        _count(memory_keys, MEMORY_TEXT, content)
    turn_keys: dict[str, int] = {}
    turn_ids = set()
    for turn_id, role, content in _rows(memory_db, "SELECT id, role, content FROM turns"):
        turn_ids.add(str(turn_id))
        if role == "user":
            _count(turn_keys, TURN_TEXT, content)
    action_keys: dict[str, str] = {}
    for action_id, args in _rows(eva_db, "SELECT action_id, args FROM decisions"):
        path = json.loads(args).get("path") if isinstance(args, str) else None
        match = ACTION_PATH.match(path) if isinstance(path, str) else None
        if match is not None:
            action_keys[str(action_id)] = match.group(1)
    executed: list[tuple[str, str | None]] = []
    approved: set[str] = set()
    for kind, action_id, detail in _rows(
            eva_db, "SELECT kind, action_id, detail FROM audit_log "
                    "WHERE kind IN ('executed', 'approved') ORDER BY seq"):
        if action_id not in action_keys:
            continue  # not a chaos tier-2 action (tier-0 reads are executed too)
        if kind == "approved":
            approved.add(str(action_id))
        else:
            jti = json.loads(detail).get("jti")
            executed.append((str(action_id), jti if isinstance(jti, str) else None))
    grants = [(str(j), str(a)) for j, a in _rows(
        home.db_path("openclaw"), "SELECT jti, action_id FROM consumed_grants")
        if str(a) in action_keys]
    effects: dict[str, int] = {}
    foreign_lines = 0
    chaos_dir = home.workspace / "chaos"
    for path in sorted(chaos_dir.glob("*.txt")) if chaos_dir.is_dir() else []:
        key = path.stem
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        effects[key] = sum(1 for line in lines if line == key)
        foreign_lines += sum(1 for line in lines if line != key)
    chain = audit.verify(eva_db)
    facts = {"audit_chain_ok": chain.ok, "audit_records": chain.count,
             "audit_reason": chain.reason, "foreign_lines_in_action_files": foreign_lines,
             "memory_rows": len(memory_ids), "turn_rows": len(turn_ids),
             "action_files": len(effects)}
    return Observed(memory_keys=memory_keys, memory_ids=memory_ids, turn_keys=turn_keys,
                    turn_ids=turn_ids, execution_effects=effects, action_keys=action_keys,
                    executed=executed, approved=approved, consumed_grants=grants), facts


# -- the report -----------------------------------------------------------------------
def _latency(ops: Sequence[Operation]) -> dict[str, Any]:
    values = [op.latency_s for op in ops if op.latency_s is not None]
    codes: dict[str, int] = {}
    for op in ops:
        label = op.code or op.error or str(op.status)
        codes[label] = codes.get(label, 0) + 1
    return {"count": len(values),
            "p50_s": percentile(values, 50), "p99_s": percentile(values, 99),
            "max_s": max(values) if values else None, "codes": codes}


def fast_fail(history: History, faults: Sequence[Fault]) -> dict[str, Any]:
    """Latency of the dependent requests sent while a dependency was cut off or stopped.

    One entry per proxy phase ("proxy-drop", "proxy-delay") and per SIGSTOP
    ("sigstop:<service>"): how many requests, and the latency of the failed ones
    and of all of them (p50/p99/max, by answer code).
    """
    out: dict[str, Any] = {}
    for fault in faults:
        if fault.kind.startswith("proxy-"):
            name, end = fault.kind, fault.detail.get("healed_at_s", fault.at_s)
        elif fault.kind == "sigstop":
            name, end = f"sigstop:{fault.target}", fault.detail.get("resumed_at_s", fault.at_s)
        else:
            continue
        kinds = DEPENDENTS[fault.target]
        window = [op for op in history.ops()
                  if op.kind in kinds and fault.at_s <= op.invoked_s < end]
        failed = [op for op in window if op.outcome != "ok"]
        out[name] = {"requests": len(window), "failed": _latency(failed),
                     "all": _latency(window)}
    return out


def recovery(faults: Sequence[Fault]) -> dict[str, Any]:
    """Per service and fault kind: the readiness and end-to-end recovery times."""
    table: dict[str, Any] = {}
    for fault in faults:
        row = table.setdefault(fault.target, {}).setdefault(
            fault.kind, {"count": 0, "ready_s": [], "e2e_s": [], "not_recovered": 0})
        row["count"] += 1
        if fault.ready_s is not None:
            row["ready_s"].append(round(fault.ready_s, 3))
        if fault.e2e_s is not None:
            row["e2e_s"].append(round(fault.e2e_s, 3))
        row["not_recovered"] += 0 if fault.recovered else 1
    for per_kind in table.values():
        for row in per_kind.values():
            for name in ("ready_s", "e2e_s"):
                row[f"{name}_max"] = max(row[name]) if row[name] else None
                row[f"{name}_p50"] = percentile(row[name], 50)
    return table


def supervisor_restarts(home: Home) -> dict[str, int]:
    state = read_json(state_file(home)) or {}
    return {name: int(info.get("restarts", 0))
            for name, info in (state.get("services") or {}).items()}


def chaos_checks(profile: ChaosProfile, history: History, faults: Sequence[Fault],
                 checked: h.HistoryChecks, stored: Mapping[str, Any],
                 sessions: Mapping[str, Any], restarts: Mapping[str, int],
                 fails: Mapping[str, Any], leftovers: Sequence[int]) -> list[Check]:
    """Every check of the verdict: validity of the run first, then the criteria."""
    summary = history.summary()
    ok_counts = {kind: summary[kind]["ok"] for kind in h.KINDS}
    thin = {k: n for k, n in ok_counts.items() if n < profile.min_ok_per_kind}
    no_effect = [f"{f.kind}:{f.target}" for f in faults if f.effect_s is None]
    not_recovered = [f"{f.kind}:{f.target}@{f.at_s:.1f}" for f in faults if not f.recovered]
    worst = max((max(f.ready_s or 0.0, f.e2e_s or 0.0) for f in faults), default=None)
    drop = fails.get("proxy-drop", {}).get("failed", {})
    expected_restarts = {s: profile.kills_per_service for s in SERVICES}
    counts = checked.counts()
    stuck = checked.facts.get("actions_approved_not_executed", 0)
    checks = [
        Check("traffic_ok_per_kind", f">= {profile.min_ok_per_kind} each", ok_counts, not thin,
              kind="validity", detail="every kind of traffic must have run (for actions: the "
              "actions routes must exist)" if thin else ""),
        Check("faults_took_effect", "every fault observed", no_effect or "all", not no_effect,
              kind="validity"),
        Check("fast_fail_samples", ">= 1 failed request while memory was dropped",
              drop.get("count", 0), drop.get("count", 0) >= 1, kind="validity"),
    ]
    for rule in h.HistoryChecks.RULES:
        checks.append(Check(rule, 0, counts[rule], counts[rule] == 0,
                            detail=", ".join(getattr(checked, rule)[:5])))
    checks += [
        Check("approved_actions_never_executed", 0, stuck, stuck == 0,
              detail="approved in EVA (approval invoked, then retried after recovery) but "
                     "never executed: an approval must lead to exactly one execution"),
        Check("foreign_lines_in_action_files", 0, stored["foreign_lines_in_action_files"],
              stored["foreign_lines_in_action_files"] == 0),
        Check("audit_chain_intact", True, stored["audit_chain_ok"],
              bool(stored["audit_chain_ok"]), detail=str(stored["audit_reason"])),
        Check("sessions_active_at_end", 0, sessions.get("active_at_end"),
              sessions.get("active_at_end") == 0),
        Check("acknowledged_sessions_left_active", 0, sessions.get("acknowledged_left_active"),
              sessions.get("acknowledged_left_active") == 0,
              detail="after stops were retried once the stack had recovered"),
        Check("every_fault_recovered",
              f"ready and serving within {profile.recovery_deadline_s}s",
              not_recovered or "all", not not_recovered),
        Check("worst_recovery_s", f"<= {profile.recovery_deadline_s}",
              None if worst is None else round(worst, 3),
              worst is not None and worst <= profile.recovery_deadline_s),
        Check("fast_fail_p99_s", f"< {CLIENT_TIMEOUT_S} (internal client timeout)",
              drop.get("p99_s"), drop.get("p99_s") is not None
              and drop["p99_s"] < CLIENT_TIMEOUT_S,
              detail="a dead dependency answers 503 at once instead of piling up"),
        Check("supervisor_restarts", expected_restarts, dict(restarts),
              dict(restarts) == expected_restarts,
              detail="each SIGKILL restarted its service once, and nothing else crashed"),
        Check("orphans_after_stop", 0, list(leftovers), not leftovers),
    ]
    return checks
