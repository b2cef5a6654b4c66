"""Online backup and verified restore of a home.

A backup holds what a deployment cannot recreate from the code: every database in
`data/`, the configuration `sonia.toml` and the `policies/` folder. It does NOT
hold `secrets/` (service tokens, the EVA grant key, user API key hashes): secrets
never leave their home in a copy that may be stored elsewhere, and a restore into
a clean home keeps that home's own secrets (users then need new API keys there).

Layout of one backup, `backups/<UTC timestamp>/`:

    data/<name>.db     a consistent snapshot of each database (rollback-journal mode,
                       so the file is complete on its own: no -wal to lose)
    postgres/sonia.dump  on a home whose [storage] url names PostgreSQL: one
                       pg_dump (custom format) of Sonia's schemas (`pgdump.py`);
                       the manifest's "postgres" entry says which, and how many
                       entries pg_restore --list must find in it
    sonia.toml         the configuration, as it was
    policies/...       the policy files, as they were
    manifest.json      per file: path, size, sha256; per database: PRAGMA
                       user_version, integrity_check, and per table the row count
                       and a digest of its rows; created_at; the Sonia version
    manifest.sha256    the sha256 of manifest.json (sha256sum format)
    manifest.hmac      HMAC-SHA256 of manifest.json under the home's key
                       `secrets/backup.key` (hex): the manifest's sha256 alone is
                       unkeyed, so anyone who alters a row can recompute every
                       hash; without the key they cannot recompute this one

Consistency: each database is copied with the SQLite online backup API in ONE step
(`pages=-1`), which reads the whole database inside one read transaction: the copy
is the database as of one commit, even while services keep writing (WAL readers
never block the writer). Databases are snapshotted one after the other, so two
databases are each consistent but not at the same instant; services do not rely on
transactions across databases.

A backup is built in `.<name>.partial` and renamed into place when complete, so an
interrupted backup never looks like a backup.

Restore verifies everything first (the manifest's HMAC under the restoring home's
key, sizes, sha256, integrity_check, row digests); a truncated, altered or
foreign-keyed backup raises BackupError naming the file and leaves the home
untouched. Restoring on a new machine needs the old home's `secrets/backup.key`
(docs/operations.md says how to carry it); it is the one secret a backup needs.
It then stages the files in a temporary folder inside the home (same
file system, so renames are atomic), and swaps each item in: the live `data/` is
renamed away and the staged one renamed into place (so stale `-wal`/`-shm` files
of the old databases go with the old folder and can never be replayed onto the
restored ones), then `policies/` likewise, then `sonia.toml` by an atomic replace.
If a step fails the items already swapped are put back. A PostgreSQL dump is
restored before the swap, in one transaction (`pgdump.restore_dump`), into the
database the restored configuration names: if that fails, nothing has changed.
The stack must be stopped: by default restore refuses while any `run/*.pid`
names a live process; pass `require_stopped` to use another check (the
supervisor's own).

Row digests: sha256 over the column names, then every row in rowid order (primary
key order for WITHOUT ROWID tables, which have no rowid), each value encoded with
a type tag and, for text and blobs, a length prefix (so no two different tables
encode alike). Virtual tables are skipped: their rows live in shadow tables, which
are ordinary tables and are digested.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import secrets
import shutil
import sqlite3
import stat
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import psutil

from sonia import __version__, files, pgdump
from sonia.config import Settings, load_settings
from sonia.errors import BackupError, ConfigError
from sonia.home import Home

__all__ = [
    "BackupInfo",
    "RestoreResult",
    "VerifyReport",
    "create_backup",
    "database_facts",
    "list_backups",
    "prune_backups",
    "require_stack_stopped",
    "restore_backup",
    "verify_backup",
]

FORMAT = 1
MANIFEST = "manifest.json"
MANIFEST_DIGEST = "manifest.sha256"
MANIFEST_HMAC = "manifest.hmac"
MIN_KEY_BYTES = 32
_CHUNK = 1 << 20
_SIDE_FILES = ("-wal", "-shm", "-journal")


# digests --------------------------------------------------------------------------


def _encode_value(value: Any) -> bytes:
    if value is None:
        return b"N;"
    if isinstance(value, int):
        return b"I" + str(value).encode() + b";"
    if isinstance(value, float):
        return b"F" + value.hex().encode() + b";"
    if isinstance(value, str):
        data = value.encode("utf-8", "surrogatepass")
        return b"S" + str(len(data)).encode() + b":" + data
    if isinstance(value, bytes):
        return b"B" + str(len(value)).encode() + b":" + value
    raise TypeError(f"unexpected SQLite value of type {type(value).__name__}")


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _ordered_query(conn: sqlite3.Connection, table: str, columns: str) -> tuple[str, bool]:
    """`SELECT <columns> FROM table` in digest order, and whether the table has a rowid."""
    quoted = _quote(table)
    try:
        conn.execute(f"SELECT rowid FROM {quoted} LIMIT 0")
    except sqlite3.OperationalError:  # WITHOUT ROWID: order by the primary key
        info = conn.execute(f"PRAGMA table_info({quoted})").fetchall()
        keys = [row[1] for row in sorted(info, key=lambda r: r[5]) if row[5] > 0]
        order = ", ".join(_quote(k) for k in keys) or "1"
        return f"SELECT {columns} FROM {quoted} ORDER BY {order}", False
    return f"SELECT rowid, {columns} FROM {quoted} ORDER BY rowid", True


def _table_facts_python(conn: sqlite3.Connection, table: str) -> dict[str, Any]:
    """Row count and row digest of one table, one value at a time in Python (the
    definition; `_table_facts` computes the same bytes in SQL when it can)."""
    query, _ = _ordered_query(conn, table, "*")
    cursor = conn.execute(query)
    digest = hashlib.sha256()
    for column in cursor.description:
        digest.update(_encode_value(str(column[0])))
    digest.update(b"\n")
    rows = 0
    for row in cursor:
        for value in row:
            digest.update(_encode_value(value))
        digest.update(b"\n")
        rows += 1
    return {"rows": rows, "sha256": digest.hexdigest()}


def _encode_sql(column: str) -> str:
    """The SQL expression that encodes one value exactly as `_encode_value` does."""
    return (f"CASE typeof({column}) WHEN 'null' THEN 'N;' "
            f"WHEN 'integer' THEN 'I' || {column} || ';' "
            f"WHEN 'real' THEN 'F' || sonia_float_hex({column}) || ';' "
            f"WHEN 'text' THEN 'S' || length(CAST({column} AS BLOB)) || ':' || {column} "
            f"ELSE 'B' || length({column}) || ':' || {column} END")


def _float_hex(value: float) -> str:
    return float(value).hex()


def _table_facts(conn: sqlite3.Connection, table: str) -> dict[str, Any]:
    """Row count and row digest of one table (see the module docstring).

    Why in SQL: a Python round trip per value (decode the text, encode it again,
    a digest update each) made the digests most of a backup's time (BENCHMARKS.md).
    SQLite builds each row's encoded bytes itself and Python hashes one blob per
    row. The bytes are those of `_table_facts_python`, which stays the definition:
    it is used when the database is not UTF-8 or a column list cannot be matched,
    and a test compares the two on every SQLite type.
    """
    if str(conn.execute("PRAGMA encoding").fetchone()[0]).upper() != "UTF-8":
        return _table_facts_python(conn, table)
    quoted = _quote(table)
    names = [str(row[1]) for row in conn.execute(f"PRAGMA table_xinfo({quoted})")
             if row[6] in (0, 2, 3)]  # ordinary and generated columns: what `*` lists
    query, has_rowid = _ordered_query(conn, table, "*")
    described = [str(c[0]) for c in conn.execute(query + " LIMIT 0").description]
    if described[1 if has_rowid else 0:] != names:
        return _table_facts_python(conn, table)
    conn.create_function("sonia_float_hex", 1, _float_hex, deterministic=True)
    parts = ([_encode_sql("rowid")] if has_rowid else []) + [_encode_sql(_quote(n))
                                                             for n in names]
    row_sql = "CAST(" + " || ".join([*parts, "X'0A'"]) + " AS BLOB)"
    encoded, _ = _ordered_query(conn, table, row_sql)
    if has_rowid:  # _ordered_query put `rowid,` in front; the row expression has it
        encoded = encoded.replace(f"SELECT rowid, {row_sql}", f"SELECT {row_sql}", 1)
    digest = hashlib.sha256()
    for name in described:
        digest.update(_encode_value(name))
    digest.update(b"\n")
    rows = 0
    cursor = conn.execute(encoded)
    while batch := cursor.fetchmany(256):
        digest.update(b"".join(row[0] for row in batch))
        rows += len(batch)
    return {"rows": rows, "sha256": digest.hexdigest()}


def database_facts(path: Path, *, sha256: bool = False) -> dict[str, Any]:
    """user_version, integrity_check and per-table facts of a database file (and, with
    `sha256`, the file's own sha256 under "file_sha256").

    The file is opened read-only and immutable: no lock, no -wal or -shm is made,
    not a byte of it changes, so its sha256 holds before and after. Use it on
    files nothing else writes (a backup, a restored home with the stack stopped).

    The three passes over the file (integrity_check, the row digests, the file's
    sha256) run at once on separate connections and threads: SQLite and hashlib
    release the GIL while they work, so on two cores a backup or a verification
    takes about its longest pass instead of their sum.
    """
    uri = f"file:{path}?mode=ro&immutable=1"

    def integrity() -> str:
        conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
        try:
            return "; ".join(str(r[0]) for r in conn.execute("PRAGMA integrity_check"))
        finally:
            conn.close()

    with ThreadPoolExecutor(2, thread_name_prefix="backup-facts") as pool:
        checked = pool.submit(integrity)
        hashed = pool.submit(files.sha256_file, path) if sha256 else None
        conn = sqlite3.connect(uri, uri=True)
        try:
            user_version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            tables: dict[str, Any] = {}
            schema = conn.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'table' ORDER BY name"
            ).fetchall()
            for name, sql in schema:
                if str(sql or "").upper().startswith("CREATE VIRTUAL TABLE"):
                    continue
                tables[str(name)] = _table_facts(conn, str(name))
        finally:
            conn.close()
        facts = {"user_version": user_version, "integrity_check": checked.result(),
                 "tables": tables}
        if hashed is not None:
            facts["file_sha256"] = hashed.result()
    return facts


# creating -------------------------------------------------------------------------
def _snapshot(source: Path, target: Path) -> None:
    """Copy `source` to `target` in one backup step, then make `target` self-contained.

    The copy is written without a journal and without syncs: it lies in the backup's
    `.partial` folder, which is fsynced whole before it is renamed into place, and a
    crash before that leaves only a partial folder that is never taken for a backup.
    So the one fsync that matters is kept and the copy no longer pays for two more
    (journal and commit): about half its time, measured (BENCHMARKS.md)."""
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    try:
        dst = sqlite3.connect(target)
        try:
            dst.execute("PRAGMA journal_mode=OFF")
            dst.execute("PRAGMA synchronous=OFF")
            src.backup(dst, pages=-1)
            dst.execute("PRAGMA journal_mode=DELETE")
        finally:
            dst.close()
    finally:
        src.close()


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _walk_files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        if path.is_file() or path.is_symlink():
            yield path


def read_backup_key(path: Path) -> bytes:
    """A backup key file: at least 32 bytes, readable by its owner only."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        key = path.read_bytes().strip()
    except FileNotFoundError:
        raise BackupError(f"no backup key at {path.name}: backups are signed with the key of "
                          "the home that made them; copy its secrets/backup.key here "
                          "(docs/operations.md, restoring onto a new machine)") from None
    except OSError as exc:
        raise BackupError(f"cannot read the backup key {path.name}: {exc}") from exc
    if mode & 0o077:
        raise BackupError(f"the backup key {path.name} has mode {mode:o}: chmod 600 it")
    if len(key) < MIN_KEY_BYTES:
        raise BackupError(f"the backup key {path.name} is shorter than {MIN_KEY_BYTES} bytes")
    return key


def home_backup_key(home: Home) -> bytes:
    """The home's backup key, created (0600) when an older home has none yet."""
    path = home.backup_key_file
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, secrets.token_hex(MIN_KEY_BYTES).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
    return read_backup_key(path)


def install_backup_key(home: Home, key: bytes) -> None:
    """Make `key` (carried from the home that made the backups) this home's backup key."""
    files.write_atomic(home.backup_key_file, key, mode=0o600)


def manifest_hmac(key: bytes, data: bytes) -> str:
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def _write_manifest(folder: Path, manifest: dict[str, Any], key: bytes) -> None:
    data = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    (folder / MANIFEST).write_bytes(data)
    (folder / MANIFEST_DIGEST).write_text(f"{hashlib.sha256(data).hexdigest()}  {MANIFEST}\n")
    (folder / MANIFEST_HMAC).write_text(f"{manifest_hmac(key, data)}  {MANIFEST}\n")


def create_backup(home: Home, dest_dir: Path | None = None) -> Path:
    """Back up `home` into `dest_dir` (default `home.backups`); return the new folder.

    Safe while the stack runs. Raises BackupError when a database cannot be read
    or its snapshot fails integrity_check (nothing is left behind then).
    """
    storage = home.settings().storage
    root = dest_dir if dest_dir is not None else home.backups
    root.mkdir(parents=True, exist_ok=True)
    key = home_backup_key(home)
    created = dt.datetime.now(dt.UTC)
    name = created.strftime("%Y%m%dT%H%M%S.%fZ")
    final = root / name
    partial = root / f".{name}.partial"
    if final.exists():
        raise BackupError(f"{final} already exists")
    partial.mkdir()
    syncing = ThreadPoolExecutor(1, thread_name_prefix="backup-fsync")
    try:
        (partial / "data").mkdir()
        databases: dict[str, Any] = {}
        known: dict[Path, str] = {}
        synced = []
        for source in sorted(home.data.glob("*.db")) if home.data.is_dir() else []:
            target = partial / "data" / source.name
            try:
                _snapshot(source, target)
                # The copy goes to disk while its facts are computed (same pages, read
                # from the cache); every file is fsynced again below, cheaply by then.
                synced.append(syncing.submit(_fsync_file, target))
                facts = database_facts(target, sha256=True)
                known[target] = facts.pop("file_sha256")
            except sqlite3.Error as exc:
                raise BackupError(f"could not back up database {source}: {exc}") from exc
            if facts["integrity_check"] != "ok":
                raise BackupError(
                    f"database {source} fails integrity_check "
                    f"({facts['integrity_check'][:200]}); not backed up"
                )
            databases[source.stem] = {"path": f"data/{source.name}", **facts}
        postgres: dict[str, Any] | None = None
        if storage.backend == "postgresql":
            postgres = pgdump.dump(storage.url, home.storage_password(),
                                   partial / pgdump.DUMP_PATH)
        if home.config_file.exists():
            shutil.copy2(home.config_file, partial / "sonia.toml")
        if home.policies.is_dir():
            shutil.copytree(home.policies, partial / "policies", symlinks=False)
        manifest = {
            "format": FORMAT,
            "created_at": created.isoformat(),
            "sonia_version": __version__,
            "sqlite_version": sqlite3.sqlite_version,
            "source_home": str(home.root),
            "contains": ["data", "sonia.toml", "policies",
                         *(["postgres"] if postgres else [])],
            "excludes_secrets": True,
            "files": [files.file_entry(partial, p, known.get(p)) for p in _walk_files(partial)],
            "databases": databases,
        }
        if postgres is not None:
            manifest["postgres"] = postgres
        _write_manifest(partial, manifest, key)
        for done in synced:
            done.result()
        syncing.shutdown()
        for path in [*_walk_files(partial)]:
            _fsync_file(path)
        _fsync_dir(partial)
        os.rename(partial, final)
        _fsync_dir(root)
    except BaseException:
        syncing.shutdown(wait=True)
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return final


# verifying ------------------------------------------------------------------------
@dataclass
class VerifyReport:
    """The outcome of checking a backup; `problems` are "file: reason" lines."""

    path: Path
    problems: list[str] = field(default_factory=list)
    first_bad_file: str | None = None
    files_checked: int = 0
    databases_checked: int = 0
    manifest: dict[str, Any] | None = None
    signature_checked: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems

    def fail(self, file: str, reason: str) -> None:
        if self.first_bad_file is None:
            self.first_bad_file = file
        self.problems.append(f"{file}: {reason}")

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "ok": self.ok, "problems": self.problems,
                "first_bad_file": self.first_bad_file, "files_checked": self.files_checked,
                "databases_checked": self.databases_checked,
                "signature_checked": self.signature_checked}


