"""The gateway's memory of actions: outcomes, and answers kept for idempotent retries.

EVA owns an action's decision and status; the gateway keeps what only it sees:
who proposed it (the key id), what the tool returned or the error it answered,
and, for a request that carried an `idempotency_key`, the answer it gave, keyed
by (key id, idempotency key), so a retry gets the first answer back, even after
a restart, instead of running the action again.

Answers with a 5xx status are not kept: they say "retry", and a retry must
then be able to do the work.

Which request does the work is the database's to say, not a lock in one
process: several gateways share this store on PostgreSQL, and two of them may
hold the same key's first request at once. The first request claims the key
(`claim_answer`: an insert the primary key lets only one request make, its row
marked in progress), does the work, and puts its answer in the row
(`keep_answer`); a request that finds the claim of another waits for that
answer, and one whose claim yields a 5xx gives the claim back
(`release_claim`) so a retry can work. A claim left by a gateway that died
mid-request is taken over once older than `STALE_CLAIM_SECONDS`. A SQLite
file has one gateway, whose lock per key is the claim (`claim_in_process`:
nothing written until the answer is kept, so no extra synchronous commit).

The store lives in the gateway's SQLite database (`MIGRATIONS`, with its other
tables), or, when `[storage] url` names PostgreSQL, in the `gateway` schema
(`PG_MIGRATIONS`); the functions are the same SQL on both (`kit.portable`).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from sonia.actions.plan import canonical_json
from sonia.errors import ApiError, InvalidArgument, api_error_for
from sonia.kit.portable import Conn

__all__ = ["MIGRATIONS", "PG_MIGRATIONS", "STALE_CLAIM_SECONDS", "ActionRow", "Claim",
           "StoredAnswer", "answer_of_error", "claim_answer", "claim_in_process", "get_action",
           "iso_time", "keep_answer", "load_answer", "pending_count", "release_claim",
           "request_hash", "save_action", "save_answer"]

IN_PROGRESS = 0
"""The status_code of a claimed key whose answer is not known yet (no HTTP status is 0)."""
STALE_CLAIM_SECONDS = 600.0
"""A claim this old belongs to a gateway that died mid-request (a proposal, with its
execution, is bounded far below this); another request may take it over."""

MIGRATIONS: list[str] = [
    """
    CREATE TABLE actions (
        id TEXT PRIMARY KEY,
        key_id TEXT NOT NULL,
        tool TEXT NOT NULL,
        status TEXT NOT NULL,
        result TEXT,
        error TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX actions_key ON actions (key_id, created_at);
    CREATE TABLE action_requests (
        key_id TEXT NOT NULL,
        idempotency_key TEXT NOT NULL,
        request_hash TEXT NOT NULL,
        status_code INTEGER NOT NULL,
        answer TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (key_id, idempotency_key)
    );
    """,
]
"""Appended to the gateway's MIGRATIONS (state.py); never edit or reorder."""

PG_MIGRATIONS: list[str] = [
    """
    CREATE TABLE actions (
        id text PRIMARY KEY,
        key_id text NOT NULL,
        tool text NOT NULL,
        status text NOT NULL,
        result text,
        error text,
        created_at double precision NOT NULL,
        updated_at double precision NOT NULL
    );
    CREATE INDEX actions_key ON actions (key_id, created_at);
    CREATE TABLE action_requests (
        key_id text NOT NULL,
        idempotency_key text NOT NULL,
        request_hash text NOT NULL,
        status_code integer NOT NULL,
        answer text NOT NULL,
        created_at double precision NOT NULL,
        PRIMARY KEY (key_id, idempotency_key)
    );
    """,
]
"""The action store on PostgreSQL (the `gateway` schema); never edit or reorder."""


def iso_time(ts: float | None) -> str | None:
    """UTC ISO 8601 with milliseconds, like the rest of the gateway's answers."""
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


def request_hash(tool: str, args: dict[str, Any], session_id: str | None) -> str:
    """What an idempotency key is bound to: the same key with another request is refused."""
    body = {"tool": tool, "args": args, "session_id": session_id}
    return hashlib.sha256(canonical_json(body)).hexdigest()


@dataclass(frozen=True)
class ActionRow:
    id: str
    key_id: str
    tool: str
    status: str
    result: Any
    error: dict[str, Any] | None
    created_at: float
    updated_at: float


def save_action(conn: Conn, action_id: str, key_id: str, tool: str, status: str,
                *, result: Any = None, error: ApiError | None = None) -> None:
    """Insert or update the gateway's row of one action."""
    now = time.time()
    problem = None if error is None else json.dumps(
        {"status": error.status, "code": error.code, "detail": error.detail})
    conn.execute(
        "INSERT INTO actions (id, key_id, tool, status, result, error, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET status = excluded.status,"
        " result = excluded.result, error = excluded.error, updated_at = excluded.updated_at",
        (action_id, key_id, tool, status, None if result is None else json.dumps(result),
         problem, now, now),
    )


def pending_count(conn: Conn, key_id: str, since: float) -> int:
    """Actions of `key_id` proposed after `since` still waiting for approval here."""
    row = conn.execute("SELECT count(*) FROM actions WHERE key_id = ?"
                       " AND status = 'pending_approval' AND created_at > ?",
                       (key_id, since)).fetchone()
    return int(row[0])


def get_action(conn: Conn, action_id: str) -> ActionRow | None:
    row = conn.execute("SELECT id, key_id, tool, status, result, error, created_at, updated_at"
                       " FROM actions WHERE id = ?", (action_id,)).fetchone()
    if row is None:
        return None
    return ActionRow(row[0], row[1], row[2], row[3],
                     None if row[4] is None else json.loads(row[4]),
                     None if row[5] is None else json.loads(row[5]), row[6], row[7])


@dataclass(frozen=True)
class StoredAnswer:
    status_code: int
    body: dict[str, Any]

    def replay(self) -> dict[str, Any]:
        """The first answer again: its body, or its error raised once more."""
        if self.status_code >= 400:
            extra = {k: v for k, v in self.body.items() if k not in {"code", "detail"}}
            raise api_error_for(str(self.body["code"]), str(self.body["detail"]), extra)
        return self.body


def load_answer(conn: Conn, key_id: str, idempotency_key: str,
                digest: str) -> StoredAnswer | None:
    """The answer kept for this key, or None; the key with another request is refused."""
    row = conn.execute(
        "SELECT request_hash, status_code, answer FROM action_requests"
        " WHERE key_id = ? AND idempotency_key = ?", (key_id, idempotency_key)).fetchone()
    if row is None:
        return None
    if row[0] != digest:
        raise InvalidArgument("this idempotency_key was used with a different request")
    if int(row[1]) == IN_PROGRESS:
        return None
    return StoredAnswer(int(row[1]), json.loads(row[2]))


@dataclass(frozen=True)
class Claim:
    """The right to answer one idempotency key: its holder proposes, others wait.

    `in_database` says whether the claim is a row (`claim_answer`: gateways share the
    database) or only this process's lock (`claim_in_process`: SQLite, one gateway)."""

    token: str
    digest: str
    in_database: bool = True

    @property
    def marker(self) -> str:
        """What the claimed row holds in place of an answer; the holder's alone."""
        return json.dumps({"claim": self.token})


def claim_answer(conn: Conn, key_id: str, idempotency_key: str, digest: str,
                 *, now: float | None = None) -> StoredAnswer | Claim | None:
    """The kept answer; or a Claim when this request is the first (or takes over a
    stale claim) and must do the work; or None while another request holds the claim
    (ask again). The key with another request is refused (InvalidArgument).

    One transaction (READ COMMITTED on PostgreSQL): of several requests inserting
    at once the primary key lets one in; the others' inserts wait for it and do
    nothing, and their SELECT then sees its row."""
    now = time.time() if now is None else now
    claim = Claim(secrets.token_hex(16), digest)
    inserted = conn.execute(
        "INSERT INTO action_requests (key_id, idempotency_key, request_hash,"
        " status_code, answer, created_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        (key_id, idempotency_key, digest, IN_PROGRESS, claim.marker, now)).rowcount
    if inserted == 1:
        return claim
    row = conn.execute(
        "SELECT request_hash, status_code, answer, created_at FROM action_requests"
        " WHERE key_id = ? AND idempotency_key = ?", (key_id, idempotency_key)).fetchone()
    if row is None:
        return None  # released between the insert and the select: ask again
    if row[0] != digest:
        raise InvalidArgument("this idempotency_key was used with a different request")
    if int(row[1]) != IN_PROGRESS:
        return StoredAnswer(int(row[1]), json.loads(row[2]))
    if float(row[3]) >= now - STALE_CLAIM_SECONDS:
        return None
    taken = conn.execute(
        "UPDATE action_requests SET answer = ?, created_at = ? WHERE key_id = ?"
        " AND idempotency_key = ? AND status_code = ? AND answer = ?",
        (claim.marker, now, key_id, idempotency_key, IN_PROGRESS, row[2])).rowcount
    return claim if taken == 1 else None


def claim_in_process(conn: Conn, key_id: str, idempotency_key: str,
                     digest: str) -> StoredAnswer | Claim:
    """The kept answer, or a claim that writes nothing: for a SQLite file, which one
    gateway alone uses, whose lock per key already lets one request at a time through.
    A claim row there would cost every idempotent action one more synchronous commit
    (an fsync), and a gateway killed mid-request would leave it holding the key."""
    kept = load_answer(conn, key_id, idempotency_key, digest)
    return kept if kept is not None else Claim(secrets.token_hex(16), digest, False)


def keep_answer(conn: Conn, key_id: str, idempotency_key: str, claim: Claim,
                answer: StoredAnswer) -> bool:
    """Put the answer in the claimed row; False when the claim was no longer this
    request's (taken over as stale), and the row keeps the other's answer."""
    if not claim.in_database:
        save_answer(conn, key_id, idempotency_key, claim.digest, answer)
        return True
    return conn.execute(
        "UPDATE action_requests SET status_code = ?, answer = ? WHERE key_id = ?"
        " AND idempotency_key = ? AND status_code = ? AND answer = ?",
        (answer.status_code, json.dumps(answer.body), key_id, idempotency_key,
         IN_PROGRESS, claim.marker)).rowcount == 1


def release_claim(conn: Conn, key_id: str, idempotency_key: str, claim: Claim) -> None:
    """Give the key back unanswered (a 5xx is not kept: a retry must be able to work)."""
    if not claim.in_database:
        return
    conn.execute("DELETE FROM action_requests WHERE key_id = ? AND idempotency_key = ?"
                 " AND status_code = ? AND answer = ?",
                 (key_id, idempotency_key, IN_PROGRESS, claim.marker))


def save_answer(conn: Conn, key_id: str, idempotency_key: str, digest: str,
                answer: StoredAnswer) -> None:
    conn.execute(
        "INSERT INTO action_requests (key_id, idempotency_key, request_hash,"
        " status_code, answer, created_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        (key_id, idempotency_key, digest, answer.status_code, json.dumps(answer.body),
         time.time()),
    )


def answer_of_error(error: ApiError) -> StoredAnswer:
    return StoredAnswer(error.status, {"code": error.code, "detail": error.detail,
                                       **error.extra})
