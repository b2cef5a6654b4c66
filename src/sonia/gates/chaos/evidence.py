"""The chaos gate's findings: what the stack stored, how fast it recovered, and the verdict.

Read after the run, with the stack stopped: the databases are opened read-only
(`file:...?mode=ro`), the files the tier-2 actions wrote are counted, and the
operation history is held against all of it (`history.check_history`). Kept
apart from `chaos` (which drives traffic and faults) so that the judging can be
read, and tested, on its own.

`judge(run_dir)` derives the verdict from the evidence files alone:
`chaos-report.json` (the profile, the faults with their readiness times, what
was stored, the sessions left active, restarts, orphans) and the raw history
`chaos-history.jsonl`. Recovery end to end is recomputed from the history: the
first successful request, sent after the recovery point, of a kind that goes
through the faulted service (`DEPENDENTS`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sonia import SERVICES
from sonia.errors import ConfigError
from sonia.gates.chaos import history as h
from sonia.gates.chaos.history import History, Observed, Operation
from sonia.gates.common.evidence import VALIDITY, Check, Verdict
from sonia.gates.common.storage import backend_of, read_rows, verify_audit
from sonia.home import Home
from sonia.kit.client import DEFAULT_TIMEOUT_S
from sonia.supervisor.state import read_json, state_file

__all__ = ["CLIENT_TIMEOUT_S", "DEPENDENTS", "HISTORY", "MEMORY_KINDS", "REPORT", "Fault",
           "PG_KINDS", "PG_RESTART", "PG_RESTART_MODES", "chaos_checks", "failed_while_down",
           "fast_fail", "judge",
           "observe", "percentile", "postgres_restarts", "recovery",
           "recover_from_history", "storage_checks", "supervisor_restarts"]

REPORT = "chaos-report.json"
HISTORY = "chaos-history.jsonl"

CLIENT_TIMEOUT_S = DEFAULT_TIMEOUT_S
"""The gateway's internal call timeout: a fault must outlast it to be a real stall."""
DEPENDENTS: dict[str, tuple[str, ...]] = {
    "gateway": h.KINDS,  # every request enters through the gateway
    "router": (h.CHAT,),
    "memory": (h.MEMORY_WRITE,),
    "voice": (h.VOICE_TURN,),
    "openclaw": (h.ACTION_READ,),  # a tier-0 action executes in OpenClaw at once
    "eva": (h.ACTION_PROPOSE,),
    "postgresql": (h.MEMORY_WRITE, h.ACTION_PROPOSE),  # memory's ledger, EVA's and the gateway's
}
"""The kinds of request whose success shows, end to end, that a service is back: each
goes through that service, so no request that bypasses it can stand in for it."""
ALL_DEPENDENTS: frozenset[str] = frozenset({"postgresql"})
"""Targets that are back only once every one of their `DEPENDENTS` kinds succeeded again
(PostgreSQL holds several services' ledgers: one of them writing again is not enough)."""
PG_KINDS: tuple[str, ...] = (h.MEMORY_WRITE, h.MEMORY_SEARCH, h.CHAT, h.VOICE_TURN,
                             h.ACTION_READ, h.ACTION_PROPOSE, h.ACTION_APPROVE)