def _safe_relative(path: str) -> bool:
    pure = PurePosixPath(path)
    return bool(path) and not pure.is_absolute() and ".." not in pure.parts \
        and "\\" not in path and "\x00" not in path


def _load_manifest(folder: Path, report: VerifyReport,
                   key: bytes | None) -> dict[str, Any] | None:
    manifest_path = folder / MANIFEST
    digest_path = folder / MANIFEST_DIGEST
    if not manifest_path.is_file():
        report.fail(MANIFEST, "missing: this is not a complete backup")
        return None
    data = manifest_path.read_bytes()
    if key is not None:
        hmac_path = folder / MANIFEST_HMAC
        if not hmac_path.is_file():
            report.fail(MANIFEST_HMAC, "missing: the backup is not signed")
            return None
        stated_mac = (hmac_path.read_text(errors="replace").split() or [""])[0]
        if not hmac.compare_digest(stated_mac, manifest_hmac(key, data)):
            report.fail(MANIFEST_HMAC, "the signature of manifest.json does not verify with "
                                       "this home's backup key: the backup was altered, or "
                                       "made by a home whose secrets/backup.key is not here")
            return None
        report.signature_checked = True
    if not digest_path.is_file():
        report.fail(MANIFEST_DIGEST, "missing")
        return None
    stated = digest_path.read_text(errors="replace").split()
    if not stated or stated[0] != hashlib.sha256(data).hexdigest():
        report.fail(MANIFEST, f"sha256 does not match {MANIFEST_DIGEST}: altered or truncated")
        return None
    try:
        manifest = json.loads(data)
    except ValueError as exc:
        report.fail(MANIFEST, f"not valid JSON: {exc}")
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        report.fail(MANIFEST, f"unknown manifest format (expected {FORMAT})")
        return None
    return manifest


