"""A throwaway PostgreSQL server for tests and benchmarks: real, private, on a free port.

    with PostgresServer.start() as server:
        url = server.create_database("t1")   # postgresql://sonia@127.0.0.1:PORT/t1
        ... connect with password=server.password ...
        server.drop_database("t1")

`start()` runs Debian's (or any) PostgreSQL server binaries: `initdb` into a new
temporary folder, with a superuser `sonia` whose password it generates and
SCRAM authentication, then `postgres` itself as a child in its own session,
listening on a free loopback port (and on a unix socket inside the folder, so
nothing is written elsewhere). Readiness is a real connection, attempted under
a deadline while the child is watched: a server that dies says why (its log).
`stop()` asks for a fast shutdown (SIGINT), waits, kills the process group at
a deadline, and removes the folder.

`shutdown(mode)` and `start_again()` restart the server in place, as an
operator's `pg_ctl stop -m fast|immediate` and a start would (same folder, port
and password): the chaos gate's PostgreSQL faults. `started()` says which
postmaster answers (its pid and `pg_postmaster_start_time()`), so that a restart
can be shown to have happened.

PostgreSQL refuses to run as root. As root, the server runs as the `postgres`
user when there is one (Debian's package makes it), else as `nobody`, with the
folder handed to that user; the uid switch is Popen's own (no su, no sudo).

`missing()` says what is absent (the server binaries, psycopg) so tests can skip
naming it. The binaries are found through `SONIA_PG_BINDIR`, then `initdb` on
PATH, then the newest `/usr/lib/postgresql/<version>/bin` (Debian's layout).
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from sonia.errors import SupervisorError
from sonia.kit.pg import BINDIR_ENV, installed_bindirs

MARKER_ENV = "SONIA_PG_TEST_SERVER"
"""Set in the server's environment (the folder it serves), to find a leftover one."""
SUPERUSER = "sonia"
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 20.0
SHUTDOWN_MODES = ("fast", "immediate")
"""The `pg_ctl stop -m` modes `shutdown` takes (smart would wait for every client)."""


def find_bindir() -> Path | None:
    """The folder holding `initdb` and `postgres`, or None."""
    candidates: list[Path] = []
    if os.environ.get(BINDIR_ENV):
        candidates.append(Path(os.environ[BINDIR_ENV]))
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    candidates.extend(installed_bindirs())
    for folder in candidates:
        if all(os.access(folder / tool, os.X_OK) for tool in ("initdb", "postgres")):
            return folder
    return None


def missing() -> str | None:
    """What stops a server from being started here, or None."""
    if find_bindir() is None:
        return ("PostgreSQL server binaries (initdb, postgres): install Debian's "
                f"`postgresql` (`make system-deps` as root) or set {BINDIR_ENV}")
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        return f"psycopg with libpq ({exc}): install the `postgres` extra"
    return None


