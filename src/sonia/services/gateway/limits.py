"""Per-key limits on proposals: how many may wait for approval, how fast bad ones may come.

Every proposal EVA refuses (400, 403, 404) still costs an audit row, so a key that
floods bad proposals would fill EVA's audit log and hold its single writer. A
`RefusalBudget` gives each key `per_minute` refusals, refilled continuously (a
token bucket); once a key has spent them, its proposals answer 429 RATE_LIMITED
with `Retry-After` before EVA is asked, so no audit row is written (issue 10,
finding 6). Other keys keep their own budget.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from sonia.errors import RateLimited

Clock = Callable[[], float]


class RefusalBudget:
    """A token bucket per key: `per_minute` tokens, one spent per refused proposal."""

    def __init__(self, per_minute: int, clock: Clock = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def _level(self, key_id: str) -> float:
        tokens, at = self._buckets.get(key_id, (self.capacity, self._clock()))
        now = self._clock()
        tokens = min(self.capacity, tokens + (now - at) * self.rate)
        self._buckets[key_id] = (tokens, now)
        if tokens >= self.capacity:
            del self._buckets[key_id]  # full: nothing to remember
        return tokens

    def check(self, key_id: str) -> None:
        """RateLimited (with retry_after) when the key has no refusal left to spend."""
        tokens = self._level(key_id)
        if tokens < 1.0:
            wait = max(1, math.ceil((1.0 - tokens) / self.rate))
            raise RateLimited(
                f"this key's proposals were refused too often (limit "
                f"{int(self.capacity)} a minute); retry in {wait} s",
                extra={"retry_after": wait})

    def spend(self, key_id: str) -> None:
        """Record one refused proposal of `key_id`."""
        tokens = self._level(key_id)
        self._buckets[key_id] = (max(0.0, tokens - 1.0), self._clock())


def check_pending(pending: int, cap: int) -> None:
    """RateLimited when a key already has `cap` actions waiting for approval."""
    if pending >= cap:
        raise RateLimited(f"this key has {pending} actions waiting for approval, the limit "
                          f"is {cap}; wait for a decision", extra={"retry_after": 5})


__all__ = ["RefusalBudget", "check_pending"]