def verify_backup(path: Path, key: bytes | None = None) -> VerifyReport:
    """Check the manifest's signature under `key` (when given: restore always gives
    it), every file's size and sha256, nothing extra, and each database's facts."""
    report = VerifyReport(path=path)
    if not path.is_dir():
        report.fail(str(path), "no such backup folder")
        return report
    manifest = _load_manifest(path, report, key)
    if manifest is None:
        return report
    report.manifest = manifest
    with ThreadPoolExecutor(2, thread_name_prefix="backup-verify") as pool:
        good, listed = _verify_files(path, manifest, report, pool)
    _verify_databases(path, manifest, report, good, listed)
    _verify_postgres(path, manifest, report, good)
    return report


def _verify_postgres(path: Path, manifest: dict[str, Any], report: VerifyReport,
                     good: set[str]) -> None:
    """The PostgreSQL dump, when there is one and its sha256 checked out: pg_restore
    reads its table of contents, which has as many entries as when it was made."""
    expected = manifest.get("postgres")
    if expected is None:
        return
    rel = str(expected.get("path", ""))
    if rel not in good:
        if not any(str(e.get("path")) == rel for e in manifest.get("files", [])):
            report.fail(rel or "postgres", "dump not listed among the files")
        return
    report.databases_checked += 1
    try:
        entries = pgdump.list_dump(path / rel)
    except (BackupError, ConfigError) as exc:
        report.fail(rel, f"pg_restore --list cannot read it: {exc}")
        return
    if len(entries) != expected.get("toc_entries"):
        report.fail(rel, f"{len(entries)} entries, manifest says {expected.get('toc_entries')}")


