"""Issue 10's findings 1, 2, 3 and least privilege against the live stack, judged by effect.

Hostile content is put straight into the workspace, as a downloaded project would
be; a user key then proposes `shell.run` through the gateway. Nothing may leave a
marker, and no 8-character slice of the real grant key or of a planted canary may
appear in any answer.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from sonia.supervisor import control
from sonia.testing import FreshStack

pytestmark = pytest.mark.integration
GIT = shutil.which("git", path="/usr/bin:/bin")


def shell(gateway: httpx.Client, argv: list[str], cwd: str = ".") -> httpx.Response:
    return gateway.post("/v1/actions", json={"tool": "shell.run",
                                             "args": {"argv": argv, "cwd": cwd}})


def assert_no_slice(secret: str, text: str) -> None:
    for start in range(len(secret) - 8):
        assert secret[start:start + 8] not in text, secret[start:start + 8]


def grant_key_body(stack: FreshStack) -> str:
    lines = stack.home.grant_key_file.read_text().splitlines()
    return "".join(line for line in lines if not line.startswith("-----"))


def sandbox(stack: FreshStack) -> dict[str, Any]:
    checks: dict[str, Any] = httpx.get(stack.url("openclaw") + "/readyz",
                                       timeout=10).json()["checks"]
    return dict(checks["sandbox"])


def test_readiness_and_status_say_which_sandbox_and_uid(stack: FreshStack) -> None:
    found = sandbox(stack)
    assert found["level"] in ("bwrap", "rlimits", "unavailable") and found["reason"]
    if found["level"] == "bwrap" or os.geteuid() == 0:
        assert found["runs_as_uid"] == "65534"
    row = {r.name: r for r in control.status(stack.home)}["openclaw"]
    assert row.sandbox["level"] == found["level"]


@pytest.mark.skipif(GIT is None, reason="git is not installed")
def test_finding_1_a_downloaded_repository_cannot_run_code(
        stack: FreshStack, gateway: httpx.Client) -> None:
    assert GIT is not None
    proj = stack.home.workspace / "downloaded"
    proj.mkdir()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(proj), "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@l", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@l"}
    for args in (["init", "-q", "."], ["commit", "-q", "--allow-empty", "-m", "x"]):
        subprocess.run([GIT, *args], cwd=proj, env=env, check=True, capture_output=True)
    (proj / "a.txt").write_text("one\n")
    subprocess.run([GIT, "add", "a.txt"], cwd=proj, env=env, check=True)
    markers = [stack.home.workspace / "pwned", stack.home.root / "pwned"]
    touch = "touch " + " ".join(str(m) for m in markers)
    with open(proj / ".git" / "config", "a") as config:
        config.write(f'[filter "x"]\n\tclean = {touch}; cat\n'
                     f'[diff "x"]\n\ttextconv = {touch}; cat\n')
    (proj / ".gitattributes").write_text("* filter=x diff=x\n")
    (proj / "a.txt").write_text("two\n")
    for argv in (["git", "diff"], ["git", "status", "-v"], ["git", "status"]):
        answer = shell(gateway, argv, "downloaded")
        assert (answer.status_code, answer.json()["code"]) == (403, "POLICY_DENIED"), answer.text
    assert not any(m.exists() for m in markers)


def test_finding_2_a_link_below_the_cwd_does_not_leak_the_grant_key(
        stack: FreshStack, gateway: httpx.Client) -> None:
    (stack.home.workspace / "sub" / "-d").mkdir(parents=True)
    os.symlink(stack.home.grant_key_file, stack.home.workspace / "sub" / "link")
    os.symlink(stack.home.grant_key_file, stack.home.workspace / "sub" / "-d" / "link")
    key = grant_key_body(stack)
    for argv, cwd in ((["grep", "-v", "-e", "PRIVATE", "link"], "sub"),
                      (["head", "-c", "30", "--", "-d/link"], "sub"),
                      (["cat", "sub/link"], ".")):
        answer = shell(gateway, argv, cwd)
        assert (answer.status_code, answer.json()["code"]) == (403, "SYMLINK_DENIED"), answer.text
        assert_no_slice(key, answer.text)


def test_finding_3_recursive_grep_does_not_read_protected_files(
        stack: FreshStack, gateway: httpx.Client) -> None:
    canary = "CANARY-" + secrets.token_hex(16)
    proj = stack.home.workspace / "proj3"
    (proj / ".git").mkdir(parents=True)
    (proj / ".git" / "config").write_text(f"[x]\n\turl = postgres://admin:{canary}@db\n")
    (proj / ".env").write_text(f"PASSWORD={canary}\n")
    (proj / "readme.txt").write_text("hello\n")
    answer = shell(gateway, ["grep", "-r", "-H", "", "proj3"])
    assert_no_slice(canary, answer.text)
    if sandbox(stack)["level"] == "bwrap":
        assert answer.status_code == 200, answer.text
        assert "proj3/readme.txt:hello" in answer.json()["result"]["stdout"]
    else:
        assert answer.status_code in (403, 503), answer.text


def test_commands_never_run_as_root(stack: FreshStack, gateway: httpx.Client) -> None:
    canary = "CANARY-" + secrets.token_hex(16)
    private = stack.home.workspace / "private.txt"
    private.write_text(f"{canary}\n")
    os.chown(private, 4242, 4242)
    private.chmod(0o600)
    answer = shell(gateway, ["cat", "private.txt"])
    assert_no_slice(canary, answer.text)
    if answer.status_code == 200:
        assert answer.json()["result"]["exit_code"] != 0


def test_the_workspace_stays_writable_for_approved_writes(stack: FreshStack,
                                                         gateway: httpx.Client) -> None:
    answer = gateway.post("/v1/actions", json={"tool": "file.write",
                                               "args": {"path": "w.txt", "content": "x"}})
    assert answer.status_code == 202, answer.text
    approved = httpx.post(f"{stack.url('gateway')}/v1/actions/{answer.json()['id']}/approve",
                          headers=stack.approver_headers(), timeout=30)
    assert approved.status_code == 200, approved.text
    assert Path(stack.home.workspace / "w.txt").read_text() == "x"
