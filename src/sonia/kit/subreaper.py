"""Becoming the reaper of one's orphaned descendants (Linux `PR_SET_CHILD_SUBREAPER`).

OpenClaw's sandboxes and the go-no-go gate's stacks leave grandchildren whose
parents exit first; a subreaper inherits them, so it can wait for them instead
of leaving zombies for init.
"""

from __future__ import annotations

import ctypes

__all__ = ["become_subreaper"]

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants (Linux); False elsewhere."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False
