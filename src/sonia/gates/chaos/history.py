"""The chaos gate's operation history and the checker that holds it against the stored state.

Every request the gate sends is an `Operation` in a `History`: what it was
(kind, and the unique key it carries: a uuid written into the content, the
session id, ...), when it was invoked, and how it ended:

    ok        the service acknowledged it (2xx): its effect MUST be there afterwards
    failed    the service answered an error, or the request never left (connection
              refused): nothing was promised. A 5xx answer may still hide an
              effect (the gateway timed out waiting for memory, which then
              committed), so "failed" does not mean "absent"
    unknown   the request was sent and no answer came (timeout, reset): it may or
              may not have happened

After the run, the gate reads what the stack actually stored (`Observed`: the
memory ledger, the turns, the audit log, the grant ledger and the files the
tier-2 actions wrote) and `check_history` compares the two. The rules, each a
list of offending keys so that a report can show them:

    lost_memory_writes       acknowledged memory write whose row is missing
    duplicated_memory_writes a memory written once and stored more than once
    lost_chat_turns          acknowledged chat turn whose turn is missing
    duplicated_chat_turns    a chat message stored more than once
    lost_voice_turns         voice turn answered with `response.final` whose user
                             turn is missing (the voice service stores the
                             exchange before it sends `response.final`)
    duplicated_voice_turns   a voice utterance stored more than once
    lost_executions          action acknowledged as executed whose effect is not there
                             exactly once
    double_executions        an action whose effect, audit record or grant shows
                             up more than once (or a grant `jti` used twice)
    unapproved_executions    an action that ran although the gate never invoked
                             its approval, or without an `approved` audit record

Unknown and failed operations are allowed either way (present or absent) except
that nothing may ever be applied twice or executed without approval. The module
is pure: no I/O, so synthetic histories test every rule (tests/unit/chaos).
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

__all__ = [
    "ACTION_APPROVE",
    "ACTION_PROPOSE",
    "ACTION_READ",
    "CHAT",
    "KINDS",
    "MEMORY_SEARCH",
    "MEMORY_WRITE",
    "OUTCOMES",
    "SESSION_START",
    "SESSION_STOP",
    "VOICE_TURN",
    "HistoryChecks",
    "History",
    "Observed",
    "Operation",
    "Outcome",
    "check_history",
]

Outcome = Literal["ok", "failed", "unknown"]
OUTCOMES: tuple[Outcome, ...] = ("ok", "failed", "unknown")

MEMORY_WRITE = "memory_write"
MEMORY_SEARCH = "memory_search"
CHAT = "chat"
SESSION_START = "session_start"
SESSION_STOP = "session_stop"
ACTION_READ = "action_read"
ACTION_PROPOSE = "action_propose"
ACTION_APPROVE = "action_approve"
VOICE_TURN = "voice_turn"
"""A text turn over a session's WebSocket stream: gateway -> voice -> router -> memory."""
KINDS: tuple[str, ...] = (MEMORY_WRITE, MEMORY_SEARCH, CHAT, SESSION_START, SESSION_STOP,
                          ACTION_READ, ACTION_PROPOSE, ACTION_APPROVE, VOICE_TURN)
"""Every kind of operation the gate sends."""

EXAMPLES = 20
"""Offending keys kept per rule in a report (the counts are always complete)."""


