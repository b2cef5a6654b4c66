"""The turn state machine of a realtime session.

    idle         -> listening     user input arrives (text or audio)
    listening    -> thinking      the utterance is complete; a reply is being made
    listening    -> idle          nothing to answer (empty input, input abandoned)
    thinking     -> speaking      the first words of the reply go out
    thinking     -> idle          generation failed before any word
    speaking     -> idle          the reply is complete (or failed mid-way)
    thinking     -> interrupted   control.interrupt (or new input: barge-in)
    speaking     -> interrupted   likewise
    interrupted  -> idle          the interruption is settled
    interrupted  -> listening     the new input that interrupted is taken

Only the transitions in `TRANSITIONS` are legal; anything else raises
`IllegalTransition` (an INVALID_ARGUMENT), because a transition the table does
not know means the session logic has a bug or a client sent an event out of
place, and both should be loud. Every transition is kept with its monotonic
time and reason, so a session can be explained (and interrupt latency measured)
after the fact.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sonia.errors import InvalidArgument


class TurnState(StrEnum):
    IDLE = "idle"
    LISTENING = "listening"
    THINKING = "thinking"
    SPEAKING = "speaking"
    INTERRUPTED = "interrupted"


TRANSITIONS: Mapping[TurnState, frozenset[TurnState]] = {
    TurnState.IDLE: frozenset({TurnState.LISTENING}),
    TurnState.LISTENING: frozenset({TurnState.THINKING, TurnState.IDLE}),
    TurnState.THINKING: frozenset({TurnState.SPEAKING, TurnState.INTERRUPTED, TurnState.IDLE}),
    TurnState.SPEAKING: frozenset({TurnState.IDLE, TurnState.INTERRUPTED}),
    TurnState.INTERRUPTED: frozenset({TurnState.IDLE, TurnState.LISTENING}),
}
"""Legal moves: listening->idle when there is nothing to answer (empty input),
thinking->idle when generation failed before any word."""


class IllegalTransition(InvalidArgument):
    """A move the table does not allow; `extra` names both states."""

    def __init__(self, current: TurnState, target: TurnState) -> None:
        allowed = ", ".join(sorted(TRANSITIONS[current])) or "nothing"
        super().__init__(
            f"cannot go from {current} to {target} (from {current}: {allowed})",
            extra={"from": str(current), "to": str(target)})
        self.current = current
        self.target = target


@dataclass(frozen=True)
class Transition:
    previous: TurnState
    state: TurnState
    at: float
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"previous": str(self.previous), "state": str(self.state), "at": self.at,
                "reason": self.reason}


class TurnMachine:
    """One session's current state and its recent history (bounded)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic,
                 history_limit: int = 256) -> None:
        self._clock = clock
        self._state = TurnState.IDLE
        self._history: deque[Transition] = deque(maxlen=history_limit)

    @property
    def state(self) -> TurnState:
        return self._state

    @property
    def history(self) -> tuple[Transition, ...]:
        return tuple(self._history)

    def can(self, target: TurnState) -> bool:
        return target in TRANSITIONS[self._state]

    def to(self, target: TurnState, reason: str = "") -> Transition:
        """Move to `target` or raise IllegalTransition (the state is then unchanged)."""
        if not self.can(target):
            raise IllegalTransition(self._state, target)
        transition = Transition(self._state, target, self._clock(), reason)
        self._state = target
        self._history.append(transition)
        return transition


__all__ = [
    "IllegalTransition", "TRANSITIONS", "Transition", "TurnMachine", "TurnState",
]
