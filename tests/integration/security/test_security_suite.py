"""The security gate's adversarial suite, case by case, against a live stack.

The same `Case` objects the gate runs (`sonia.gates.security.cases`), so a
regression fails `make test` before it fails a release. Configuration refusals
are tested in tests/integration/foundation/test_config_refusals.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from sonia.gates.security.cases import CASES, LATE_CASES
from sonia.gates.security.corpus import corpus_dir, load_payloads, run_corpus
from sonia.gates.security.probe import Probe
from sonia.gates.security.types import Case, run_case
from sonia.testing import FreshStack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def probe(stack: FreshStack) -> Iterator[Probe]:
    prepared = Probe.prepare(stack)
    try:
        yield prepared
    finally:
        prepared.close()


@pytest.mark.parametrize("case", [*CASES, *LATE_CASES], ids=lambda case: case.id)
def test_the_attempt_is_refused_with_its_expected_code(probe: Probe, case: Case) -> None:
    result = run_case(case, probe)
    assert result.passed, f"{case.id}: {result.why}\nsent {result.sent}\ngot {result.got}"


def test_a_sample_of_the_public_corpus_is_refused_or_harmless(probe: Probe) -> None:
    root = corpus_dir()
    if not root.is_dir():
        pytest.skip(f"the corpus is not present at {root}")
    payloads = load_payloads(root, stride=250)
    rows = asyncio.run(run_corpus(probe, payloads, concurrency=8))
    assert len(rows) == len(payloads) > 100
    failures = [row for row in rows if not row["passed"]]
    assert not failures, failures[:5]