@dataclass
class Operation:
    """One request: invoked at `invoked_s` (seconds since the history began), maybe ended."""

    seq: int
    kind: str
    key: str
    invoked_s: float
    attempt: int = 1
    completed_s: float | None = None
    outcome: Outcome | None = None
    status: int | None = None
    code: str | None = None
    error: str | None = None
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.outcome is not None

    @property
    def latency_s(self) -> float | None:
        return None if self.completed_s is None else self.completed_s - self.invoked_s

    def to_dict(self) -> dict[str, Any]:
        latency = self.latency_s
        return {"seq": self.seq, "kind": self.kind, "key": self.key, "attempt": self.attempt,
                "invoked_s": round(self.invoked_s, 4),
                "completed_s": None if self.completed_s is None else round(self.completed_s, 4),
                "latency_s": None if latency is None else round(latency, 4),
                "outcome": self.outcome, "status": self.status, "code": self.code,
                "error": self.error, "result": self.result}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Operation:
        """An operation as `to_dict` wrote it (one line of `chaos-history.jsonl`)."""
        outcome = data.get("outcome")
        if outcome is not None and outcome not in OUTCOMES:
            raise ValueError(f"operation {data.get('seq')}: unknown outcome {outcome!r}")
        if data.get("kind") not in KINDS:
            raise ValueError(f"operation {data.get('seq')}: unknown kind {data.get('kind')!r}")
        completed = data.get("completed_s")
        result = data.get("result") or {}
        return cls(seq=int(data["seq"]), kind=str(data["kind"]), key=str(data["key"]),
                   invoked_s=float(data["invoked_s"]), attempt=int(data.get("attempt", 1)),
                   completed_s=None if completed is None else float(completed),
                   outcome=outcome, status=data.get("status"), code=data.get("code"),
                   error=data.get("error"), result=dict(result))


