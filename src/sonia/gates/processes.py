"""What the gates look for after a stop: zombies, orphans, bound ports, WAL files.

The gate process makes itself a child subreaper (prctl PR_SET_CHILD_SUBREAPER),
so any process of the run that loses its parent is re-parented to the gate
instead of init: an orphan cannot hide, and a zombie shows up as the gate's own
unreaped child.
"""

from __future__ import annotations

import os
from pathlib import Path

import psutil

from sonia.supervisor.control import processes_with_marker
from sonia.supervisor.process import become_subreaper

__all__ = ["become_subreaper", "orphans", "wal_left", "zombies_and_reap"]

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
