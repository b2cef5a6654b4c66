"""One managed child process: its own session and process group, its log, its pid file.

Stopping follows the careful order: SIGTERM to the whole group, wait for the
grace period, and only then SIGKILL, which is reported as an escalation rather
than hidden. Deadlines use time.monotonic().

The child's stdout and stderr go straight to `log_path` (`<service>.out`: what
a crash prints before logging works). The child holds that file open, so it
rolls over (kit/logfiles.py) when the process is started again, not while it runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from sonia import files
from sonia.config import LogSettings
from sonia.kit.logfiles import roll_over

RUN_MARKER_ENV = "SONIA_RUN_MARKER"
"""Set on every process a supervisor starts, so leftovers can be found by it."""


@dataclass
class StopResult:
    name: str
    pid: int | None
    exit_code: int | None
    seconds: float
    escalated: bool


class ManagedProcess:
    def __init__(self, name: str, argv: list[str], *, env: dict[str, str], log_path: Path,
                 pid_path: Path, rotation: LogSettings | None = None) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self.pid_path = pid_path
        self.rotation = rotation or LogSettings()  # type: ignore[call-arg]
        self.popen: subprocess.Popen[bytes] | None = None
        self.started_at: float | None = None
        self._stop_started: float | None = None

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        roll_over_when_full(self.log_path, self.rotation)
        with open(self.log_path, "ab") as out:
            self.popen = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=self.env, start_new_session=True, close_fds=True,
            )
        self.started_at = time.time()
        files.write_atomic(self.pid_path, f"{self.popen.pid}\n".encode())

    def poll(self) -> int | None:
        """The exit code once the process has ended (reaping it), else None."""
        return self.popen.poll() if self.popen else None

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def _signal_group(self, sig: int) -> None:
        if self.popen is None:
            return
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass

    def group_alive(self) -> bool:
        """Whether any process of this child's process group is still alive (not a zombie).

        `killpg(pgid, 0)` answers "no process at all" without a walk of every
        process on the machine; only when some process remains is the group
        walked, to tell a live one from a zombie that is about to be reaped.
        """
        if self.popen is None:
            return False
        pgid = self.popen.pid
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        for proc in psutil.process_iter(["pid", "status"]):
            try:
                if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                    return True
            except (ProcessLookupError, psutil.Error):
                continue
        return False

    def stop(self, grace: float) -> StopResult:
        """SIGTERM the group, wait up to `grace` seconds, SIGKILL only if it must."""
        self.signal_stop()
        return self.await_stop(grace)

    def signal_stop(self) -> None:
        """The first half of `stop`: SIGTERM to the whole group, now (so that several
        processes can be asked together and waited for together)."""
        self._stop_started = time.monotonic()
        self._signal_group(signal.SIGTERM)

    def await_stop(self, grace: float) -> StopResult:
        """The second half of `stop`: wait for the group, escalating after `grace`."""
        start = self._stop_started if self._stop_started is not None else time.monotonic()
        pid = self.pid
        if self.popen is None:
            return StopResult(self.name, None, None, 0.0, False)
        deadline = start + grace
        escalated = False
        code: int | None = None
        while time.monotonic() < deadline:
            code = self.popen.poll()
            if code is not None and not self.group_alive():
                break
            time.sleep(0.01)
        else:
            escalated = True
            self._signal_group(signal.SIGKILL)
            code = self.popen.wait(timeout=10)
        self._stop_started = None
        self.remove_pid_file()
        return StopResult(self.name, pid, code, time.monotonic() - start, escalated)

    def kill(self) -> None:
        self._signal_group(signal.SIGKILL)
        if self.popen is not None:
            self.popen.wait(timeout=10)
        self.remove_pid_file()

    def remove_pid_file(self) -> None:
        try:
            self.pid_path.unlink()
        except FileNotFoundError:
            pass


def roll_over_when_full(path: Path, rotation: LogSettings) -> None:
    """Roll `path` over when it holds `rotation.max_bytes` or more."""
    try:
        full = path.stat().st_size >= rotation.max_bytes
    except FileNotFoundError:
        return
    if full:
        roll_over(path, rotation.keep)


def service_argv(service: str, home: Path) -> list[str]:
    return [sys.executable, "-m", "sonia.services", service, "--home", str(home)]
