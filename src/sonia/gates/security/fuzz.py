"""API fuzzing with schemathesis: every route of every service, against the live stack.

Each service's OpenAPI schema is built in-process from the same app factory the
service runs (the services do not publish it: only the five health routes are
open), then schemathesis generates valid and invalid requests for every
operation and sends them to the live service with credentials that the route
accepts (an allowed caller's service token; an approver key at the gateway).
A finding is a server error (5xx), a response that breaks the schema, or
invalid input that was accepted. Zero findings is the bar.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import hypothesis.errors
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hsettings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup, ServerError
from schemathesis.openapi import from_dict
from schemathesis.specs.openapi.checks import (
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from sonia import SERVICES
from sonia.gates.security.fuzz_seeds import Seed, seed_of, seeds_for
from sonia.services.runner import build_app
from sonia.testing import FreshStack


@schemathesis.check
def negative_data_refused(ctx: Any, response: Any, case: Any) -> bool | None:
    """schemathesis' negative-data check, with 413 counted as a refusal: an invalid body
    over the size limit is refused before anyone parses it, which is the right answer."""
    if response.status_code == 413:
        return True
    result: bool | None = negative_data_rejection(ctx, response, case)
    return result


CHECKS = [not_a_server_error, response_schema_conformance, negative_data_refused]
"""What a response must satisfy. Undocumented status codes are not findings here:
every route may answer the problem+json codes of DESIGN.md."""

SKIP_OPERATIONS = frozenset({"GET /v1/sessions/{session_id}/stream"})
"""WebSocket upgrades are exercised by their own tests, not by HTTP fuzzing."""

del status_code_conformance  # deliberately not used, see CHECKS


CHECK_FAILED = (Exception, FailureGroup)
"""What a failed check raises: one failure (an Exception), or several at once in a
FailureGroup, which is a BaseExceptionGroup and escapes `except Exception` (a 504 with a
schema mismatch once crashed a release run instead of being counted)."""


@dataclass
class Finding:
    service: str
    operation: str
    mode: str
    problem: str
    status: int | None
    request: str

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


@dataclass
class FuzzReport:
    operations: int = 0
    requests: int = 0
    server_errors: int = 0
    findings: list[Finding] = field(default_factory=list)
    per_service: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    """How many answers of each status class, so a run that only met 401s shows it."""
    per_operation: dict[str, dict[str, int]] = field(default_factory=dict)
    """"service METHOD path" -> {"2xx": n, "4xx": n}: answers that passed every check.
    An operation without both never had its logic reached, or never refused bad
    input: the judge makes such a run INVALID, naming it."""

    def found(self, service: str, label: str, mode: str, case: Any, exc: BaseException,
              seen: set[str] | None = None) -> None:
        """Record what a failed check raised (once per first line when `seen` is given);
        a server error among its failures counts as one."""
        failures = exc.exceptions if isinstance(exc, BaseExceptionGroup) else (exc,)
        status = getattr(getattr(exc, "response", None), "status_code", None)
        problem = "; ".join(f"{type(f).__name__}: {f}" for f in failures)[:600]
        key = problem.split("\n", 1)[0]
        if seen is None or key not in seen:
            if seen is not None:
                seen.add(key)
            self.findings.append(Finding(service, label, mode, problem, status, _curl(case)))
        if any(isinstance(f, ServerError) or "Server error" in str(f) for f in failures) or (
                status is not None and status >= 500):
            self.server_errors += 1

    def to_dict(self) -> dict[str, Any]:
        return {"operations": self.operations, "requests": self.requests,
                "server_errors": self.server_errors, "per_service": self.per_service,
                "statuses": self.statuses, "per_operation": self.per_operation,
                "findings": [f.to_dict() for f in self.findings[:200]]}


def headers_for(stack: FreshStack, service: str, callers: dict[str, frozenset[str]],
                path: str) -> dict[str, str]:
    """The credentials the fuzzer presents to `service` at `path` (an allowed caller)."""
    allowed = sorted(callers.get(path, frozenset()))
    if service == "gateway" and not allowed:  # a public route: a person's key
        return {"Authorization": f"Bearer {stack.approver_key}"}
    caller = allowed[0] if allowed else "gateway"
    return {"X-Service-Token": stack.token(caller)}


def _has_inputs(operation: Any) -> bool:
    """Whether the operation takes anything a fuzzer could make invalid."""
    raw = operation.definition.raw if hasattr(operation, "definition") else {}
    return bool(raw.get("parameters") or raw.get("requestBody"))


def fuzz_stack(stack: FreshStack, *, max_examples: int, seed: int = 0,
               services: tuple[str, ...] = SERVICES, seeded: bool = True) -> FuzzReport:
    """Fuzz every operation; with `seeded`, each first gets one valid request that
    reaches its logic (`security_fuzz_seeds`)."""
    report = FuzzReport()
    session = requests.Session()
    callers_of = {service: dict(build_app(service, stack.home)[0].state.callers)
                  for service in services}
    seeds = seeds_for(stack, lambda service, path: headers_for(
        stack, service, callers_of[service], path)) if seeded else {}
    for service in services:
        app, _ = build_app(service, stack.home)
        callers: dict[str, frozenset[str]] = dict(app.state.callers)
        schema = from_dict(app.openapi())
        base_url = stack.url(service)
        count_before = report.requests
        for result in schema.get_all_operations():
            if not hasattr(result, "ok"):  # the schema itself is broken: that is a finding
                report.findings.append(Finding(service, "(schema)", "-",
                                               f"invalid schema: {result.err()}", None, ""))
                continue
            operation = result.ok()
            label = f"{operation.method.upper()} {operation.path}"
            if label in SKIP_OPERATIONS or operation.path in {"/livez", "/readyz", "/healthz",
                                                               "/metrics", "/version"}:
                continue
            report.operations += 1
            report.per_operation[f"{service} {label}"] = {"2xx": 0, "4xx": 0,
                                                          "inputs": int(_has_inputs(operation))}
            headers = headers_for(stack, service, callers, operation.path)
            chosen = seed_of(seeds, f"{service} {label}")
            if chosen:
                _send_seed(report, session, service, label, operation, chosen, base_url,
                           headers)
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                _fuzz_operation(report, session, service, label, operation, mode, base_url,
                                headers, max_examples, seed)
        report.per_service[service] = report.requests - count_before
    return report


def _record(report: FuzzReport, service: str, label: str, mode: str, case: Any,
            call: Any) -> None:
    """Send one case through `call`; count its status, or record the finding it raised."""
    report.requests += 1
    try:
        response = call()
    except CHECK_FAILED as exc:  # a failed check is a finding, not a crash of the gate
        report.found(service, label, mode, case, exc)
        return
    status = response.status_code
    report.statuses[str(status)] = report.statuses.get(str(status), 0) + 1
    kind = f"{status // 100}xx"
    if kind in ("2xx", "4xx"):
        report.per_operation[f"{service} {label}"][kind] += 1


def _send_seed(report: FuzzReport, session: requests.Session, service: str, label: str,
               operation: Any, seed: Seed, base_url: str, headers: dict[str, str]) -> None:
    """The operation's one valid request (made real by `seeds_for`), checked like any case."""
    extra: dict[str, Any] = {"body": seed["body"], "media_type": "application/json"} \
        if "body" in seed else {}
    case = operation.Case(path_parameters=seed.get("path"), query=seed.get("query"), **extra)
    _record(report, service, label, "seed", case, lambda: case.call_and_validate(
        base_url=base_url, session=session, headers=headers, checks=CHECKS, timeout=30))


