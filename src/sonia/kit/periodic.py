"""Work a service does on a period (sweeps, pruning), as one task started and stopped
with the service.

A failed round is logged and the next one comes; a database closed under it
means the service is shutting down, and the task ends quietly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("sonia.kit.periodic")


class Periodic:
    """`work()` every `interval` seconds; the first round at once when `first_now`."""

    def __init__(self, name: str, interval: float, work: Callable[[], Awaitable[Any]], *,
                 first_now: bool = False) -> None:
        self.name = name
        self.interval = interval
        self.work = work
        self.first_now = first_now
        self._task: asyncio.Task[None] | None = None

    async def _loop(self) -> None:
        if not self.first_now:
            await asyncio.sleep(self.interval)
        while True:
            try:
                await self.work()
            except sqlite3.ProgrammingError:
                return  # the database was closed: the service is shutting down
            except Exception:  # one failed round (database busy) must not end the task
                log.exception("%s failed", self.name)
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


__all__ = ["Periodic"]
