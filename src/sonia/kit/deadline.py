"""Waiting on a condition with a deadline, instead of sleeping and hoping."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class DeadlineExceeded(AssertionError):
    """The condition did not hold in time (an AssertionError, so tests read naturally)."""


def wait_until(condition: Callable[[], T | None], *, timeout: float, interval: float = 0.05,
               what: str = "condition") -> T:
    """Poll `condition` until it returns a truthy value, and return that value."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = condition()
            if value:
                return value
        except Exception as exc:  # keep polling; report the last failure at the deadline
            last_error = exc
        if time.monotonic() >= deadline:
            suffix = f" (last error: {last_error!r})" if last_error else ""
            raise DeadlineExceeded(f"{what} did not hold within {timeout}s{suffix}")
        time.sleep(interval)
