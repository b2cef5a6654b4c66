"""The background supervisor: owns the service processes of one home.

It starts every service in its own process group, restarts one that dies (with
exponential backoff, counting restarts), and on SIGTERM stops them in waves,
callers before the services they call (STOP_WAVES; SIGTERM, grace, SIGKILL only
when it must), writes a stop report naming every escalation, and exits.
`python -m sonia.supervisor --home HOME`.

While the stack is up it also takes scheduled backups (`[backup] interval_hours`,
0 = off; the first one interval after start) in a worker thread, so a long
backup never delays the watch loop, and prunes to `[backup] retention`. A failed
backup is logged and recorded in the state file; it never stops the supervisor.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import select
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from sonia import SERVICES
from sonia.backup import create_backup, prune_backups
from sonia.config import BackupSettings
from sonia.errors import ConfigError
from sonia.home import PRIVATE_UMASK, Home
from sonia.kit.logs import configure_logging
from sonia.supervisor.process import RUN_MARKER_ENV, ManagedProcess, service_argv
from sonia.supervisor.state import (
    state_file,
    stop_report_file,
    supervisor_pid_file,
    write_json_atomic,
)

STOP_WAVES: tuple[tuple[str, ...], ...] = (
    ("gateway",),                    # the public edge: no new work enters after it
    ("voice", "openclaw"),           # called by the gateway only
    ("router", "memory", "eva"),     # called by the gateway, voice and OpenClaw
)
"""The order of a full stop. Every service of a wave is signalled at once and the wave
is waited for as one, so a stop costs three service stops rather than six; a service
is never stopped before a service that calls it (checked against the caller tables
by tests/unit/foundation/test_supervisor_waves.py), so a request in flight finishes
with every service it needs still up."""

STABLE_AFTER_S = 30.0
"""A service that stayed up this long has its backoff reset."""
POLL_S = 0.1

log = logging.getLogger("sonia.supervisor")


@dataclass
class Slot:
    process: ManagedProcess
    restarts: int = 0
    backoff: float = 0.0
    restart_at: float | None = None
    last_exit: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


class ScheduledBackups:
    """Online backups every `interval_hours` while the stack is up, pruned to `retention`."""

    def __init__(self, home: Home, settings: BackupSettings) -> None:
        self.home = home
        self.interval_s = settings.interval_hours * 3600.0
        self.retention = settings.retention
        self.next_at = time.monotonic() + self.interval_s if self.interval_s > 0 else None
        self.thread: threading.Thread | None = None
        self.last: dict[str, Any] = {"enabled": self.interval_s > 0,
                                     "interval_hours": settings.interval_hours,
                                     "retention": self.retention}
        self._finished = threading.Event()

    def due(self, now: float) -> bool:
        return self.next_at is not None and now >= self.next_at and self.thread is None

    def start(self, now: float) -> None:
        """Begin one backup in a worker thread; the next is due an interval from now."""
        self.next_at = now + self.interval_s
        self._finished.clear()
        self.thread = threading.Thread(target=self._backup, name="scheduled-backup",
                                       daemon=True)
        self.thread.start()

    def collect(self) -> bool:
        """True once, when a backup that was running has finished (state changed)."""
        if self.thread is None or not self._finished.is_set():
            return False
        self.thread.join()
        self.thread = None
        return True

    def wait(self, timeout: float) -> None:
        """Let a running backup finish before the services stop (bounded)."""
        if self.thread is not None:
            self.thread.join(timeout)
            if self.thread.is_alive():
                log.error("scheduled backup still running after %.0fs; stopping anyway", timeout)

    def _backup(self) -> None:
        started = time.monotonic()
        try:
            path = create_backup(self.home)
            removed = prune_backups(self.home, self.retention)
            seconds = time.monotonic() - started
            self.last = self.last | {
                "last_ok": True, "last_path": str(path), "last_at": time.time(),
                "last_seconds": round(seconds, 3), "last_error": None}
            log.info("scheduled backup %s in %.2fs; pruned %d older", path.name, seconds,
                     len(removed))
        except Exception as exc:  # a failed backup is reported, never fatal
            self.last = self.last | {
                "last_ok": False, "last_at": time.time(),
                "last_error": f"{type(exc).__name__}: {exc}"[:500]}
            log.error("scheduled backup failed: %s: %s", type(exc).__name__, exc)
        finally:
            self._finished.set()


class Supervisor:
    def __init__(self, home: Home) -> None:
        self.home = home
        self.settings = home.check()
        self.marker = os.environ.get(RUN_MARKER_ENV) or f"sonia-{os.getpid()}-{time.time_ns()}"
        env = dict(os.environ)
        env[RUN_MARKER_ENV] = self.marker
        env["SONIA_HOME"] = str(home.root)
        self.slots = {
            name: Slot(ManagedProcess(
                name, service_argv(name, home.root), env=env,
                log_path=home.logs / f"{name}.out", pid_path=home.run / f"{name}.pid",
                rotation=self.settings.logs))
            for name in SERVICES
        }
        self.stopping = False
        self.backups = ScheduledBackups(home, self.settings.backup)

    def write_state(self) -> None:
        services = {}
        for name, slot in self.slots.items():
            proc = slot.process
            services[name] = {
                "pid": proc.pid if proc.running() else None,
                "port": self.settings.port_of(name),
                "started_at": proc.started_at,
                "restarts": slot.restarts,
                "last_exit": slot.last_exit,
                "state": "running" if proc.running() else (
                    "restarting" if slot.restart_at else "stopped"),
            }
        write_json_atomic(state_file(self.home), {
            "supervisor_pid": os.getpid(),
            "marker": self.marker,
            "bind": self.settings.bind,
            "services": services,
            "backup": dict(self.backups.last),
            "updated_at": time.time(),
        })

    def start_all(self) -> None:
        for name in SERVICES:
            self.slots[name].process.start()
            log.info("started %s pid %s", name, self.slots[name].process.pid)
        self.write_state()

    def watch_once(self) -> None:
        now = time.monotonic()
        changed = False
        for name, slot in self.slots.items():
            proc = slot.process
            if slot.restart_at is not None:
                if now >= slot.restart_at:
                    slot.restart_at = None
                    proc.start()
                    slot.restarts += 1
                    log.warning("restarted %s (restart %d) pid %s", name, slot.restarts, proc.pid)
                    changed = True
                continue
            code = proc.poll()
            if code is None:
                if proc.started_at and time.time() - proc.started_at > STABLE_AFTER_S:
                    slot.backoff = 0.0
                continue
            slot.last_exit = code
            proc.remove_pid_file()
            sup = self.settings.supervisor
            slot.backoff = min(sup.restart_backoff_max,
                               slot.backoff * 2 if slot.backoff else sup.restart_backoff_initial)
            slot.restart_at = now + slot.backoff
            slot.history.append({"exit": code, "at": time.time(), "backoff": slot.backoff})
            log.warning("%s exited with %s; restarting in %.1fs", name, code, slot.backoff)
            changed = True
        if changed:
            self.write_state()

    def stop_all(self) -> dict[str, Any]:
        grace = self.settings.supervisor.stop_grace_seconds
        results = []
        for wave in STOP_WAVES:
            for name in wave:
                self.slots[name].restart_at = None
                self.slots[name].process.signal_stop()
            for name in wave:
                result = self.slots[name].process.await_stop(grace)
                if result.escalated:
                    log.error("%s did not stop within %.1fs: SIGKILL", name, grace)
                results.append(result.__dict__)
        report = {
            "stopped_at": time.time(),
            "services": results,
            "escalations": [r["name"] for r in results if r["escalated"]],
            "restarts": {name: slot.restarts for name, slot in self.slots.items()},
        }
        write_json_atomic(stop_report_file(self.home), report)
        return report

    def run(self) -> int:
        def on_signal(signum: int, frame: Any) -> None:
            self.stopping = True

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        # A signal also writes a byte here, so the watch loop wakes at once to stop
        # instead of finishing its poll interval first.
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        previous = signal.set_wakeup_fd(wake_w)
        try:
            self.start_all()
            while not self.stopping:
                self.watch_once()
                now = time.monotonic()
                if self.backups.due(now):
                    self.backups.start(now)
                if self.backups.collect():
                    self.write_state()
                if select.select([wake_r], [], [], POLL_S)[0]:
                    with contextlib.suppress(BlockingIOError):
                        os.read(wake_r, 512)
        finally:
            signal.set_wakeup_fd(previous)
            os.close(wake_r)
            os.close(wake_w)
        self.backups.wait(timeout=60.0)
        self.stop_all()
        self.write_state()
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sonia.supervisor")
    parser.add_argument("--home", required=True)
    args = parser.parse_args(argv)
    home = Home.at(args.home)
    os.umask(PRIVATE_UMASK)  # its files and its children's (services inherit it) are 0600
    home.make_private()
    try:
        rotation = home.settings().logs
    except ConfigError:
        rotation = None  # the defaults; Supervisor() below reports the error
    configure_logging("supervisor", home.logs / "supervisor.log", rotation=rotation)
    try:
        supervisor = Supervisor(home)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    pid_file = supervisor_pid_file(home)
    pid_file.write_text(f"{os.getpid()}\n")
    try:
        return supervisor.run()
    finally:
        pid_file.unlink(missing_ok=True)