"""Every kind that needs PostgreSQL when the stack runs on it: an outage shows in any."""
PG_RESTART = "pg-restart"
PG_RESTART_MODES: tuple[str, ...] = ("fast", "immediate")
"""`pg_ctl stop -m` modes the chaos gate restarts PostgreSQL with, each once per run."""
LEDGERS: tuple[str, ...] = ("memory", "eva", "openclaw")
"""The services whose ledgers the history is held against."""
DATABASES: tuple[str, ...] = (*LEDGERS, "gateway")
"""Every service with a database: on PostgreSQL none may write a SQLite file."""
MEMORY_KINDS: tuple[str, ...] = (h.MEMORY_WRITE, h.MEMORY_SEARCH, h.CHAT)
"""Every kind that needs memory: a memory cut shows in any of them (fast-fail latency)."""
MEMORY_TEXT = re.compile(r"^chaos memory ([0-9a-f]{32})$")
TURN_TEXT = re.compile(r"^chaos turn ([0-9a-f]{32})$")
VOICE_TEXT = re.compile(r"^chaos voice ([0-9a-f]{32})$")
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

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fault:
        def num(name: str) -> float | None:
            value = data.get(name)
            return None if value is None else float(value)

        return cls(kind=str(data["kind"]), target=str(data["target"]),
                   at_s=float(data["at_s"]), at=str(data["at"]),
                   detail=dict(data.get("detail") or {}), effect_s=num("effect_s"),
                   recovered_at_s=num("recovered_at_s"), ready_s=num("ready_s"),
                   e2e_s=num("e2e_s"), recovered=bool(data.get("recovered")))



# -- what the stack stored ------------------------------------------------------------
def _count(counts: dict[str, int], pattern: re.Pattern[str], text: object) -> None:
    match = pattern.match(text) if isinstance(text, str) else None
    if match is not None:
        counts[match.group(1)] = counts.get(match.group(1), 0) + 1