def _verify_files(path: Path, manifest: dict[str, Any], report: VerifyReport,
                  pool: ThreadPoolExecutor) -> tuple[set[str], set[str]]:
    """Sizes and sha256s of the listed files, nothing unlisted; (good, listed) paths.

    The sha256s are streamed on two threads at once (hashlib releases the GIL), started
    up front for every file whose size matches; problems are still reported in the
    manifest's order."""
    hashing = {}
    for entry in manifest.get("files", []):
        rel = str(entry.get("path", ""))
        file = path / rel
        if _safe_relative(rel) and file.is_file() and not file.is_symlink() \
                and file.stat().st_size == entry.get("size"):
            hashing[rel] = pool.submit(files.sha256_file, file)
    listed: set[str] = {MANIFEST, MANIFEST_DIGEST, MANIFEST_HMAC}
    good: set[str] = set()
    for entry in manifest.get("files", []):
        rel = str(entry.get("path", ""))
        if not _safe_relative(rel):
            report.fail(rel or "?", "unsafe path in manifest")
            continue
        listed.add(rel)
        file = path / rel
        report.files_checked += 1
        if not file.is_file() or file.is_symlink():
            report.fail(rel, "missing")
            continue
        size = file.stat().st_size
        if size != entry.get("size"):
            report.fail(rel, f"size {size} bytes, manifest says {entry.get('size')}: "
                             "truncated or altered")
            continue
        found = hashing[rel].result() if rel in hashing else files.sha256_file(file)
        if found != entry.get("sha256"):
            report.fail(rel, "sha256 does not match the manifest: altered")
            continue
        good.add(rel)
    for file in _walk_files(path):
        rel = file.relative_to(path).as_posix()
        if rel not in listed:
            report.fail(rel, "not in the manifest")
    return good, listed


