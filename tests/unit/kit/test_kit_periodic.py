"""Periodic work: a failed round does not end it; a closed database does, quietly."""

from __future__ import annotations

import asyncio
import sqlite3

from sonia.kit.periodic import Periodic


def test_a_failed_round_is_followed_by_the_next_and_a_closed_database_ends_it() -> None:
    rounds: list[str] = []

    async def work() -> None:
        rounds.append("round")
        if len(rounds) == 1:
            raise RuntimeError("database busy")
        if len(rounds) == 3:
            raise sqlite3.ProgrammingError("Cannot operate on a closed database.")

    async def main() -> None:
        periodic = Periodic("test work", 0.001, work, first_now=True)
        periodic.start()
        assert periodic._task is not None
        await asyncio.wait_for(asyncio.shield(periodic._task), timeout=10)
        await periodic.stop()

    asyncio.run(main())
    assert len(rounds) == 3, "it went on after the failure and stopped at the closed database"


def test_stop_cancels_a_waiting_task() -> None:
    async def main() -> None:
        periodic = Periodic("idle work", 3600, _nothing)
        periodic.start()
        await asyncio.sleep(0)
        await periodic.stop()
        assert periodic._task is None

    asyncio.run(main())


async def _nothing() -> None:
    return None
