"""A circuit breaker per downstream service.

After `threshold` consecutive failures to reach a service (refused, reset, timed
out) the circuit opens: calls fail at once with 503 UNAVAILABLE instead of
piling up behind timeouts. After `cooldown` seconds one trial call is let
through (half-open); its success closes the circuit, its failure opens it again.
Answers from the service, even errors, count as success: it is reachable. A
call that ends with neither (its caller was cancelled) frees the trial slot.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sonia.errors import Unavailable


@dataclass
class CircuitBreaker:
    target: str
    threshold: int = 5
    cooldown: float = 2.0
    clock: Callable[[], float] = time.monotonic
    failures: int = 0
    opened_at: float | None = None
    trial_in_flight: bool = False
    opened_count: int = field(default=0)

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        if self.clock() - self.opened_at >= self.cooldown:
            return "half-open"
        return "open"

    def before_call(self) -> None:
        """Raise Unavailable when the circuit is open; admit one trial when half-open."""
        state = self.state
        if state == "closed":
            return
        if state == "half-open" and not self.trial_in_flight:
            self.trial_in_flight = True
            return
        raise Unavailable(f"{self.target} is unavailable (circuit open after "
                          f"{self.failures} consecutive failures)",
                          extra={"retry_after": max(1, int(self.cooldown))})

    def abandoned(self) -> None:
        """The call ended without an outcome (cancelled, or a bug): free the trial slot.

        Without this, a trial whose caller went away would hold the half-open slot
        for ever and the circuit would never close again.
        """
        self.trial_in_flight = False

    def succeeded(self) -> None:
        self.failures = 0
        self.opened_at = None
        self.trial_in_flight = False

    def failed(self) -> None:
        self.failures += 1
        self.trial_in_flight = False
        if self.opened_at is not None or self.failures >= self.threshold:
            if self.opened_at is None:
                self.opened_count += 1
            self.opened_at = self.clock()
