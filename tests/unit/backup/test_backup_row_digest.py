"""Row digests computed in SQL are byte for byte those of the Python definition.

`backup._table_facts` builds each row's encoding inside SQLite (fast);
`backup._table_facts_python` encodes value by value (the definition, and what
every existing manifest was made with). They must agree on every SQLite type
and on the awkward cases: NUL bytes in text and blobs, non-ASCII text, reals
(negative zero, infinities, tiny and huge), 64-bit integer limits, NULL, quotes
in names, INTEGER PRIMARY KEY, WITHOUT ROWID and generated columns, empty tables.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sonia import backup

VALUES: list[object] = [
    None, 0, -1, 2**63 - 1, -(2**63), 1.5, -0.0, 1e308, 5e-324, float("inf"), float("-inf"),
    "", "plain", "héllo wörld ✓ 𝄞", "nul\x00inside", "\n;:S3:", b"", b"\x00\x01\xff",
    b"B3:x;\n", "x" * 5000,
]


def make(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE plain (a, b TEXT, "we""ird name" BLOB);
        CREATE TABLE keyed (id INTEGER PRIMARY KEY, v);
        CREATE TABLE nokey (k TEXT PRIMARY KEY, v) WITHOUT ROWID;
        CREATE TABLE gen (a INTEGER, b INTEGER GENERATED ALWAYS AS (a * 2) VIRTUAL,
                          c TEXT GENERATED ALWAYS AS ('c' || a) STORED);
        CREATE TABLE empty (x);
    """)
    for i, value in enumerate(VALUES):
        conn.execute('INSERT INTO plain VALUES (?, ?, ?)', (value, VALUES[-1 - i], value))
        conn.execute("INSERT INTO keyed (id, v) VALUES (?, ?)", (i * 7 - 20, value))
        conn.execute("INSERT INTO nokey VALUES (?, ?)", (f"k{i:03d}", value))
        conn.execute("INSERT INTO gen (a) VALUES (?)", (i,))
    conn.commit()
    return conn


def test_sql_and_python_digests_agree_on_every_table(tmp_path: Path) -> None:
    conn = make(tmp_path / "t.db")
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    assert len(tables) == 5
    for table in tables:
        fast = backup._table_facts(conn, table)
        slow = backup._table_facts_python(conn, table)
        assert fast == slow, table
    conn.close()


def test_a_changed_value_changes_the_sql_digest(tmp_path: Path) -> None:
    conn = make(tmp_path / "t.db")
    before = backup._table_facts(conn, "plain")
    conn.execute("UPDATE plain SET b = ? WHERE b = ?", ("nul\x00insidf", "nul\x00inside"))
    conn.commit()
    after = backup._table_facts(conn, "plain")
    assert before["rows"] == after["rows"]
    assert before["sha256"] != after["sha256"]
    conn.close()
