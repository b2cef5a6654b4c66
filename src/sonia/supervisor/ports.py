"""Choosing a base port whose six service ports are all free, so stacks never collide.

Bases come from below the kernel's ephemeral range (`ip_local_port_range`): outgoing
connections take their source ports from that range, so a client's connection can never
hold a port a stack is about to bind. A process never hands out overlapping bases twice,
and callers running side by side (test workers) can each take their own share of the
range, so two of them never pick overlapping ports between the check and the bind.
"""

from __future__ import annotations

import random
import threading
from collections import deque
from pathlib import Path

from sonia.config import PORT_OFFSETS
from sonia.errors import SupervisorError
from sonia.supervisor.control import port_free

SPAN = max(PORT_OFFSETS.values())
LOWEST = 10_000
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")

_given: deque[int] = deque(maxlen=64)
"""The bases this process handed out lately: a stack picked but not yet bound is free to
every check, so the next pick keeps clear of it by its span."""
_lock = threading.Lock()


def usable_range() -> tuple[int, int]:
    """[low, high) of base ports: above LOWEST, and every service port below the
    ephemeral range (32768 when the kernel does not say)."""
    try:
        ephemeral_low = int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32_768
    high = ephemeral_low - SPAN
    if high - LOWEST < 100 * SPAN:  # an unusual kernel setting: fall back to a fixed band
        return 40_000, 60_000
    return LOWEST, high


def free_base_port(bind: str = "127.0.0.1", attempts: int = 200, *,
                   share: tuple[int, int] = (0, 1)) -> int:
    """A base port p such that p + every service offset is free right now.

    `share` is (index, count): the caller's slice of the usable range, for callers
    that run side by side and must never overlap (e.g. test worker 1 of 2).
    """
    index, count = share
    if not 0 <= index < count:
        raise ValueError(f"share {share} is not (index, count) with 0 <= index < count")
    low, high = usable_range()
    width = (high - low) // count
    low, high = low + index * width, low + (index + 1) * width
    for _ in range(attempts):
        base = random.randrange(low, high - SPAN)
        with _lock:
            if any(abs(base - given) <= SPAN for given in _given):
                continue
            if all(port_free(bind, base + off) for off in PORT_OFFSETS.values()):
                _given.append(base)
                return base
    raise SupervisorError(f"no free base port found after {attempts} attempts")