def _curl(case: Any) -> str:
    """The case as a curl command, for the finding; a body no shell can carry (a lone
    surrogate) is said, not allowed to crash the gate."""
    try:
        return str(case.as_curl_command())[:600]
    except (UnicodeError, ValueError) as exc:
        return f"(no curl form: {type(exc).__name__})"


def _fuzz_operation(report: FuzzReport, session: requests.Session, service: str, label: str,
                    operation: Any, mode: GenerationMode, base_url: str,
                    headers: dict[str, str], max_examples: int, seed: int) -> None:
    seen: set[str] = set()

    @hsettings(max_examples=max_examples, deadline=None, database=None, derandomize=True,
               phases=[Phase.explicit, Phase.generate],
               suppress_health_check=list(HealthCheck), report_multiple_bugs=False)
    @given(case=operation.as_strategy(generation_mode=mode))
    @hypothesis.seed(seed)
    def one(case: Any) -> None:
        report.requests += 1
        try:
            response = case.call_and_validate(base_url=base_url, session=session,
                                              headers=headers, checks=CHECKS, timeout=30)
            status = response.status_code
            report.statuses[str(status)] = report.statuses.get(str(status), 0) + 1
            kind = f"{status // 100}xx"
            counts = report.per_operation[f"{service} {label}"]
            if kind in ("2xx", "4xx"):
                counts[kind] += 1
        except CHECK_FAILED as exc:  # a failed check is a finding, not a crash of the gate
            report.found(service, label, mode.value, case, exc, seen)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            one()
        except hypothesis.errors.Unsatisfiable:
            pass  # nothing to vary (e.g. no parameters to make invalid)