def _verify_databases(path: Path, manifest: dict[str, Any], report: VerifyReport,
                      good: set[str], listed: set[str]) -> None:
    """Each database whose file checked out: integrity, user_version, row digests (a file
    that failed its sha256 is never opened)."""
    for name, expected in sorted(manifest.get("databases", {}).items()):
        rel = str(expected.get("path", ""))
        if rel not in good:
            if rel not in listed:
                report.fail(rel or name, "database not listed among the files")
            continue
        report.databases_checked += 1
        try:
            facts = database_facts(path / rel)
        except sqlite3.Error as exc:
            report.fail(rel, f"cannot be read as SQLite: {exc}")
            continue
        if facts["integrity_check"] != "ok":
            report.fail(rel, f"integrity_check: {facts['integrity_check'][:200]}")
        if facts["user_version"] != expected.get("user_version"):
            report.fail(rel, f"user_version {facts['user_version']}, manifest says "
                             f"{expected.get('user_version')}")
        if facts["tables"] != expected.get("tables"):
            differing = sorted(
                t for t in set(facts["tables"]) | set(expected.get("tables", {}))
                if facts["tables"].get(t) != expected.get("tables", {}).get(t)
            )
            report.fail(rel, f"row digests differ from the manifest in tables {differing}")


# listing and pruning --------------------------------------------------------------
@dataclass(frozen=True)
class BackupInfo:
    path: Path
    created_at: dt.datetime | None
    age_seconds: float | None
    ok: bool | None
    problem: str | None
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path),
                "created_at": self.created_at.isoformat() if self.created_at else None,
                "age_seconds": self.age_seconds, "ok": self.ok, "problem": self.problem,
                "size": self.size}


