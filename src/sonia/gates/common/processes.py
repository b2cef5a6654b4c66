"""What the gates read of a stack's processes: memory, uptime and restarts while it
runs; zombies, orphans, bound ports and WAL files after a stop.

`sample_services` reads each service as the soak records it in every window:
its memory (USS of its process tree, pid from `run/<service>.pid`) and, from the
supervisor's state file, how long its current process has run and how often it
was restarted. Each reading that fails is None (an empty cell), never zero.

The gate process makes itself a child subreaper (prctl PR_SET_CHILD_SUBREAPER),
so any process of the run that loses its parent is re-parented to the gate
instead of init: an orphan cannot hide, and a zombie shows up as the gate's own
unreaped child.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from sonia.home import Home
from sonia.kit.process_memory import tree_uss
from sonia.kit.subreaper import become_subreaper
from sonia.supervisor.control import processes_with_marker
from sonia.supervisor.state import read_json, state_file

__all__ = [
    "ServiceSample",
    "become_subreaper",
    "orphans",
    "read_pid_file",
    "sample_services",
    "wal_left",
    "zombies_and_reap",
]

MemoryReader = Callable[[int], int | None]
"""pid -> USS in bytes of its process tree, or None when it cannot be read."""



@dataclass(frozen=True)
class ServiceSample:
    """One service as seen at a window's close; None is a reading that failed."""

    uss_bytes: int | None = None
    uptime_s: float | None = None
    restarts: int | None = None


def read_pid_file(home: Home, service: str) -> int | None:
    """The pid the service's pid file names; None while it restarts or when unreadable."""
    try:
        return int((home.run / f"{service}.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        else None


def sample_services(home: Home, services: Sequence[str], *,
                    read_memory: MemoryReader = tree_uss) -> dict[str, ServiceSample]:
    """Memory, uptime and restart count of each service right now.

    Uptime is None when the supervisor does not list the service as running (it
    is between an exit and its restart) or its state file cannot be read;
    restarts is None only when the state file cannot be read.
    """
    state = read_json(state_file(home))
    listed = state.get("services") if isinstance(state, dict) else None
    now = time.time()
    found: dict[str, ServiceSample] = {}
    for name in services:
        pid = read_pid_file(home, name)
        uss = read_memory(pid) if pid is not None else None
        info = listed.get(name) if isinstance(listed, dict) else None
        uptime = restarts = None
        if isinstance(info, dict):
            count = _number(info.get("restarts"))
            restarts = int(count) if count is not None else None
            started = _number(info.get("started_at"))
            if info.get("state") == "running" and info.get("pid") and started is not None:
                uptime = max(0.0, now - started)
        found[name] = ServiceSample(uss_bytes=uss, uptime_s=uptime, restarts=restarts)
    return found

def zombies_and_reap() -> list[int]:
    """Our descendants that are zombies right now; they are counted, then reaped."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                found.append(child.pid)
        except psutil.Error:
            continue
    for pid in found:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
    return found


def orphans(marker: str) -> list[int]:
    """Live processes that carry the run marker after the stack was stopped."""
    return [p.pid for p in processes_with_marker(marker)]


def wal_left(data_dir: Path) -> list[str]:
    """Databases whose write-ahead log still holds frames after a clean stop."""
    left = []
    for wal in sorted(data_dir.glob("*.db-wal")):
        if wal.stat().st_size > 0:
            left.append(wal.name)
    return left
