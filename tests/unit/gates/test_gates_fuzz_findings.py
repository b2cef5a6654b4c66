"""Fuzzing counts what a failed check raised as a finding; it never crashes the gate.

schemathesis raises one failure as an Exception, but several at once as a
FailureGroup, a BaseExceptionGroup that `except Exception` lets through: a 504 that
also broke the schema once ended a release run of the security gate with no verdict.
"""

from __future__ import annotations

from typing import Any

from schemathesis.core.failures import FailureGroup, ServerError

from sonia.gates.security.fuzz import FuzzReport, _record


class _Case:
    def as_curl_command(self) -> str:
        return "curl -X GET http://127.0.0.1/v1/audit"


def _raises(exc: BaseException) -> Any:
    def call() -> Any:
        raise exc
    return call


def _server_error() -> ServerError:
    return ServerError(operation="GET /v1/audit", status_code=504, title="Server error")


def test_several_failures_at_once_are_a_finding_and_a_server_error() -> None:
    report = FuzzReport()
    group = FailureGroup([_server_error(), ServerError(operation="GET /v1/audit",
                                                       status_code=504, message="again")])
    _record(report, "gateway", "GET /v1/audit", "seed", _Case(), _raises(group))
    assert report.server_errors == 1 and len(report.findings) == 1
    assert report.findings[0].request.startswith("curl -X GET")


def test_one_failure_is_counted_the_same_way() -> None:
    report = FuzzReport()
    _record(report, "gateway", "GET /v1/audit", "seed", _Case(), _raises(_server_error()))
    assert report.server_errors == 1 and len(report.findings) == 1
