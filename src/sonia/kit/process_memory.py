"""How much memory a service really uses: the USS of its process and its children.

USS (unique set size) is what the process alone holds, what would be freed if it
exited: shared libraries do not count twice. Read by `sonia status`, the gates'
samplers and the gateway's system page, so all three report the same number.
"""

from __future__ import annotations

import psutil

__all__ = ["tree_uss"]


def tree_uss(pid: int) -> int | None:
    """USS of a process and all its descendants, in bytes; None when it cannot be read.

    A descendant that exited while we read is left out (its memory is gone), but
    one we may not read (access denied) makes the whole reading None: a partial
    sum, or a zero, would look like memory that shrank and hide a leak.
    """
    try:
        root = psutil.Process(pid)
        total = root.memory_full_info().uss
        children = root.children(recursive=True)
    except psutil.Error:
        return None
    for proc in children:
        try:
            total += proc.memory_full_info().uss
        except psutil.NoSuchProcess:
            continue
        except psutil.Error:
            return None
    return int(total)
