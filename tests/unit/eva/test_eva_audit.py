"""The audit chain: every record links to the one before it, and the head remembers the last,
so editing, deleting, reordering or cutting off records is detected by `verify`."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator

import pytest
from backends import Backend

from sonia.actions import audit
from sonia.actions.plan import canonical_json
from sonia.kit.portable import Conn, PgConnection


def _connect(backend: Backend) -> Conn:
    return backend.connect("eva", audit.MIGRATIONS, audit.PG_MIGRATIONS)


@pytest.fixture()
def conn(backend: Backend) -> Iterator[Conn]:
    """Five records, on each backend (a SQLite file, a schema on a real PostgreSQL)."""
    conn = _connect(backend)
    for n, kind in enumerate(("pending", "approved", "executed", "allowed", "denied"), 1):
        audit.append(conn, kind, actor=f"actor-{n}", action_id=f"act_{n}",
                     detail={"tool": "file.write", "n": n})
    yield conn
    backend.close(conn)


def _unguard(conn: Conn) -> None:
    """What someone editing the database directly would do first: drop the append-only
    triggers."""
    if isinstance(conn, PgConnection):
        conn.execute("DROP TRIGGER audit_log_no_change ON audit_log")
        return
    conn.execute("DROP TRIGGER audit_log_no_update")
    conn.execute("DROP TRIGGER audit_log_no_delete")


def _refusal(conn: Conn) -> type[Exception]:
    """How each backend refuses what the append-only triggers forbid."""
    if isinstance(conn, PgConnection):
        import psycopg

        return psycopg.errors.RaiseException
    return sqlite3.IntegrityError


def test_an_intact_log_verifies(conn: Conn) -> None:
    result = audit.verify(conn)
    assert result.ok and result.count == 5 and result.first_bad_seq is None
    assert result.head_hash == audit.head(conn)[1]
    assert audit.head(conn)[0] == 5


def test_an_empty_log_verifies(backend: Backend) -> None:
    conn = _connect(backend)
    assert audit.verify(conn) == audit.VerifyResult(True, 0, None, "", audit.GENESIS_HASH)
    backend.close(conn)


def test_the_hash_is_the_documented_formula(conn: Conn) -> None:
    first, second = audit.read_records(conn, limit=2)
    body = {"seq": 1, "ts": first.ts, "kind": "pending", "action_id": "act_1",
            "actor": "actor-1", "detail": {"tool": "file.write", "n": 1}}
    expected = hashlib.sha256(audit.GENESIS_HASH.encode() + canonical_json(body)).hexdigest()
    assert first.hash == expected and first.prev_hash == audit.GENESIS_HASH
    assert second.prev_hash == first.hash


def test_records_are_append_only(conn: Conn) -> None:
    with pytest.raises(_refusal(conn), match="append-only"):
        conn.execute("UPDATE audit_log SET actor = 'x' WHERE seq = 1")
    with pytest.raises(_refusal(conn), match="append-only"):
        conn.execute("DELETE FROM audit_log WHERE seq = 5")
    if isinstance(conn, PgConnection):
        with pytest.raises(_refusal(conn), match="append-only"):
            conn.execute("TRUNCATE audit_log")
    assert audit.verify(conn).count == 5


def test_an_edited_record_is_found(conn: Conn) -> None:
    _unguard(conn)
    conn.execute("""UPDATE audit_log SET detail = '{"n":3,"tool":"file.read"}' WHERE seq = 3""")
    result = audit.verify(conn)
    assert not result.ok and result.first_bad_seq == 3 and "altered" in result.reason


@pytest.mark.parametrize("column, value", [
    ("kind", "allowed"), ("actor", "someone-else"), ("action_id", "act_9"),
    ("ts", "2000-01-01T00:00:00.000000Z"), ("detail", "not json"),
])
def test_any_edited_field_is_found(conn: Conn, column: str, value: str) -> None:
    _unguard(conn)
    conn.execute(f"UPDATE audit_log SET {column} = ? WHERE seq = 2", (value,))
    assert audit.verify(conn).first_bad_seq == 2


def test_an_edited_record_with_a_recomputed_hash_breaks_the_next_link(
        conn: Conn) -> None:
    _unguard(conn)
    row = conn.execute("SELECT ts, prev_hash FROM audit_log WHERE seq = 3").fetchone()
    forged = audit.record_hash(row[1], 3, row[0], "executed", "act_3", "actor-3",
                               {"tool": "file.read"})
    conn.execute("UPDATE audit_log SET detail = ?, hash = ? WHERE seq = 3",
                 (json.dumps({"tool": "file.read"}), forged))
    result = audit.verify(conn)
    assert not result.ok and result.first_bad_seq == 4 and "link" in result.reason


def test_a_deleted_record_is_found(conn: Conn) -> None:
    _unguard(conn)
    conn.execute("DELETE FROM audit_log WHERE seq = 3")
    result = audit.verify(conn)
    assert not result.ok and result.first_bad_seq == 3 and "missing" in result.reason
    assert result.count == 2


def test_the_first_record_deleted_is_found(conn: Conn) -> None:
    _unguard(conn)
    conn.execute("DELETE FROM audit_log WHERE seq = 1")
    assert audit.verify(conn).first_bad_seq == 1


def test_reordered_records_are_found(conn: Conn) -> None:
    _unguard(conn)
    conn.execute("UPDATE audit_log SET seq = 100 WHERE seq = 2")
    conn.execute("UPDATE audit_log SET seq = 2 WHERE seq = 3")
    conn.execute("UPDATE audit_log SET seq = 3 WHERE seq = 100")
    result = audit.verify(conn)
    assert not result.ok and result.first_bad_seq == 2


def test_swapped_contents_are_found(conn: Conn) -> None:
    _unguard(conn)
    two = conn.execute("SELECT kind, actor, action_id, detail FROM audit_log WHERE seq = 2"
                       ).fetchone()
    three = conn.execute("SELECT kind, actor, action_id, detail FROM audit_log WHERE seq = 3"
                         ).fetchone()
    for seq, row in ((2, three), (3, two)):
        conn.execute("UPDATE audit_log SET kind=?, actor=?, action_id=?, detail=? WHERE seq=?",
                     (*row, seq))
    assert audit.verify(conn).first_bad_seq == 2


def test_a_cut_off_tail_is_found_through_the_head(conn: Conn) -> None:
    _unguard(conn)
    conn.execute("DELETE FROM audit_log WHERE seq = 5")
    result = audit.verify(conn)
    assert not result.ok and result.first_bad_seq == 5 and "end" in result.reason
    conn.execute("DELETE FROM audit_log WHERE seq >= 3")
    assert audit.verify(conn).first_bad_seq == 3


def test_a_rewritten_head_is_found_with_an_anchored_head(conn: Conn) -> None:
    anchored = audit.verify(conn).head_hash
    _unguard(conn)
    conn.execute("DELETE FROM audit_log WHERE seq = 5")
    previous = conn.execute("SELECT hash FROM audit_log WHERE seq = 4").fetchone()[0]
    conn.execute("UPDATE audit_head SET seq = 4, hash = ?", (previous,))
    assert audit.verify(conn).ok  # consistent on its own ...
    result = audit.verify(conn, expected_head=anchored)  # ... but not with the anchor
    assert not result.ok and "anchored" in result.reason


def test_a_missing_head_is_found(conn: Conn) -> None:
    conn.execute("DELETE FROM audit_head")
    assert not audit.verify(conn).ok


def test_verify_opens_a_path_read_only(conn: Conn, backend: Backend) -> None:
    if backend.path is None:
        pytest.skip("a SQLite file's path; PostgreSQL is read through a connection")
    db_path = backend.path.with_name("eva.db")
    assert audit.verify(db_path).ok
    assert audit.verify(str(db_path)).count == 5
    missing = audit.verify(db_path.parent / "nope.db")
    assert not missing.ok and "does not exist" in missing.reason


def test_append_is_atomic_with_the_callers_transaction(conn: Conn) -> None:
    conn.execute("BEGIN" if isinstance(conn, PgConnection) else "BEGIN IMMEDIATE")
    audit.append(conn, "rejected", actor="gateway", detail={"why": "test"})
    conn.execute("ROLLBACK")
    assert audit.head(conn)[0] == 5 and audit.verify(conn).ok
    record = audit.append(conn, "rejected", actor="gateway", detail={"code": "INVALID_COMMAND"})
    assert record.seq == 6 and audit.verify(conn).count == 6


def test_unknown_kinds_are_refused(conn: Conn) -> None:
    with pytest.raises(ValueError):
        audit.append(conn, "deleted", actor="x")


def test_records_can_be_listed_by_action(conn: Conn) -> None:
    records = audit.read_records(conn, action_id="act_2")
    assert [r.kind for r in records] == ["approved"]
    assert [r.seq for r in audit.read_records(conn, after_seq=3)] == [4, 5]


def test_a_walk_since_an_intact_check_reads_only_what_came_after(conn: Conn) -> None:
    known = audit.verify(conn)
    for n in range(3):
        audit.append(conn, "pending", actor="policy", detail={"n": n})
    since = audit.verify(conn, since=known)
    assert (since.ok, since.count, since.head_hash) == (True, 8, audit.head(conn)[1])
    assert since == audit.verify(conn)
    _unguard(conn)
    conn.execute("UPDATE audit_log SET actor = 'x' WHERE seq = 7")  # after the known end
    assert audit.verify(conn, since=known).first_bad_seq == 7


def test_a_walk_since_a_check_whose_last_record_changed_walks_it_all(conn: Conn) -> None:
    known = audit.verify(conn)
    _unguard(conn)
    conn.execute("UPDATE audit_log SET actor = 'x' WHERE seq = 2")
    conn.execute("UPDATE audit_log SET hash = 'f' WHERE seq = 5")  # the anchor moved too
    result = audit.verify(conn, since=known)
    assert not result.ok and result.first_bad_seq == 2


def test_an_edit_before_the_known_end_needs_a_whole_walk(conn: Conn) -> None:
    """The rule the page view lives with: a walk since a check does not re-read what
    it checked; EVA walks the whole chain again at least every minute."""
    known = audit.verify(conn)
    _unguard(conn)
    conn.execute("UPDATE audit_log SET actor = 'x' WHERE seq = 2")
    assert audit.verify(conn, since=known).ok
    assert audit.verify(conn).first_bad_seq == 2
