"""A database's connections hold a bounded page cache, however large the file grows.

The effect is measured with SQLite's own heap counter (`sqlite3_memory_used`,
from the library the `sqlite3` module is linked against): with SQLite's default
cache (about 2 MiB a connection) reading a 12 MiB database through the writer
and four readers holds 10 MiB; with Sonia's bound, 1.26 MiB.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import sqlite3
from pathlib import Path

import pytest

from sonia.kit.db import PAGE_CACHE_KIB, Database

MIB = 1024 * 1024
READERS = 4
MIGRATIONS = ["CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB NOT NULL)"]


def _sqlite_heap() -> ctypes.CDLL:
    name = ctypes.util.find_library("sqlite3")
    if name is None:
        pytest.skip("the sqlite3 library is linked statically: its heap counter is not reachable")
    lib = ctypes.CDLL(name)
    lib.sqlite3_memory_used.restype = ctypes.c_int64
    version = lib.sqlite3_libversion
    version.restype = ctypes.c_char_p
    if version().decode() != sqlite3.sqlite_version:
        pytest.skip("the sqlite3 module uses another copy of the library than the one found")
    return lib


def _fill(db: Database, megabytes: int) -> None:
    def write(conn: sqlite3.Connection) -> None:
        conn.executemany("INSERT INTO t (body) VALUES (?)",
                         ((bytes(3000),) for _ in range(megabytes * MIB // 3000)))
    db.write_sync(write)


async def _read_everything_on_every_reader(db: Database) -> None:
    def scan(conn: sqlite3.Connection) -> int:
        return sum(len(row[0]) for row in conn.execute("SELECT body FROM t"))
    for _ in range(3):  # enough rounds that each reader thread scans the whole file
        await asyncio.gather(*(db.read(scan) for _ in range(READERS)))


def test_every_connection_holds_at_most_the_bounded_page_cache(tmp_path: Path) -> None:
    lib = _sqlite_heap()
    db = Database(tmp_path / "big.db", MIGRATIONS, readers=READERS)
    db.open()
    try:
        before = lib.sqlite3_memory_used()
        _fill(db, 12)
        asyncio.run(_read_everything_on_every_reader(db))
        held = lib.sqlite3_memory_used() - before
    finally:
        db.close()
    connections = READERS + 1
    bound = connections * PAGE_CACHE_KIB * 1024
    # pages carry a header beside their 4 KiB; a quarter more covers it and the schema
    assert held <= bound * 1.25 + MIB, f"{held / MIB:.2f} MiB held, bound {bound / MIB:.2f} MiB"
