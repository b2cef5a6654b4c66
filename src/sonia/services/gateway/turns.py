"""Turn records: every step of a chat turn in which the model may use tools.

One row per turn in the gateway's database (`agent_turns`, in its SQLite file or
its PostgreSQL schema: the same SQL on both, `kit.portable`): who asked, in which
session, where the turn stands, the action it waits on, and the whole record
as JSON (the messages the model saw, each model step and each tool call with
its action id, EVA's decision and the result, the untrusted sources in
context, the reply). The record is what `GET /v1/turns/{id}` shows.

Status moves forward only:

    running --> completed | failed
    running --> pending_approval --(approved, denied, expired: claimed once)--> running

`claim` is one conditional UPDATE, so of an approval and an expiry noticed at
the same moment exactly one resumes the turn, in whichever gateway process each
was noticed: on PostgreSQL a second claim waits for the first to commit, then
finds the condition false and changes nothing.

Records are kept for `gateway.agent_turn_retention_days` after their last
change (`prune`); a turn still paused is kept that long after its approval's
deadline too, so nothing an approver could still act on is removed.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from sonia.errors import NotFound
from sonia.kit.portable import Conn

__all__ = ["MIGRATIONS", "PG_MIGRATIONS", "TurnRecord", "claim", "find_pending", "load",
           "new_turn_id", "prune", "save"]

MIGRATIONS: list[str] = [
    """
    CREATE TABLE agent_turns (
        id TEXT PRIMARY KEY,
        key_id TEXT NOT NULL,
        session_id TEXT NOT NULL,
        status TEXT NOT NULL
            CHECK (status IN ('running', 'pending_approval', 'completed', 'failed')),
        pending_action_id TEXT,
        record TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX agent_turns_pending ON agent_turns (pending_action_id);
    """,
]
"""Appended to the gateway's MIGRATIONS (state.py); never edit or reorder."""

PG_MIGRATIONS: list[str] = [
    """
    CREATE TABLE agent_turns (
        id text PRIMARY KEY,
        key_id text NOT NULL,
        session_id text NOT NULL,
        status text NOT NULL
            CHECK (status IN ('running', 'pending_approval', 'completed', 'failed')),
        pending_action_id text,
        record text NOT NULL,
        created_at double precision NOT NULL,
        updated_at double precision NOT NULL
    );
    CREATE INDEX agent_turns_pending ON agent_turns (pending_action_id);
    """,
]
"""The same table in the gateway's PostgreSQL schema (state.PG_MIGRATIONS); never edit
or reorder."""


def new_turn_id() -> str:
    return f"trn_{secrets.token_hex(12)}"


@dataclass
class TurnRecord:
    """One turn; `messages` is the conversation as the model sees it, tool turns included."""

    id: str
    key_id: str
    session_id: str
    message: str
    profile: str | None
    messages: list[dict[str, Any]]
    recalled: list[str]
    status: str = "running"
    untrusted: list[str] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    queue: list[dict[str, Any]] = field(default_factory=list)
    pending: dict[str, Any] | None = None
    model_steps: int = 0
    tool_calls: int = 0
    reply: str | None = None
    interrupted: bool = False
    """Its watcher left mid-turn: the reply is what was said by then."""
    model: str | None = None
    provider: str | None = None
    memory_turn_id: str | None = None
    error: dict[str, Any] | None = None
    stored: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=lambda: {
        "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0})

    def taint(self, source: str) -> None:
        if source not in self.untrusted:
            self.untrusted.append(source)

    def public(self) -> dict[str, Any]:
        """What `GET /v1/turns/{id}` shows (the model's full message list stays inside)."""
        shown = {k: v for k, v in asdict(self).items()
                 if k not in {"messages", "recalled", "queue", "key_id", "stored"}}
        shown["untrusted_sources"] = shown.pop("untrusted")
        return shown


def save(conn: Conn, record: TurnRecord) -> None:
    now = time.time()
    pending = record.pending["action_id"] if record.pending else None
    conn.execute(
        "INSERT INTO agent_turns (id, key_id, session_id, status, pending_action_id, record,"
        " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE"
        " SET status = excluded.status, pending_action_id = excluded.pending_action_id,"
        " record = excluded.record, updated_at = excluded.updated_at",
        (record.id, record.key_id, record.session_id, record.status, pending,
         json.dumps(asdict(record)), now, now))


def load(conn: Conn, turn_id: str) -> TurnRecord:
    row = conn.execute("SELECT record FROM agent_turns WHERE id = ?", (turn_id,)).fetchone()
    if row is None:
        raise NotFound(f"no turn {turn_id[:80]!r}")
    return TurnRecord(**json.loads(row[0]))


def find_pending(conn: Conn, action_id: str) -> str | None:
    """The turn waiting on `action_id`, if any."""
    row = conn.execute("SELECT id FROM agent_turns WHERE pending_action_id = ?"
                       " AND status = 'pending_approval'", (action_id,)).fetchone()
    return None if row is None else str(row[0])


def claim(conn: Conn, turn_id: str, action_id: str) -> bool:
    """pending_approval on `action_id` -> running, exactly once; False if someone else did."""
    changed = conn.execute(
        "UPDATE agent_turns SET status = 'running', updated_at = ? WHERE id = ?"
        " AND status = 'pending_approval' AND pending_action_id = ?",
        (time.time(), turn_id, action_id)).rowcount
    return changed == 1


def prune(conn: Conn, ended_before: float, paused_before: float) -> int:
    """Delete turns that ended before `ended_before`, and paused turns untouched since
    `paused_before` (their approval long expired); the number deleted."""
    return conn.execute(
        "DELETE FROM agent_turns WHERE (status IN ('completed', 'failed') AND updated_at < ?)"
        " OR (status IN ('running', 'pending_approval') AND updated_at < ?)",
        (ended_before, paused_before)).rowcount