def observe(home: Home) -> tuple[Observed, dict[str, Any]]:
    """Read what the stack stored (read-only, through the home's storage backend: SQLite
    files or the schemas on PostgreSQL; and the workspace files), after it stopped."""
    memory_keys: dict[str, int] = {}
    memory_ids = set()
    for mem_id, content in read_rows(home, "memory", "SELECT id, content FROM memories"):
        memory_ids.add(str(mem_id))
        _count(memory_keys, MEMORY_TEXT, content)
    turn_keys: dict[str, int] = {}
    voice_keys: dict[str, int] = {}
    turn_ids = set()
    for turn_id, role, content in read_rows(home, "memory",
                                               "SELECT id, role, content FROM turns"):
        turn_ids.add(str(turn_id))
        if role == "user":
            _count(turn_keys, TURN_TEXT, content)
            _count(voice_keys, VOICE_TEXT, content)
    action_keys: dict[str, str] = {}
    for action_id, args in read_rows(home, "eva", "SELECT action_id, args FROM decisions"):
        path = json.loads(args).get("path") if isinstance(args, str) else None
        match = ACTION_PATH.match(path) if isinstance(path, str) else None
        if match is not None:
            action_keys[str(action_id)] = match.group(1)
    executed: list[tuple[str, str | None]] = []
    approved: set[str] = set()
    for kind, action_id, detail in read_rows(
            home, "eva", "SELECT kind, action_id, detail FROM audit_log "
                    "WHERE kind IN ('executed', 'approved') ORDER BY seq"):
        if action_id not in action_keys:
            continue  # not a chaos tier-2 action (tier-0 reads are executed too)
        if kind == "approved":
            approved.add(str(action_id))
        else:
            jti = json.loads(detail).get("jti")
            executed.append((str(action_id), jti if isinstance(jti, str) else None))
    grants = [(str(j), str(a)) for j, a in read_rows(
        home, "openclaw", "SELECT jti, action_id FROM consumed_grants")
        if str(a) in action_keys]
    effects: dict[str, int] = {}
    foreign_lines = 0
    chaos_dir = home.workspace / "chaos"
    for path in sorted(chaos_dir.glob("*.txt")) if chaos_dir.is_dir() else []:
        key = path.stem
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        effects[key] = sum(1 for line in lines if line == key)
        foreign_lines += sum(1 for line in lines if line != key)
    chain = verify_audit(home)
    facts = {"storage_backend": backend_of(home),
             "ledger_files": sorted(p.name for p in (home.db_path(s) for s in DATABASES)
                                    if p.exists()),
             "audit_chain_ok": chain.ok, "audit_records": chain.count,
             "audit_reason": chain.reason, "foreign_lines_in_action_files": foreign_lines,
             "memory_rows": len(memory_ids), "turn_rows": len(turn_ids),
             "action_files": len(effects)}
    return Observed(memory_keys=memory_keys, memory_ids=memory_ids, turn_keys=turn_keys,
                    turn_ids=turn_ids, voice_keys=voice_keys, execution_effects=effects,
                    action_keys=action_keys, executed=executed, approved=approved,
                    consumed_grants=grants), facts


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

    One entry per proxy phase ("proxy-drop", "proxy-delay"), per SIGSTOP
    ("sigstop:<service>") and per PostgreSQL restart ("pg-restart:<mode>", from the
    stop to the server answering again): how many requests, and the latency of the failed ones
    and of all of them (p50/p99/max, by answer code).
    """
    out: dict[str, Any] = {}
    for fault in faults:
        kinds = MEMORY_KINDS if fault.target == "memory" else DEPENDENTS[fault.target]
        if fault.kind.startswith("proxy-"):
            name, end = fault.kind, fault.detail.get("healed_at_s", fault.at_s)
        elif fault.kind == "sigstop":
            name, end = f"sigstop:{fault.target}", fault.detail.get("resumed_at_s", fault.at_s)
        elif fault.kind == PG_RESTART:
            name, end = f"{PG_RESTART}:{fault.detail.get('mode')}", \
                fault.detail.get("back_at_s", fault.at_s)
            kinds = PG_KINDS
        else:
            continue
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


def recover_from_history(faults: Sequence[Fault], history: History,
                         deadline_s: float) -> list[Fault]:
    """Each fault with its end-to-end recovery recomputed from the history.

    `e2e_s`: from the recovery point to the end of the first successful request
    sent after it of a kind that goes through the faulted service; `exercised`
    (in `detail`): whether any such request was even sent after it. Recovered:
    ready again and served end to end, both within the deadline.
    """
    ops = history.ops()
    out = []
    for fault in faults:
        since = fault.recovered_at_s
        kinds = DEPENDENTS.get(fault.target, ())
        after = [] if since is None else [op for op in ops
                                          if op.kind in kinds and op.invoked_s >= since]
        groups = [(k,) for k in kinds] if fault.target in ALL_DEPENDENTS else [kinds]
        firsts = [next((op.completed_s for op in after if op.kind in group
                        and op.outcome == "ok" and op.completed_s is not None), None)
                  for group in groups]
        e2e = None if since is None or not firsts or None in firsts \
            else max(f for f in firsts if f is not None) - since
        ready_in_time = fault.ready_s is not None and fault.ready_s <= deadline_s
        detail = dict(fault.detail) | {"exercised_after": len(after)}
        out.append(Fault(fault.kind, fault.target, fault.at_s, fault.at, detail,
                         fault.effect_s, since, fault.ready_s, e2e,
                         ready_in_time and e2e is not None and e2e <= deadline_s))
    return out


def chaos_checks(profile: Mapping[str, Any], history: History, faults: Sequence[Fault],
                 checked: h.HistoryChecks, stored: Mapping[str, Any],
                 sessions: Mapping[str, Any], restarts: Mapping[str, int],
                 fails: Mapping[str, Any], leftovers: Sequence[int],
                 storage: Mapping[str, Any] | None = None) -> list[Check]:
    """Every check of the verdict: validity of the run first, then the criteria.

    `storage`: the backend that ran (`{"backend": ...}`, the report's "storage"; None
    for a report from before PostgreSQL runs: SQLite). On PostgreSQL each restart mode
    of `PG_RESTART_MODES` must have restarted the server (`postgres_restarts`).

    `faults` must come from `recover_from_history`. `sessions`: `acknowledged`
    (session id -> its stop was acknowledged) and `active_at_end` (the ids the
    gateway lists as active once the traffic, which closes its own sessions, is
    done; None when it could not be listed). Nothing is stopped before counting.
    """
    deadline = float(profile["recovery_deadline_s"])
    min_ok = int(profile["min_ok_per_kind"])
    summary = history.summary()
    ok_counts = {kind: summary[kind]["ok"] for kind in h.KINDS}
    thin = {k: n for k, n in ok_counts.items() if n < min_ok}
    no_effect = [f"{f.kind}:{f.target}" for f in faults if f.effect_s is None]
    unexercised = [f"{f.kind}:{f.target}@{f.at_s:.1f}" for f in faults
                   if not f.detail.get("exercised_after")]
    not_recovered = [f"{f.kind}:{f.target}@{f.at_s:.1f}" for f in faults if not f.recovered]
    worst = max((max(f.ready_s or 0.0, f.e2e_s or 0.0) for f in faults), default=None)
    drop = fails.get("proxy-drop", {}).get("failed", {})
    expected_restarts = {s: int(profile["kills_per_service"]) for s in SERVICES}
    counts = checked.counts()
    stuck = checked.facts.get("actions_approved_not_executed", 0)
    acknowledged: Mapping[str, bool] = sessions.get("acknowledged") or {}
    active = sessions.get("active_at_end")
    acked_active = sorted(s for s in active or [] if s in acknowledged)
    unacked_active = sorted(s for s in active or [] if s not in acknowledged)
    checks = [
        Check("traffic_ok_per_kind", f">= {min_ok} each", ok_counts, not thin,
              kind=VALIDITY, detail="every kind of traffic must have run (for actions: the "
              "actions routes must exist)" if thin else ""),
        Check("faults_took_effect", "every fault observed", no_effect or "all", not no_effect,
              kind=VALIDITY),
        Check("faulted_service_exercised_after_fault",
              "a request through the service sent after each fault", unexercised or "all",
              not unexercised, kind=VALIDITY,
              detail="recovery is judged by traffic through the faulted service: "
                     + ", ".join(f"{s}: {'/'.join(k)}" for s, k in DEPENDENTS.items()
                                 if s != "gateway")),
        Check("fast_fail_samples", ">= 1 failed request while memory was dropped",
              drop.get("count", 0), drop.get("count", 0) >= 1, kind=VALIDITY),
        *storage_checks(profile, storage or {"backend": "sqlite"}, stored, faults,
                        history.ops()),
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
        Check("sessions_active_at_end", 0, None if active is None else len(active),
              active is not None and not active,
              detail=f"stuck: {len(acked_active)} the traffic started and stopped, "
                     f"{len(unacked_active)} whose start went unanswered; none was stopped "
                     "by the gate before counting" if active else
                     ("the active sessions could not be listed" if active is None else "")),
        Check("acknowledged_sessions_left_active", 0, len(acked_active), not acked_active,
              detail=", ".join(acked_active[:5])),
        Check("every_fault_recovered",
              f"ready and served through the service within {deadline}s",
              not_recovered or "all", not not_recovered),
        Check("worst_recovery_s", f"<= {deadline}",
              None if worst is None else round(worst, 3),
              worst is not None and worst <= deadline),
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


def failed_while_down(fault: Fault, ops: Sequence[Operation]) -> int:
    """Requests needing PostgreSQL sent while it was down (from `stopped_at_s`, when
    `pg_ctl stop` had returned, to `back_at_s`) that failed or never answered: the
    outage seen from outside, re-derived from the history (a failure before the stop,
    say a pooled connection an earlier restart broke, is not this one's effect)."""
    down, back = fault.detail.get("stopped_at_s"), fault.detail.get("back_at_s")
    if not isinstance(down, int | float) or not isinstance(back, int | float):
        return 0
    return sum(1 for op in ops if op.kind in PG_KINDS and down <= op.invoked_s < back
               and op.outcome in ("failed", "unknown"))


def postgres_restarts(faults: Sequence[Fault], ops: Sequence[Operation]) -> dict[str, str]:
    """Per restart mode, whether it took effect: a new postmaster (another pid, a later
    `pg_postmaster_start_time()`) and a request that failed while it was down."""
    seen: dict[str, str] = {mode: "never restarted" for mode in PG_RESTART_MODES}
    for fault in faults:
        if fault.kind != PG_RESTART:
            continue
        d = fault.detail
        new_server = (d.get("pid") is not None and d.get("new_pid") not in (None, d["pid"])
                      and isinstance(d.get("started"), str)
                      and isinstance(d.get("new_started"), str)
                      and d["new_started"] > d["started"])
        if not new_server:
            verdict = (f"the same server answered after it (pid {d.get('pid')} -> "
                       f"{d.get('new_pid')}, started {d.get('started')} -> "
                       f"{d.get('new_started')})")
        elif failed_while_down(fault, ops) == 0:
            verdict = "no request failed while it was down"
        else:
            verdict = "restarted"
        seen[str(d.get("mode"))] = verdict
    return seen


def storage_checks(profile: Mapping[str, Any], storage: Mapping[str, Any],
                   stored: Mapping[str, Any], faults: Sequence[Fault],
                   ops: Sequence[Operation]) -> list[Check]:
    """The run was on the backend its profile names (and, on PostgreSQL, no ledger file
    was written beside it); on PostgreSQL the server restarts took effect."""
    wanted = str(profile.get("storage", "sqlite"))
    ran = {"profile": wanted, "report": storage.get("backend"),
           "observed": stored.get("storage_backend", "sqlite")}
    files = list(stored.get("ledger_files") or [])
    checks = [Check("storage_as_profiled", f"{wanted} throughout", ran | {"ledger_files": files},
                    set(ran.values()) == {wanted} and (wanted == "sqlite" or not files),
                    kind=VALIDITY,
                    detail="the backend named by the profile is the one the stack wrote to")]
    if wanted == "postgresql":
        restarts = postgres_restarts(faults, ops)
        checks.append(Check("postgres_restarts_took_effect",
                            {mode: "restarted" for mode in PG_RESTART_MODES}, restarts,
                            all(v == "restarted" for v in restarts.values()), kind=VALIDITY,
                            detail=f"pg_ctl stop -m {' / '.join(PG_RESTART_MODES)}, then a "
                                   "start, under load"))
    return checks


def _load_report(run_dir: Path) -> tuple[dict[str, Any], list[Operation]]:
    report_path, history_path = run_dir / REPORT, run_dir / HISTORY
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
        lines = history_path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as exc:
        raise ConfigError(f"{exc.filename} is missing: the chaos run did not finish",
                          key="evidence") from None
    except ValueError as exc:
        raise ConfigError(f"{report_path} is not JSON: {exc}", key="evidence") from exc
    ops = []
    for number, line in enumerate(lines, 1):
        try:
            ops.append(Operation.from_dict(json.loads(line)))
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{history_path} line {number} is not an operation: {exc}",
                              key="evidence") from exc
    return report, ops


def judge(run_dir: Path) -> Verdict:
    """The chaos verdict from `chaos-report.json` and `chaos-history.jsonl` alone."""
    report, ops = _load_report(run_dir)
    try:
        profile = report["profile"]
        history = History.of(ops)
        observed = Observed.from_dict(report["observed"])
        faults = recover_from_history([Fault.from_dict(f) for f in report["faults"]],
                                      history, float(profile["recovery_deadline_s"]))
        checks = chaos_checks(profile, history, faults, h.check_history(history, observed),
                              report["stored"], report["sessions"],
                              report["supervisor_restarts"], fast_fail(history, faults),
                              report["orphans"], report.get("storage"))
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{run_dir / REPORT} is incomplete: {type(exc).__name__}: {exc}",
                          key="evidence") from exc
    return Verdict.of("chaos", checks, {
        "lost_acknowledged_writes": 0, "double_executions": 0, "unapproved_executions": 0,
        "recovery_deadline_s": profile["recovery_deadline_s"],
        "fast_fail_p99_s": CLIENT_TIMEOUT_S,
    })
