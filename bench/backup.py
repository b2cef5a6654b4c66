"""`sonia backup` (create_backup) of a large database beside `cp` of the same file.

    python bench/backup.py [--size-mb 1024]

A home is made with one database of about `--size-mb` MiB (rows of random
text, WAL mode, like the services' databases). The baseline, measured in the
same run, is `cp` of the file: the least any copy costs on this disk. A backup
does more on purpose: one consistent snapshot through SQLite's backup API,
journal mode switched so the copy stands alone, integrity_check and a digest of
every row, a sha256 of every file, fsync. It also verifies a backup
(`verify_backup`: every sha256, integrity_check and row digests again), which is
what `sonia restore` does before it touches anything.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path

from sonia import files
from sonia.backup import create_backup, verify_backup
from sonia.home import Home

ROW_BYTES = 4000


def make_database(path: Path, size_mb: int) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE blobs (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
    rows = size_mb * 1024 * 1024 // ROW_BYTES
    chunk = 2000
    for start in range(0, rows, chunk):
        batch = [(os.urandom(ROW_BYTES // 2).hex(),) for _ in range(min(chunk, rows - start))]
        with conn:
            conn.executemany("INSERT INTO blobs (body) VALUES (?)", batch)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def timed(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    with tempfile.TemporaryDirectory(prefix="sonia-bench-backup-") as tmp:
        home = Home.at(Path(tmp) / "home")
        home.init()
        db = home.db_path("memory")
        print(f"making a {args.size_mb} MiB database ...", flush=True)
        make_database(db, args.size_mb)
        size = db.stat().st_size
        copies = Path(tmp) / "copies"
        copies.mkdir()
        cp = timed(lambda: subprocess.run(["cp", str(db), str(copies / "memory.db")],
                                          check=True))
        (copies / "memory.db").unlink()
        backup_dir = Path(tmp) / "backups"
        made: list[Path] = []
        backup = timed(lambda: made.append(create_backup(home, backup_dir)))
        verify = timed(lambda: verify_backup(made[0]))
        cp_again = timed(lambda: shutil.copyfile(db, copies / "memory.db"))
        (copies / "memory.db").unlink()

        def durable_copy() -> None:
            target = copies / "memory.db"
            shutil.copyfile(db, target)
            fd = os.open(target, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

        cp_sync = timed(durable_copy)
        hashed = timed(lambda: files.sha256_file(db))
        mib = size / (1024 * 1024)
        print(f"database: {mib:.0f} MiB")
        print(f"cp:            {cp:7.2f} s  ({mib / cp:7.1f} MiB/s)")
        print(f"shutil.copy:   {cp_again:7.2f} s  ({mib / cp_again:7.1f} MiB/s)")
        print(f"copy + fsync:  {cp_sync:7.2f} s  ({mib / cp_sync:7.1f} MiB/s)  "
              "(a durable copy: the floor of a backup, which must be on disk)")
        print(f"sha256 of it:  {hashed:7.2f} s  ({mib / hashed:7.1f} MiB/s)  "
              "(one hash pass: the floor of a verification)")
        print(f"sonia backup:  {backup:7.2f} s  ({mib / backup:7.1f} MiB/s)  "
              f"ratio to cp {backup / cp:.1f}x, to copy + fsync {backup / cp_sync:.1f}x")
        print(f"verify backup: {verify:7.2f} s  ({mib / verify:7.1f} MiB/s)  "
              f"ratio to cp {verify / cp:.1f}x, to one sha256 pass {verify / hashed:.1f}x")
    print(f"load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
