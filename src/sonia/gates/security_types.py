"""An adversarial case, and the record of running one.

A case knows its id, its category, what it attempts, the status and code the
stack must answer, and a function that attempts it against a `Probe`. Running
it yields a `CaseResult`: what was sent, what came back, and whether it passed
(the expected status and code, no canary or leak in the answer, and the case's
own extra checks).
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sonia.gates.security_probe import Observed, Probe

__all__ = ["Case", "CaseResult", "run_case"]


@dataclass(frozen=True)
class Case:
    id: str
    category: str
    description: str
    expect_status: int
    expect_code: str | None
    attempt: Callable[[Probe], Observed] = field(repr=False, compare=False)


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

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "category": self.category, "description": self.description,
                "sent": self.sent, "expected": self.expected, "got": self.got,
                "passed": self.passed, "why": self.why, "seconds": self.seconds}


def run_case(case: Case, probe: Probe) -> CaseResult:
    """Attempt `case`; an exception in the attempt is a failed case, never a crash."""
    start = time.monotonic()
    expected = {"status": case.expect_status, "code": case.expect_code}
    try:
        seen = case.attempt(probe)
    except Exception as exc:  # the attempt itself broke: record it as a failure
        return CaseResult(case.id, case.category, case.description, {}, expected,
                          {"error": f"{type(exc).__name__}: {exc}",
                           "trace": traceback.format_exc()[-1500:]},
                          False, f"the attempt raised {type(exc).__name__}: {exc}",
                          round(time.monotonic() - start, 3))
    got = {"status": seen.status, "code": seen.code, "body": seen.body, **seen.extra}
    why = ""
    if (seen.status, seen.code) != (case.expect_status, case.expect_code):
        why = (f"answered {seen.status} {seen.code}, expected {case.expect_status} "
               f"{case.expect_code}")
    if not seen.ok:
        why = "; ".join(filter(None, [why, seen.note or "an extra check failed"]))
    return CaseResult(case.id, case.category, case.description, seen.sent, expected, got,
                      not why, why, round(time.monotonic() - start, 3))