def _created_at(folder: Path) -> dt.datetime | None:
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        return dt.datetime.fromisoformat(str(manifest["created_at"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _backup_folders(home: Home) -> list[Path]:
    root = home.backups
    if not root.is_dir():
        return []
    return [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]


def list_backups(home: Home, *, verify: bool = True) -> list[BackupInfo]:
    """Every backup of `home`, newest first; with `verify`, each one checked in full."""
    now = dt.datetime.now(dt.UTC)
    infos: list[BackupInfo] = []
    for folder in _backup_folders(home):
        created = _created_at(folder)
        ok: bool | None = None
        problem: str | None = None
        if verify:
            report = verify_backup(folder, home_backup_key(home))
            ok = report.ok
            problem = report.problems[0] if report.problems else None
        size = sum(p.stat().st_size for p in _walk_files(folder) if p.is_file())
        infos.append(BackupInfo(
            path=folder, created_at=created,
            age_seconds=(now - created).total_seconds() if created else None,
            ok=ok, problem=problem, size=size,
        ))
    epoch = dt.datetime.min.replace(tzinfo=dt.UTC)
    infos.sort(key=lambda i: (i.created_at or epoch, i.path.name), reverse=True)
    return infos


def prune_backups(home: Home, retention: int) -> list[Path]:
    """Delete all but the newest `retention` backups; return what was deleted.

    Only folders with a readable manifest count and are deleted: anything else in
    `backups/` (a backup in progress, a folder someone put there) is left alone.
    """
    if retention < 1:
        raise BackupError(f"retention must be at least 1, got {retention}")
    dated = [(created, folder) for folder in _backup_folders(home)
             if (created := _created_at(folder)) is not None]
    dated.sort(key=lambda item: (item[0], item[1].name), reverse=True)
    removed: list[Path] = []
    for _, folder in dated[retention:]:
        shutil.rmtree(folder)
        removed.append(folder)
    return removed


# restoring ------------------------------------------------------------------------
@dataclass(frozen=True)
class RestoreResult:
    backup: Path
    files: int
    databases: tuple[str, ...]
    duration_s: float

    def to_dict(self) -> dict[str, Any]:
        return {"backup": str(self.backup), "files": self.files,
                "databases": list(self.databases), "duration_s": self.duration_s}


def _read_pid(path: Path) -> int | None:
    text = path.read_text(errors="replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        data = text.split()[0] if text else None
    if isinstance(data, dict):
        data = data.get("pid")
    try:
        return int(str(data))
    except (TypeError, ValueError):
        return None


def require_stack_stopped(home: Home) -> None:
    """Refuse while any `run/*.pid` (a number, or JSON with "pid") names a live process."""
    if not home.run.is_dir():
        return
    for pid_file in sorted(home.run.glob("*.pid")):
        pid = _read_pid(pid_file)
        if pid is None or pid == os.getpid():
            continue
        try:
            alive = psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            alive = False
        if alive:
            raise BackupError(
                f"the stack is running ({pid_file} names live process {pid}): "
                f"run `sonia down` first (or delete the pid file if it is stale)"
            )


def _copy_verified(source: Path, target: Path, entry: dict[str, Any]) -> None:
    """Copy one file while hashing it: the staged copy is exactly what was verified."""
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with open(source, "rb") as src, open(target, "wb") as dst:
        while chunk := src.read(_CHUNK):
            digest.update(chunk)
            dst.write(chunk)
        dst.flush()
        os.fsync(dst.fileno())
    if digest.hexdigest() != entry["sha256"]:
        raise BackupError(f"{entry['path']} changed while it was being restored")


def restore_backup(home: Home, backup_path: Path, *,
                   require_stopped: Callable[[], None] | None = None,
                   key: bytes | None = None) -> RestoreResult:
    """Replace `home`'s databases, config and policies with the backup's, or change nothing.

    `require_stopped` raises (any exception, BackupError preferred) when the stack
    runs; the default checks `run/*.pid`. The manifest's signature must verify with
    `key` (default: the home's `secrets/backup.key`). Secrets are not touched.
    """
    started = time.monotonic()
    if require_stopped is not None:
        require_stopped()
    else:
        require_stack_stopped(home)
    report = verify_backup(backup_path, key if key is not None
                           else read_backup_key(home.backup_key_file))
    if not report.ok or report.manifest is None:
        raise BackupError(
            f"backup {backup_path} is not usable, nothing was restored: "
            f"{report.first_bad_file}: {'; '.join(report.problems[:3])}"
        )
    manifest = report.manifest
    home.root.mkdir(parents=True, exist_ok=True)
    stage = home.root / f".restore-{secrets.token_hex(4)}"
    stage.mkdir()
    try:
        staged = stage / "new"
        (staged / "data").mkdir(parents=True)
        for entry in manifest["files"]:
            _copy_verified(backup_path / entry["path"], staged / entry["path"], entry)
        for side in (p for p in (staged / "data").iterdir() if p.name.endswith(_SIDE_FILES)):
            side.unlink()
        settings = None
        if (staged / "sonia.toml").exists():
            try:
                settings = load_settings(staged / "sonia.toml")
            except ConfigError as exc:
                raise BackupError(f"sonia.toml in backup {backup_path} is not valid: {exc}") \
                    from exc
        if "postgres" in manifest:
            _restore_postgres(home, settings, staged / manifest["postgres"]["path"])
        _swap_in(home, staged, stage / "old")
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    _fsync_dir(home.root)
    return RestoreResult(backup=backup_path, files=len(manifest["files"]),
                         databases=tuple(sorted(manifest.get("databases", {}))),
                         duration_s=round(time.monotonic() - started, 3))


def _restore_postgres(home: Home, settings: Settings | None, dump: Path) -> None:
    """Restore the backup's dump into the database the restored configuration names (the
    backup's sonia.toml, else the home's own), in one transaction, before any file is
    swapped in: a failure changes nothing."""
    storage = (settings if settings is not None else home.settings()).storage
    if storage.backend != "postgresql":
        raise BackupError("the backup holds a PostgreSQL dump but storage.url is sqlite: "
                          "nothing was restored (set [storage] url to the database)")
    try:
        pgdump.restore_dump(storage.url, home.storage_password(), dump)
    except BackupError as exc:
        raise BackupError(f"{exc}; nothing was restored") from exc


def _swap_in(home: Home, staged: Path, old: Path) -> None:
    """Rename each live item into `old` and its staged twin into place; undo on failure."""
    old.mkdir()
    items = [("data", home.data)]
    if (staged / "policies").exists():
        items.append(("policies", home.policies))
    if (staged / "sonia.toml").exists():
        items.append(("sonia.toml", home.config_file))
    done: list[tuple[str, Path, bool]] = []  # (name, live path, had a live item)
    try:
        for name, live in items:
            had_live = live.exists()
            if had_live:
                os.rename(live, old / name)
            done.append((name, live, had_live))
            os.rename(staged / name, live)
    except OSError as exc:
        for name, live, had_live in reversed(done):
            if (old / name).exists() or not had_live:
                if live.is_dir():
                    shutil.rmtree(live, ignore_errors=True)
                elif live.exists():
                    live.unlink()
                if had_live:
                    os.rename(old / name, live)
        raise BackupError(f"restore failed while swapping in {name}: {exc}; "
                          f"the home was put back as it was") from exc