class History:
    """Operations in invocation order, timed on one monotonic clock."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.started = clock()
        self._ops: list[Operation] = []

    @classmethod
    def of(cls, ops: Sequence[Operation]) -> History:
        """A finished history, rebuilt from its recorded operations (to judge a run)."""
        history = cls()
        history._ops = list(ops)
        return history

    def now(self) -> float:
        """Seconds since the history began, on its clock."""
        return self._clock() - self.started

    def invoke(self, kind: str, key: str, *, attempt: int = 1) -> Operation:
        if kind not in KINDS:
            raise ValueError(f"unknown operation kind {kind!r}")
        op = Operation(seq=len(self._ops), kind=kind, key=key, invoked_s=self.now(),
                       attempt=attempt)
        self._ops.append(op)
        return op

    def complete(self, op: Operation, outcome: Outcome, *, status: int | None = None,
                 code: str | None = None, error: str | None = None,
                 result: Mapping[str, Any] | None = None) -> Operation:
        if op.done:
            raise ValueError(f"operation {op.seq} ({op.kind}) already completed")
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}")
        op.completed_s = self.now()
        op.outcome, op.status, op.code, op.error = outcome, status, code, error
        op.result = dict(result or {})
        return op

    def __iter__(self) -> Iterator[Operation]:
        return iter(list(self._ops))

    def __len__(self) -> int:
        return len(self._ops)

    def ops(self, kind: str | None = None, outcome: Outcome | None = None) -> list[Operation]:
        return [op for op in self._ops
                if (kind is None or op.kind == kind) and (outcome is None or op.outcome == outcome)]

    def in_flight(self) -> list[Operation]:
        return [op for op in self._ops if not op.done]

    def summary(self) -> dict[str, dict[str, int]]:
        """Per kind: how many were invoked and how each ended (in_flight: not ended)."""
        table: dict[str, dict[str, int]] = {}
        for kind in KINDS:
            ops = self.ops(kind)
            row = {"invoked": len(ops), "in_flight": sum(1 for op in ops if not op.done)}
            row |= {outcome: sum(1 for op in ops if op.outcome == outcome)
                    for outcome in OUTCOMES}
            table[kind] = row
        return table


@dataclass(frozen=True)
class Observed:
    """What the stack stored, read after the run (the gate builds it; tests write it by hand).

    `memory_keys` / `turn_keys` / `voice_keys`: how many stored rows carry each
    operation key (a memory's content, a chat or a voice user turn's content).
    `memory_ids` / `turn_ids`: the ids present, to match acknowledged ids.
    `execution_effects`: per action key, how many times its effect is present in
    the workspace. `action_keys`: EVA's action id -> the action key (from the
    stored arguments). `executed`: (action id, grant jti) of every `executed`
    audit record; `approved`: action ids with an `approved` audit record;
    `consumed_grants`: (jti, action id) rows of OpenClaw's grant ledger.
    """

    memory_keys: Mapping[str, int] = field(default_factory=dict)
    memory_ids: Collection[str] = frozenset()
    turn_keys: Mapping[str, int] = field(default_factory=dict)
    turn_ids: Collection[str] = frozenset()
    voice_keys: Mapping[str, int] = field(default_factory=dict)
    execution_effects: Mapping[str, int] = field(default_factory=dict)
    action_keys: Mapping[str, str] = field(default_factory=dict)
    executed: Sequence[tuple[str, str | None]] = ()
    approved: Collection[str] = frozenset()
    consumed_grants: Sequence[tuple[str, str]] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, so that a report holds what was stored and can be judged again."""
        return {"memory_keys": dict(self.memory_keys), "memory_ids": sorted(self.memory_ids),
                "turn_keys": dict(self.turn_keys), "turn_ids": sorted(self.turn_ids),
                "voice_keys": dict(self.voice_keys),
                "execution_effects": dict(self.execution_effects),
                "action_keys": dict(self.action_keys),
                "executed": [list(e) for e in self.executed], "approved": sorted(self.approved),
                "consumed_grants": [list(g) for g in self.consumed_grants]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Observed:
        return cls(
            memory_keys={str(k): int(v) for k, v in data["memory_keys"].items()},
            memory_ids=frozenset(str(i) for i in data["memory_ids"]),
            turn_keys={str(k): int(v) for k, v in data["turn_keys"].items()},
            turn_ids=frozenset(str(i) for i in data["turn_ids"]),
            voice_keys={str(k): int(v) for k, v in data["voice_keys"].items()},
            execution_effects={str(k): int(v) for k, v in data["execution_effects"].items()},
            action_keys={str(k): str(v) for k, v in data["action_keys"].items()},
            executed=[(str(a), None if j is None else str(j)) for a, j in data["executed"]],
            approved=frozenset(str(a) for a in data["approved"]),
            consumed_grants=[(str(j), str(a)) for j, a in data["consumed_grants"]])


@dataclass(frozen=True)
class HistoryChecks:
    """The offending keys of every rule (see the module docstring)."""

    lost_memory_writes: list[str]
    duplicated_memory_writes: list[str]
    lost_chat_turns: list[str]
    duplicated_chat_turns: list[str]
    lost_voice_turns: list[str]
    duplicated_voice_turns: list[str]
    lost_executions: list[str]
    double_executions: list[str]
    unapproved_executions: list[str]
    facts: dict[str, int]

    RULES: ClassVar[tuple[str, ...]] = (
        "lost_memory_writes", "duplicated_memory_writes", "lost_chat_turns",
        "duplicated_chat_turns", "lost_voice_turns", "duplicated_voice_turns",
        "lost_executions", "double_executions", "unapproved_executions",
    )

    def counts(self) -> dict[str, int]:
        return {rule: len(getattr(self, rule)) for rule in self.RULES}

    @property
    def ok(self) -> bool:
        return not any(self.counts().values())

    def to_dict(self) -> dict[str, Any]:
        return {"counts": self.counts(), "facts": self.facts,
                "examples": {rule: getattr(self, rule)[:EXAMPLES] for rule in self.RULES}}


def _acked_id(op: Operation) -> str | None:
    value = op.result.get("id")
    return value if isinstance(value, str) else None


def _check_writes(ops: Sequence[Operation], stored: Mapping[str, int],
                  ids: Collection[str], id_field: str = "id") -> tuple[list[str], list[str],
                                                                        int]:
    """(lost, duplicated, present-although-not-acknowledged) for one kind of write."""
    lost: list[str] = []
    duplicated: list[str] = []
    phantom = 0
    keys = {op.key for op in ops}
    acked = [op for op in ops if op.outcome == "ok"]
    for op in acked:
        acked_id = op.result.get(id_field)
        if stored.get(op.key, 0) == 0 or (isinstance(acked_id, str) and acked_id not in ids):
            lost.append(op.key)
    for key in sorted(keys):
        if stored.get(key, 0) > 1:
            duplicated.append(key)
    acked_keys = {op.key for op in acked}
    phantom = sum(1 for key in keys - acked_keys if stored.get(key, 0) > 0)
    return sorted(set(lost)), duplicated, phantom


def check_history(history: History | Sequence[Operation], observed: Observed) -> HistoryChecks:
    """Hold the history against what was stored; every rule's offenders, sorted."""
    ops = list(history)
    by_kind: dict[str, list[Operation]] = defaultdict(list)
    for op in ops:
        by_kind[op.kind].append(op)

    lost_mem, dup_mem, phantom_mem = _check_writes(by_kind[MEMORY_WRITE], observed.memory_keys,
                                                   observed.memory_ids)
    lost_chat, dup_chat, phantom_chat = _check_writes(by_kind[CHAT], observed.turn_keys,
                                                      observed.turn_ids, id_field="turn_id")
    lost_voice, dup_voice, phantom_voice = _check_writes(by_kind[VOICE_TURN],
                                                         observed.voice_keys, (), id_field="-")

    approve_invoked = {op.key for op in by_kind[ACTION_APPROVE]}
    executed_acked = {op.key for op in by_kind[ACTION_APPROVE]
                      if op.outcome == "ok" and op.result.get("status") == "executed"}
    proposed = {op.key for op in by_kind[ACTION_PROPOSE]}

    records_per_key: Counter[str] = Counter()
    unknown_action_ids: set[str] = set()
    for action_id, _jti in observed.executed:
        key = observed.action_keys.get(action_id)
        if key is None:
            unknown_action_ids.add(action_id)
        else:
            records_per_key[key] += 1
    jti_counts = Counter(jti for _a, jti in observed.executed if jti)
    grants_per_key: Counter[str] = Counter()
    for _jti, action_id in observed.consumed_grants:
        grants_per_key[observed.action_keys.get(action_id, f"action:{action_id}")] += 1
    ledger_jti = Counter(jti for jti, _a in observed.consumed_grants)

    double: set[str] = set()
    double |= {k for k, n in observed.execution_effects.items() if n > 1}
    double |= {k for k, n in records_per_key.items() if n > 1}
    double |= {k for k, n in grants_per_key.items() if n > 1}
    double |= {f"jti:{j}" for j, n in jti_counts.items() if n > 1}
    double |= {f"jti:{j}" for j, n in ledger_jti.items() if n > 1}

    ran = ({k for k, n in observed.execution_effects.items() if n > 0}
           | set(records_per_key))
    unapproved = {k for k in ran if k not in approve_invoked}
    approved_keys = {observed.action_keys[a] for a in observed.approved
                     if a in observed.action_keys}
    unapproved |= {k for k in ran if k not in approved_keys}
    unapproved |= {f"action:{a}" for a in unknown_action_ids}

    lost_exec = {k for k in executed_acked if observed.execution_effects.get(k, 0) != 1}

    facts = {
        "memory_writes_present_without_ack": phantom_mem,
        "chat_turns_present_without_ack": phantom_chat,
        "voice_turns_present_without_ack": phantom_voice,
        "actions_proposed": len(proposed),
        "actions_approve_invoked": len(approve_invoked),
        "actions_acknowledged_executed": len(executed_acked),
        "actions_with_effect": sum(1 for n in observed.execution_effects.values() if n > 0),
        "executed_audit_records": len(observed.executed),
        "consumed_grants": len(observed.consumed_grants),
        "actions_approved_not_executed": len(approve_invoked & approved_keys - ran),
    }
    return HistoryChecks(
        lost_memory_writes=lost_mem, duplicated_memory_writes=dup_mem,
        lost_chat_turns=lost_chat, duplicated_chat_turns=dup_chat,
        lost_voice_turns=lost_voice, duplicated_voice_turns=dup_voice,
        lost_executions=sorted(lost_exec), double_executions=sorted(double),
        unapproved_executions=sorted(unapproved), facts=facts,
    )
