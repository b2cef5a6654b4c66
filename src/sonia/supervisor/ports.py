"""Choosing a base port whose six service ports are all free, so stacks never collide."""

from __future__ import annotations

import socket

from sonia.config import PORT_OFFSETS
from sonia.errors import SupervisorError
from sonia.supervisor.control import port_free

SPAN = max(PORT_OFFSETS.values())


def free_base_port(bind: str = "127.0.0.1", attempts: int = 200) -> int:
    """A base port p such that p + every service offset is free right now.

    Candidates come from the kernel (bind to port 0), so two callers at the same
    time are very unlikely to pick the same one; each is then checked whole.
    """
    for _ in range(attempts):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((bind, 0))
            base = int(sock.getsockname()[1])
        if base + SPAN > 65_000 or base < 1024:
            continue
        if all(port_free(bind, base + off) for off in PORT_OFFSETS.values()):
            return base
    raise SupervisorError(f"no free base port found after {attempts} attempts")
