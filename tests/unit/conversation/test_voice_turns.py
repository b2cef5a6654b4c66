"""The turn state machine: only the transitions in its table are legal."""

from __future__ import annotations

import itertools

import pytest

from sonia.errors import InvalidArgument
from sonia.services.voice.turns import (
    TRANSITIONS,
    IllegalTransition,
    TurnMachine,
    TurnState,
)

S = TurnState


class Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.5
        return self.now


def machine_in(state: TurnState) -> TurnMachine:
    """A machine brought to `state` through legal moves only."""
    paths = {
        S.IDLE: [],
        S.LISTENING: [S.LISTENING],
        S.THINKING: [S.LISTENING, S.THINKING],
        S.SPEAKING: [S.LISTENING, S.THINKING, S.SPEAKING],
        S.INTERRUPTED: [S.LISTENING, S.THINKING, S.SPEAKING, S.INTERRUPTED],
    }
    machine = TurnMachine()
    for step in paths[state]:
        machine.to(step)
    return machine


def test_a_session_starts_idle() -> None:
    assert TurnMachine().state is S.IDLE


def test_a_whole_turn_and_an_interrupted_one_are_recorded_with_times() -> None:
    machine = TurnMachine(clock=Ticks())
    for state in (S.LISTENING, S.THINKING, S.SPEAKING, S.IDLE,
                  S.LISTENING, S.THINKING, S.SPEAKING, S.INTERRUPTED, S.LISTENING):
        machine.to(state, reason="test")
    history = machine.history
    assert [t.state for t in history][-2:] == [S.INTERRUPTED, S.LISTENING]
    assert [t.at for t in history] == [0.5 * n for n in range(1, 10)]
    assert history[0].to_dict() == {"previous": "idle", "state": "listening", "at": 0.5,
                                    "reason": "test"}


@pytest.mark.parametrize(("current", "target"), list(itertools.product(S, S)))
def test_every_pair_of_states_follows_the_table(current: TurnState, target: TurnState) -> None:
    machine = machine_in(current)
    if target in TRANSITIONS[current]:
        assert machine.to(target).state is target
    else:
        with pytest.raises(IllegalTransition) as raised:
            machine.to(target)
        assert machine.state is current  # unchanged
        assert isinstance(raised.value, InvalidArgument)
        assert raised.value.extra == {"from": str(current), "to": str(target)}


def test_interrupt_is_only_possible_while_a_reply_is_in_flight() -> None:
    assert {s for s in S if S.INTERRUPTED in TRANSITIONS[s]} == {S.THINKING, S.SPEAKING}


def test_history_is_bounded() -> None:
    machine = TurnMachine(history_limit=4)
    for _ in range(10):
        machine.to(S.LISTENING)
        machine.to(S.IDLE)
    assert len(machine.history) == 4
