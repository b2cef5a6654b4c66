"""Progress of a long gate run on the terminal (rich), or nothing when not wanted."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class GateProgress:
    def __init__(self, enabled: bool = True, console: Console | None = None) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(),
            console=console or Console(stderr=True), disable=not enabled, transient=False,
        )

    def task(self, description: str, total: float) -> TaskID:
        return self._progress.add_task(description, total=total)

    def advance(self, task: TaskID, amount: float = 1.0) -> None:
        self._progress.advance(task, amount)

    def update(self, task: TaskID, *, completed: float | None = None,
               description: str | None = None) -> None:
        self._progress.update(task, completed=completed, description=description)

    def __enter__(self) -> GateProgress:
        self._progress.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._progress.stop()
