"""Schemathesis fuzzing of every service's API finds no server error and no accepted bad input."""

from __future__ import annotations

import pytest

from sonia.gates.fresh_stack import FreshStack
from sonia.gates.fuzz import fuzz_stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_fuzzing_every_route_finds_nothing(stack: FreshStack) -> None:
    report = fuzz_stack(stack, max_examples=5)
    assert report.operations >= 30, "every service's routes are fuzzed"
    assert report.server_errors == 0
    assert report.findings == [], [f.to_dict() for f in report.findings[:5]]
    successes = sum(n for status, n in report.statuses.items() if status.startswith("2"))
    rejections = report.statuses.get("400", 0)
    assert successes > 0 and rejections > 0, (
        f"valid and invalid input both reached the routes: {report.statuses}")
