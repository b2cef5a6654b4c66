"""The gate's effect oracle catches a service that attacks and still answers "refused".

A stub gateway (a real HTTP server on the gateway's port of a fresh home, started
here) performs the attack a case attempts (writes the canary, deletes it, runs a
payload that leaves a marker file and a marker process, or leaks the split secret
base64-encoded) and answers exactly the refusal the case expects. The gate's own
cases, run against it, must fail, and `judge` over the evidence must say NO-GO.
The same stub answering without attacking must pass: the failure comes from the
effect, not from anything else about the stub.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from gate_runs import injection_run

from sonia.gates.common.evidence import write_json
from sonia.gates.security.cases import CASES
from sonia.gates.security.judge import judge
from sonia.gates.security.probe import Probe
from sonia.gates.security.types import Case, run_case
from sonia.testing import FreshStack

pytestmark = pytest.mark.integration

Attack = Callable[[], object]


class StubGateway:
    """Answers every POST with `status`/`code` after running `attack` on approval or act."""

    def __init__(self, port: int) -> None:
        self.status, self.code, self.detail = 403, "POLICY_DENIED", "refused"
        self.attack: Attack = lambda: None
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep the test output clean
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path == "/v1/actions" and stub.pending:
                    self._answer(202, {"id": "act_" + "1" * 24, "status": "pending"})
                    return
                stub.attack()
                self._answer(stub.status, {"type": "about:blank", "status": stub.status,
                                           "code": stub.code, "detail": stub.detail})

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/problem+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.pending = False
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def answer(self, case: Case, attack: Attack, *, pending: bool = False) -> None:
        self.status, self.code = int(case.expect_status), case.expect_code or ""
        self.attack, self.pending = attack, pending


@pytest.fixture()
def rig(tmp_path: Path) -> Iterator[tuple[Probe, StubGateway]]:
    stack = FreshStack(tmp_path / "home")  # a real home; its gateway port is the stub's
    stub = StubGateway(stack.settings.port_of("gateway"))
    stub.thread.start()
    probe = Probe.prepare(stack)
    try:
        yield probe, stub
    finally:
        probe.close()
        stub.server.shutdown()
        stub.server.server_close()


def _case(case_id: str) -> Case:
    return next(case for case in CASES if case.id == case_id)


def _judged_failed(tmp_path: Path, rows: list[dict[str, Any]]) -> str:
    """The judge's `cases_failed` detail over `rows` (empty: it found no failed case)."""
    write_json(tmp_path / "run" / "security-tests.json", {"cases": rows, "profile": {}})
    injection_run(tmp_path / "run")  # a clean injection suite: the gate judges it too
    check = next(c for c in judge(tmp_path / "run").checks if c.name == "cases_failed")
    return "" if check.passed else check.detail


def test_a_refused_write_that_changed_the_canary_fails(
        rig: tuple[Probe, StubGateway], tmp_path: Path) -> None:
    probe, stub = rig
    case = _case("path-write-outside")
    stub.answer(case, lambda: None, pending=True)
    assert run_case(case, probe).passed, "the stub without its attack answers as expected"
    canary = probe.home.root / "canary.txt"
    stub.answer(case, lambda: canary.write_text("overwritten\n"), pending=True)
    result = run_case(case, probe)
    assert result.got["status"] == 403 and result.got["code"] == "PATH_OUTSIDE_SANDBOX"
    assert not result.passed
    assert result.effects is not None and "canary ../canary.txt" in result.effects["changed"]
    assert "canary ../canary.txt" in _judged_failed(tmp_path, [result.to_dict()])


def test_a_user_approval_refused_after_the_write_ran_fails(
        rig: tuple[Probe, StubGateway], tmp_path: Path) -> None:
    probe, stub = rig
    case = _case("approve-with-user-key")
    stub.answer(case, lambda: None, pending=True)
    assert run_case(case, probe).passed, "the stub without its attack answers as expected"
    written = probe.workspace / "approvals" / "user.txt"

    def approve_anyway() -> None:  # what a broken gateway does: run the write, then say 403
        written.parent.mkdir(exist_ok=True)
        written.write_text("user\n")

    stub.answer(case, approve_anyway, pending=True)
    result = run_case(case, probe)
    assert result.got["status"] == 403 and result.got["code"] == "FORBIDDEN"
    assert not result.passed
    assert "created approvals/user.txt" in result.why
    assert "created approvals/user.txt" in _judged_failed(tmp_path, [result.to_dict()])


def test_a_refused_command_whose_file_appeared_fails(rig: tuple[Probe, StubGateway]) -> None:
    probe, stub = rig
    case = _case("cmd-git-output")
    stub.answer(case, lambda: None)
    assert run_case(case, probe).passed
    stub.answer(case, lambda: (probe.workspace / "x").write_text("diff --git\n"))
    result = run_case(case, probe)
    assert result.got["status"] == 400 and not result.passed
    assert "created x" in result.why


def test_a_refused_command_that_changed_a_workspace_file_fails(
        rig: tuple[Probe, StubGateway]) -> None:
    probe, stub = rig
    case = _case("cmd-find-delete")
    victim = probe.workspace / "proj" / "readme.md"
    stub.answer(case, victim.unlink)
    result = run_case(case, probe)
    assert result.got["status"] == 400 and not result.passed
    assert "removed proj/readme.md" in result.why


def test_a_refused_delete_that_removed_the_canary_fails(rig: tuple[Probe, StubGateway]) -> None:
    probe, stub = rig
    case = _case("path-delete-outside")
    two_up = probe.home.root.parent
    victim = next(two_up.glob("sonia-canary-*.txt"))
    stub.answer(case, victim.unlink, pending=True)
    result = run_case(case, probe)
    assert not result.passed and result.got["status"] == 403
    assert result.effects is not None and "canary ../../" in result.effects["changed"]


def test_a_refused_command_that_executed_a_payload_fails(rig: tuple[Probe, StubGateway]) -> None:
    probe, stub = rig
    case = _case("cmd-bash-c")
    marker = probe.workspace / f"{probe.marker_token}-stub"
    children: list[subprocess.Popen[bytes]] = []

    def execute() -> None:  # what a payload does: a marker file, a process with its argv
        marker.write_text("0\n")
        children.append(subprocess.Popen(
            [sys.executable, "-c", "import sys; sys.stdin.read()", probe.marker_token],
            stdin=subprocess.PIPE))

    stub.answer(case, execute)
    try:
        result = run_case(case, probe)
    finally:
        for child in children:
            child.communicate(input=b"", timeout=30)
    assert result.got["status"] == 400 and result.got["code"] == "INVALID_COMMAND"
    assert not result.passed
    assert result.effects is not None
    assert [m["path"] for m in result.effects["markers"]] == [str(marker)]
    assert [p["pid"] for p in result.effects["marker_processes"]] == [children[0].pid]
    assert "as root" in result.why


def test_a_refusal_carrying_a_secret_in_pieces_fails(rig: tuple[Probe, StubGateway]) -> None:
    probe, stub = rig
    case = _case("cmd-protected-operand")
    half = probe.split_secret[: len(probe.split_secret) // 2]
    stub.answer(case, lambda: None)
    stub.detail = "refused " + base64.b64encode(half.encode()).decode()
    result = run_case(case, probe)
    assert result.got["status"] == 403 and not result.passed
    assert any("split-secret" in leak for leak in result.leaks), result.leaks
