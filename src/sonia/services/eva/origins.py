"""Where a proposed action came from, and the rule that untrusted context needs a person.

Every proposal names its `origin`: `user` (a person's `POST /v1/actions`) or
`model` (a tool call the model made in a chat turn, `turn_id` naming the turn),
and for a model's proposal the `untrusted` sources already in that turn's
context: tool output, file contents, recalled memories (`tool:file.read:notes.txt`,
`memory:mem_...`).

The rule (DESIGN.md, "Actions and approvals"): a model's proposal made after
untrusted content entered its turn needs a person's approval, whatever its
tier. The model may have read an attacker's instructions; from then on nothing
it proposes runs on the policy's word alone. `escalate` applies the rule to a
verdict; EVA stores the origin beside the decision (`action_origins`, same
transaction) and puts it in the audit record, so an approver sees which
sources were in context and the chain shows who proposed what.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any, Literal

from sonia.kit.portable import Conn
from sonia.services.eva.verdict import Verdict

__all__ = ["MIGRATIONS", "PG_MIGRATIONS", "Origin", "escalate", "load_origin", "save_origin"]

MIGRATIONS: list[str] = [
    """
    CREATE TABLE action_origins (
        action_id TEXT PRIMARY KEY,
        origin TEXT NOT NULL CHECK (origin IN ('user', 'model')),
        turn_id TEXT,
        untrusted TEXT NOT NULL
    );
    """,
]
"""Appended to EVA_MIGRATIONS (decisions.py); never edit or reorder."""

PG_MIGRATIONS: list[str] = [MIGRATIONS[0]]
"""The same table on PostgreSQL (EVA_PG_MIGRATIONS); the SQL is common to both."""


@dataclass(frozen=True)
class Origin:
    origin: Literal["user", "model"] = "user"
    turn_id: str | None = None
    untrusted: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"origin": self.origin, "turn_id": self.turn_id,
                "untrusted_sources": list(self.untrusted)}


def escalate(verdict: Verdict, origin: Origin) -> Verdict:
    """`verdict`, or approval_required when a model proposed it with untrusted context.

    Denials stay denials; a person's own proposals are left to the policy."""
    if origin.origin != "model" or not origin.untrusted or verdict.decision != "allow":
        return verdict
    shown = ", ".join(origin.untrusted[:5]) + (" ..." if len(origin.untrusted) > 5 else "")
    return replace(verdict, decision="approval_required",
                   reason=f"tier {verdict.tier}, proposed by the model after untrusted "
                          f"content entered its turn ({shown}): needs an approver")


def save_origin(conn: Conn, action_id: str, origin: Origin) -> None:
    conn.execute("INSERT INTO action_origins (action_id, origin, turn_id, untrusted)"
                 " VALUES (?, ?, ?, ?)",
                 (action_id, origin.origin, origin.turn_id, json.dumps(list(origin.untrusted))))


def load_origin(conn: Conn, action_id: str) -> Origin:
    """The stored origin (actions from before origins were recorded: a user's)."""
    row = conn.execute("SELECT origin, turn_id, untrusted FROM action_origins"
                       " WHERE action_id = ?", (action_id,)).fetchone()
    if row is None:
        return Origin()
    return Origin(origin=row[0], turn_id=row[1], untrusted=tuple(json.loads(row[2])))
