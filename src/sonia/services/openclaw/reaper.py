"""OpenClaw reaps the processes its sandboxes orphan.

bubblewrap's outer process can exit a moment before the namespace's own init,
which is then orphaned. Left alone, the kernel hands it to the nearest
subreaper (or init), where it lingers as a zombie until someone collects it.
OpenClaw therefore makes itself a child subreaper, so that everything its tools
start stays below it, and collects those orphans itself.

Only orphans are reaped: every child OpenClaw starts on purpose is created
through `ChildReaper.popen` under a lock and registered, and the reaper never
touches a registered pid, so it can never steal an exit status that a
`Popen.wait` is about to read.
"""

from __future__ import annotations

import os
import subprocess
import threading
from typing import Any

import psutil

from sonia.kit.subreaper import become_subreaper


class ChildReaper:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ours: set[int] = set()
        self.subreaper = False
        self.reaped = 0

    def adopt_orphans(self) -> bool:
        """Become this process's descendants' reaper (Linux); False where it cannot."""
        self.subreaper = become_subreaper()
        return self.subreaper

    def popen(self, *args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start a child that its caller will wait for; the reaper leaves it alone."""
        with self._lock:
            proc: subprocess.Popen[bytes] = subprocess.Popen(*args, **kwargs)
            self._ours.add(proc.pid)
        return proc

    def release(self, proc: subprocess.Popen[bytes]) -> None:
        """The caller has waited for `proc`: forget it."""
        with self._lock:
            self._ours.discard(proc.pid)

    def reap_orphans(self) -> int:
        """Collect every zombie child that was not started through `popen`."""
        reaped = 0
        with self._lock:
            for child in psutil.Process().children():
                if child.pid in self._ours:
                    continue
                try:
                    if child.status() != psutil.STATUS_ZOMBIE:
                        continue
                    os.waitpid(child.pid, os.WNOHANG)
                    reaped += 1
                except (psutil.Error, ChildProcessError):
                    continue
        self.reaped += reaped
        return reaped


REAPER = ChildReaper()
"""One per process: the reaper is about this process's children."""
