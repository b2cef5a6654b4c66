"""The PostgreSQL part of a backup: one `pg_dump --format=custom` of Sonia's schemas.

When `[storage] url` names a server, the memory, EVA, OpenClaw and gateway ledgers
(each service's every table) live in the schemas `memory`, `eva`, `openclaw` and
`gateway` there, not in `data/`. `sonia backup` then writes, beside the SQLite
snapshots of whatever `data/` holds, one dump of
those schemas (`postgres/sonia.dump`), listed in the same manifest (size,
sha256) and so covered by the same HMAC signature. pg_dump takes the whole dump
in one repeatable-read snapshot: the four schemas are consistent with each other.

The tools are the server's own: `SONIA_PG_BINDIR` when set (then the only place
looked: it pins one version), else the Debian folder of the server's major
version (`/usr/lib/postgresql/<major>/bin`, so pg_dump is never older than the
server), then PATH, then the newest Debian folder. A missing tool
is a ConfigError (the CLI exits 2) naming what to install.

The password (`secrets/postgres_password`) reaches the tools through the
PGPASSWORD environment variable of the child only, never its argv (which any
local user can read in the process list).

Restore runs `pg_restore --clean --if-exists --single-transaction --exit-on-error`:
the dump's objects are dropped when they exist and recreated, all in one
transaction, so a failed restore leaves the database as it was. The dump is made
with `--no-owner --no-privileges`, so it restores under whatever role the URL
names (a new server, a new database).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from sonia.errors import BackupError, ConfigError, Unavailable
from sonia.kit.pg import BINDIR_ENV, INSTALL_ROOT, installed_bindirs

__all__ = ["DUMP_PATH", "SCHEMAS", "dump", "find_tool", "list_dump", "restore_dump",
           "server_major"]

SCHEMAS = ("eva", "gateway", "memory", "openclaw")
"""The schemas Sonia's services own on a PostgreSQL server (kit/pg.py)."""
DUMP_PATH = "postgres/sonia.dump"
"""Where the dump lies inside a backup folder."""
TOOL_TIMEOUT_SECONDS = 3600.0


def find_tool(tool: str, *, server_major: int | None = None) -> Path:
    """The executable `tool` (pg_dump, pg_restore), preferring the server's version."""
    pinned = os.environ.get(BINDIR_ENV)
    candidates: list[Path] = []
    if pinned:  # set: the one place looked (it pins the tools of one version)
        candidates.append(Path(pinned))
    else:
        if server_major is not None:
            candidates.append(INSTALL_ROOT / str(server_major) / "bin")
        on_path = shutil.which(tool)
        if on_path:
            candidates.append(Path(on_path).resolve().parent)
        candidates.extend(installed_bindirs())
    for folder in candidates:
        if os.access(folder / tool, os.X_OK):
            return folder / tool
    where = f"{BINDIR_ENV}={pinned}" if pinned else "PATH and the PostgreSQL install folders"
    raise ConfigError(
        f"{tool} not found (looked in {where}): install PostgreSQL's client tools of the "
        f"server's version (Debian: postgresql-client) or set {BINDIR_ENV}",
        key="storage.url")


def _env(password: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"PGPASSWORD", "PGPASSFILE"}}
    if password is not None:
        env["PGPASSWORD"] = password
    return env


def _run(argv: Sequence[str], *, password: str | None, what: str) -> str:
    try:
        done = subprocess.run(list(argv), env=_env(password), capture_output=True, text=True,
                              timeout=TOOL_TIMEOUT_SECONDS, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BackupError(f"{what} could not run: {exc}") from exc
    if done.returncode != 0:
        detail = "; ".join(line for line in done.stderr.strip().splitlines()[:5])
        raise BackupError(f"{what} failed (exit {done.returncode}): {detail}")
    return done.stdout


def _server_facts(url: str, password: str | None) -> tuple[int, list[str]]:
    """The server's major version (17 for 17.2) and which of SCHEMAS exist there."""
    from sonia.kit import pg

    try:
        conn = pg.connect(url, password=password, schema="public")
    except Unavailable as exc:
        raise BackupError(f"{exc}: the PostgreSQL part cannot be backed up or restored") \
            from exc
    try:
        row = conn.execute("SHOW server_version_num").fetchone()
        found = conn.execute("SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s) "
                             "ORDER BY nspname", (list(SCHEMAS),)).fetchall()
    finally:
        conn.close()
    major = int(str(row["server_version_num"] if row else 0)) // 10000
    return major, [str(r["nspname"]) for r in found]


def server_major(url: str, password: str | None) -> int:
    """The server's major version (17 for 17.2), asked over a connection."""
    return _server_facts(url, password)[0]


def dump(url: str, password: str | None, target: Path) -> dict[str, object]:
    """Dump Sonia's schemas on `url` to `target`; return the manifest's facts of it.

    Only the schemas that exist are named (pg_dump fails when none matches); a
    database with none of them yet has nothing to back up, which is an error, not an
    empty dump that would look like a backup of the ledgers."""
    major, schemas = _server_facts(url, password)
    if not schemas:
        raise BackupError(f"the database holds none of Sonia's schemas ({', '.join(SCHEMAS)}) "
                          "yet: start the stack once (`sonia up`) so the services create them")
    tool = find_tool("pg_dump", server_major=major)
    target.parent.mkdir(parents=True, exist_ok=True)
    argv = [str(tool), "--format=custom", "--no-owner", "--no-privileges",
            f"--file={target}", f"--dbname={url}"]
    argv += [f"--schema={schema}" for schema in schemas]
    _run(argv, password=password, what="pg_dump")
    entries = list_dump(target)
    return {"path": DUMP_PATH, "format": "custom", "schemas": schemas,
            "server_major": major, "toc_entries": len(entries)}


def list_dump(path: Path) -> list[str]:
    """The table of contents of a custom-format dump (`pg_restore --list`): its entries,
    or BackupError when pg_restore cannot read it."""
    tool = find_tool("pg_restore")
    out = _run([str(tool), "--list", str(path)], password=None, what="pg_restore --list")
    return [line for line in out.splitlines() if line and not line.startswith(";")]


def restore_dump(url: str, password: str | None, path: Path) -> None:
    """Restore the dump into `url` in one transaction (nothing changes if it fails)."""
    tool = find_tool("pg_restore", server_major=server_major(url, password))
    _run([str(tool), "--clean", "--if-exists", "--single-transaction", "--exit-on-error",
          "--no-owner", "--no-privileges", f"--dbname={url}", str(path)],
         password=password, what="pg_restore")
