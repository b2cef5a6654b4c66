"""The circuit breaker opens after repeated failures, then lets one trial through."""

from __future__ import annotations

import pytest

from sonia.errors import Unavailable
from sonia.kit.breaker import CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_threshold_and_fails_fast() -> None:
    clock = Clock()
    breaker = CircuitBreaker("memory", threshold=3, cooldown=2.0, clock=clock)
    for _ in range(3):
        breaker.before_call()
        breaker.failed()
    assert breaker.state == "open"
    with pytest.raises(Unavailable, match="circuit open"):
        breaker.before_call()


def test_half_open_admits_one_trial_and_closes_on_success() -> None:
    clock = Clock()
    breaker = CircuitBreaker("memory", threshold=1, cooldown=2.0, clock=clock)
    breaker.failed()
    clock.now += 2.0
    assert breaker.state == "half-open"
    breaker.before_call()
    with pytest.raises(Unavailable):
        breaker.before_call()  # a second caller while the trial runs
    breaker.succeeded()
    assert breaker.state == "closed"
    breaker.before_call()


def test_a_failed_trial_opens_the_circuit_again() -> None:
    clock = Clock()
    breaker = CircuitBreaker("eva", threshold=1, cooldown=1.0, clock=clock)
    breaker.failed()
    clock.now += 1.0
    breaker.before_call()
    breaker.failed()
    assert breaker.state == "open"
    assert breaker.opened_count == 1


def test_successes_reset_the_failure_count() -> None:
    breaker = CircuitBreaker("router", threshold=2, clock=Clock())
    breaker.failed()
    breaker.succeeded()
    breaker.failed()
    assert breaker.state == "closed"


def test_an_abandoned_trial_frees_the_half_open_slot() -> None:
    clock = Clock()
    breaker = CircuitBreaker("memory", threshold=1, cooldown=1.0, clock=clock)
    breaker.failed()
    clock.now += 1.0
    breaker.before_call()  # the trial's caller is cancelled before any outcome
    breaker.abandoned()
    breaker.before_call()  # the next caller may try again instead of failing for ever
    breaker.succeeded()
    assert breaker.state == "closed"
