"""An adversarial case, and the record of running one.

A case knows its id, its category, what it attempts, the status and code the
stack must answer, and a function that attempts it against a `Probe`. Running
it yields a `CaseResult`: what was sent, what came back, what it left on disk
and in the process table (`security_effects`), and whether it passed, decided
by `security_judge.row_failures` over that very record: the judge that re-reads
the evidence later reaches the same answer.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from sonia.gates.security.judge import row_failures

if TYPE_CHECKING:
    from sonia.gates.security.probe import Observed, Probe

__all__ = ["Case", "CaseResult", "run_case"]


@dataclass(frozen=True)
class Case:
    id: str
    category: str
    description: str
    expect_status: int | str
    """A status, or "4xx" for any client error (what a lone surrogate may get)."""
    expect_code: str | None
    attempt: Callable[[Probe], Observed] = field(repr=False, compare=False)
    may_write: tuple[str, ...] = ()
    """Workspace paths (a path or a folder of them) the attempt may create or change:
    an approved write's own target. Every other change in the workspace is an effect."""


@dataclass(frozen=True)
class CaseResult:
    id: str
    category: str
    description: str
    sent: dict[str, Any]
    expected: dict[str, Any]
    got: dict[str, Any]
    passed: bool
    why: str
    seconds: float
    check: dict[str, Any] = field(default_factory=dict)
    """The case's own extra check: {ok, note}."""
    leaks: list[str] = field(default_factory=list)
    effects: dict[str, Any] | None = None
    """What the effect oracle saw (None: not watched, e.g. configuration cases)."""

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "category": self.category, "description": self.description,
                "sent": self.sent, "expected": self.expected, "got": self.got,
                "check": self.check, "leaks": self.leaks, "effects": self.effects,
                "passed": self.passed, "why": self.why, "seconds": self.seconds}


def run_case(case: Case, probe: Probe) -> CaseResult:
    """Attempt `case` between two snapshots of the effect oracle; judge the record.

    An exception in the attempt is a failed case, never a crash; its effects are
    still measured (an attempt may break after it did damage).
    """
    start = time.monotonic()
    expected = {"status": case.expect_status, "code": case.expect_code,
                "may_write": list(case.may_write)}
    before = probe.watch.snapshot()
    probe.set_up_trees = None
    sent: dict[str, Any] = {}
    check: dict[str, Any] = {"ok": True, "note": ""}
    leaks: list[str] = []
    leaks_before = len(probe.leak_log)
    try:
        seen = case.attempt(probe)
    except Exception as exc:  # the attempt itself broke: record it as a failure
        got: dict[str, Any] = {"error": f"{type(exc).__name__}: {exc}",
                               "trace": traceback.format_exc()[-1500:]}
    else:
        sent = seen.sent
        got = {"status": seen.status, "code": seen.code, "body": seen.body, **seen.extra}
        check = {"ok": seen.ok, "note": seen.note}
    leaks = sorted(set(probe.leak_log[leaks_before:]))
    if probe.set_up_trees is not None:  # the case planted what it attacks through
        before = replace(before, trees=probe.set_up_trees)
    effects = probe.watch.diff(before)
    row = {"expected": expected, "got": got, "check": check, "leaks": leaks,
           "effects": effects}
    why = "; ".join(row_failures(row))
    return CaseResult(case.id, case.category, case.description, sent, expected, got,
                      not why, why, round(time.monotonic() - start, 3), check, leaks, effects)