def _run_as() -> pwd.struct_passwd | None:
    """Whom the server runs as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise SupervisorError("running as root, and neither a postgres nor a nobody user exists "
                          "to run PostgreSQL as (it refuses root)")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """One running server in its own temporary folder; see the module docstring."""

    def __init__(self, root: Path, bindir: Path, port: int, password: str,
                 process: subprocess.Popen[bytes],
                 owner: pwd.struct_passwd | None = None) -> None:
        self.root = root
        self.owner = owner
        self.bindir = bindir
        self.port = port
        self.host = "127.0.0.1"
        self.user = SUPERUSER
        self.password = password
        self.process = process

    @property
    def log_file(self) -> Path:
        return self.root / "postgres.log"

    @classmethod
    def start(cls, *, timeout: float = START_TIMEOUT_SECONDS) -> PostgresServer:
        """initdb, start, and wait until a connection succeeds (or raise SupervisorError)."""
        reason = missing()
        if reason is not None:
            raise SupervisorError(f"cannot start PostgreSQL: {reason}")
        bindir = find_bindir()
        assert bindir is not None
        owner = _run_as()
        root = Path(tempfile.mkdtemp(prefix="sonia-pg-"))
        try:
            password = secrets.token_urlsafe(24)
            (root / "pwfile").write_text(password + "\n")
            (root / "socket").mkdir()
            if owner is not None:
                for path in (root, root / "pwfile", root / "socket"):
                    os.chown(path, owner.pw_uid, owner.pw_gid)
            cls._initdb(bindir, root, owner)
            (root / "pwfile").unlink()
            port = _free_port()
            process = cls._spawn(bindir, root, owner, port)
            server = cls(root, bindir, port, password, process, owner)
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        try:
            server._wait_ready(timeout)
        except BaseException:
            server.stop()
            raise
        return server

    @staticmethod
    def _child_options(owner: pwd.struct_passwd | None) -> dict[str, Any]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8",
               "LANG": "C.UTF-8", "TZ": "UTC"}
        options: dict[str, Any] = {"env": env, "stdin": subprocess.DEVNULL}
        if owner is not None:
            env["HOME"] = owner.pw_dir
            options.update(user=owner.pw_uid, group=owner.pw_gid, extra_groups=[])
        return options

    @classmethod
    def _initdb(cls, bindir: Path, root: Path, owner: pwd.struct_passwd | None) -> None:
        result = subprocess.run(
            [str(bindir / "initdb"), "-D", str(root / "data"), "-U", SUPERUSER,
             f"--pwfile={root / 'pwfile'}", "--auth=scram-sha-256", "--encoding=UTF8",
             "--locale=C.UTF-8", "--no-sync", "--no-instructions"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False, timeout=120,
            cwd=root, **cls._child_options(owner))
        if result.returncode != 0:
            raise SupervisorError(f"initdb failed ({result.returncode}): "
                                  f"{result.stdout.decode(errors='replace')[-2000:]}")

    @classmethod
    def _spawn(cls, bindir: Path, root: Path, owner: pwd.struct_passwd | None,
               port: int) -> subprocess.Popen[bytes]:
        options = cls._child_options(owner)
        options["env"][MARKER_ENV] = str(root)
        log = open(root / "postgres.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            if owner is not None:
                os.chown(root / "postgres.log", owner.pw_uid, owner.pw_gid)
            return subprocess.Popen(
                [str(bindir / "postgres"), "-D", str(root / "data"), "-p", str(port),
                 "-c", "listen_addresses=127.0.0.1",
                 "-c", f"unix_socket_directories={root / 'socket'}",
                 "-c", "max_connections=200", "-c", "shared_buffers=32MB",
                 "-c", "synchronous_commit=on"],
                stdout=log, stderr=subprocess.STDOUT, cwd=root, start_new_session=True,
                **options)
        finally:
            log.close()

    def _wait_ready(self, timeout: float) -> None:
        """Attempt a connection until one succeeds, the child exits, or the deadline."""
        import psycopg

        deadline = time.monotonic() + timeout
        last = "no attempt yet"
        while time.monotonic() < deadline:
            try:
                with psycopg.connect(self.url("postgres"), password=self.password,
                                     connect_timeout=2):
                    return
            except psycopg.OperationalError as exc:
                last = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            try:  # the pause between attempts ends early if the server dies
                code = self.process.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                continue
            raise SupervisorError(f"PostgreSQL exited with {code} while starting:\n"
                                  f"{self.log_tail()}")
        raise SupervisorError(f"PostgreSQL was not ready after {timeout:.0f} s ({last}):\n"
                              f"{self.log_tail()}")

    def shutdown(self, mode: str, *, timeout: float = STOP_TIMEOUT_SECONDS) -> int:
        """`pg_ctl stop -m MODE` (fast: clients are disconnected and a checkpoint is
        written; immediate: every process quits at once, crash recovery at the next
        start), then wait for the postmaster to exit; its exit code. The folder stays."""
        if mode not in SHUTDOWN_MODES:
            raise ValueError(f"shutdown mode {mode!r} is not one of {SHUTDOWN_MODES}")
        done = subprocess.run(
            [str(self.bindir / "pg_ctl"), "stop", "-D", str(self.root / "data"), "-m", mode,
             "-w", "-t", str(int(timeout))],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False, timeout=timeout + 10,
            cwd=self.root, **self._child_options(self.owner))
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise SupervisorError(f"pg_ctl stop -m {mode} did not stop PostgreSQL "
                                  f"({done.returncode}): {done.stdout.decode(errors='replace')}"
                                  ) from None

    def start_again(self, *, timeout: float = START_TIMEOUT_SECONDS) -> None:
        """Start the postmaster again on the same folder and port, after `shutdown`, and
        wait until a connection succeeds."""
        if self.process.poll() is None:
            raise SupervisorError("PostgreSQL is still running: shut it down first")
        self.process = self._spawn(self.bindir, self.root, self.owner, self.port)
        self._wait_ready(timeout)

    def started(self) -> tuple[int, str]:
        """(postmaster pid, `pg_postmaster_start_time()` in ISO form) of the server that
        answers now: both change when the server really restarted."""
        with self.admin() as conn:
            row = conn.execute("SELECT pg_postmaster_start_time()").fetchone()
        return self.postmaster_pid(), row[0].isoformat()

    def postmaster_pid(self) -> int:
        """The pid the running server wrote in its `postmaster.pid` (its own record, not
        the process this object started, so a check of it can fail)."""
        try:
            return int((self.root / "data" / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError) as exc:
            raise SupervisorError(f"no postmaster.pid under {self.root}: {exc}") from None

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def url(self, database: str) -> str:
        """The URL of `database` on this server, without the password (as sonia.toml has it)."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    def admin(self) -> Any:
        """An autocommit connection to the `postgres` database as the superuser."""
        import psycopg

        return psycopg.connect(self.url("postgres"), password=self.password, autocommit=True)

    def create_database(self, name: str) -> str:
        """A new, empty database; its URL."""
        from psycopg import sql

        with self.admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop `name`, closing whatever is still connected to it."""
        from psycopg import sql

        with self.admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))

    def stop(self) -> int | None:
        """Fast shutdown, then SIGKILL at the deadline; the folder is removed. The exit code."""
        code: int | None = None
        try:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGINT)  # PostgreSQL's fast shutdown
                try:
                    code = self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
                except subprocess.TimeoutExpired:
                    os.killpg(self.process.pid, signal.SIGKILL)
                    code = self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
            else:
                code = self.process.returncode
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
        return code

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


__all__ = ["BINDIR_ENV", "MARKER_ENV", "SHUTDOWN_MODES", "PostgresServer", "find_bindir", "missing"]
