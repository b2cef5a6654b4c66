"""`sonia chat --tools`: approvals shown inline and answered in place, through a pipe."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from sonia.testing import FreshStack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FreshStack]:
    with FreshStack(tmp_path_factory.mktemp("chat-tools-home")) as s:
        s.up()
        yield s


def sonia_chat(stack: FreshStack, lines: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("SONIA_API_KEY", "SONIA_APPROVER_KEY")}
    env["SONIA_API_KEY"] = stack.user_key
    return subprocess.run([sys.executable, "-m", "sonia", "chat", "--home", str(stack.root),
                           "--tools", *args], input=lines, capture_output=True, text=True,
                          timeout=120, env=env)


def test_an_approver_approves_in_place_and_the_turn_resumes(stack: FreshStack) -> None:
    target = stack.home.workspace / "cli.txt"
    result = sonia_chat(stack, "write 'from the terminal' to cli.txt\na\n/quit\n",
                        "--approver-key", stack.approver_key)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert 'sonia wants to run file.write {"path": "cli.txt", "content": "from the terminal"}' \
        in out
    assert "tier 2" in out and "executed" in out
    assert "sonia> Wrote cli.txt.  [builtin]" in out
    assert target.read_text() == "from the terminal"


def test_a_denial_in_place_leaves_the_disk_alone(stack: FreshStack) -> None:
    result = sonia_chat(stack, "delete important.txt\nd\n", "--approver-key",
                        stack.approver_key)
    assert result.returncode == 0, result.stderr
    assert "sonia wants to run file.delete" in result.stdout and "denied" in result.stdout
    assert "did not run" in result.stdout


def test_without_an_approver_key_the_request_is_shown_and_left_pending(
        stack: FreshStack) -> None:
    result = sonia_chat(stack, "write x to later.txt\n")
    assert result.returncode == 0, result.stderr
    assert "waiting for an approver (action act_" in result.stdout
    assert not (stack.home.workspace / "later.txt").exists()


def test_a_read_answers_at_once(stack: FreshStack) -> None:
    (stack.home.workspace / "hello.txt").write_text("hi there\n")
    result = sonia_chat(stack, "read hello.txt\n")
    assert result.returncode == 0, result.stderr
    assert "sonia> hello.txt says: hi there" in result.stdout
    assert "wants to run" not in result.stdout
