"""Running a command plan: clean environment, workspace cwd, limits, deadlines, caps.

Plans are built directly here (the allowlist is tested with EVA), so the tests can
use `sh` to make children, grandchildren and noise. Each behaviour is checked at
the rlimits level and, where this machine's probe says bubblewrap works, at the
bwrap level too.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sonia.actions.commands import CommandPlan
from sonia.errors import ApiError, ConfigError, Timeout
from sonia.redact import Redactor
from sonia.services.openclaw.execution import Executor, SandboxLevel, detect_sandbox
from sonia.services.openclaw.paths import Workspace

SH = "/usr/bin/sh" if os.path.exists("/usr/bin/sh") else "/bin/sh"


def plan(binary: str, *args: str) -> CommandPlan:
    return CommandPlan(binary=binary, argv=[os.path.basename(binary), *args], tier=1)


def sh(script: str) -> CommandPlan:
    return plan(SH, "-c", script)


def level_for(name: str) -> SandboxLevel:
    if name == "rlimits":
        return detect_sandbox("rlimits", allow_unsandboxed=True)
    level = detect_sandbox("auto")
    if level.level != "bwrap":
        pytest.skip(f"bubblewrap does not work here: {level.reason}")
    return level


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[Workspace]:
    root = tmp_path / "workspace"
    (root / "sub").mkdir(parents=True)
    with Workspace(root) as ws:
        yield ws


@pytest.fixture(params=["rlimits", "bwrap"])
def executor(request: pytest.FixtureRequest, workspace: Workspace) -> Executor:
    return Executor(workspace, level_for(request.param), timeout_seconds=10,
                    max_output_bytes=4096, redactor=Redactor(["service-token-0123456789"]))


def processes_with(marker: str) -> list[int]:
    """Pids whose command line mentions `marker` (zombies have none and are left out)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline:
            found.append(int(entry))
    return found


def wait_until_gone(marker: str, seconds: float = 5.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while (left := processes_with(marker)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return left


def test_the_child_environment_is_only_the_allowlist(executor: Executor) -> None:
    result = executor.run(plan("/usr/bin/printenv"))
    env = dict(line.split("=", 1) for line in result.stdout.splitlines())
    root = executor.workspace.root
    assert env == {"LANG": "C.UTF-8", "PATH": "/usr/bin:/bin", "HOME": root, "PWD": root,
                   "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null",
                   "GIT_ATTR_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0",
                   "GIT_CEILING_DIRECTORIES": os.path.dirname(root)}
    assert result.exit_code == 0 and not result.timed_out
    assert result.sandbox == executor.sandbox.as_dict()


def test_the_working_directory_is_inside_the_workspace(executor: Executor) -> None:
    result = executor.run(plan("/usr/bin/pwd"), cwd="sub")
    assert result.stdout.strip() == os.path.join(executor.workspace.root, "sub")


def test_the_working_directory_goes_through_the_path_sandbox(
    executor: Executor, tmp_path: Path,
) -> None:
    (Path(executor.workspace.root) / "out").symlink_to(tmp_path)
    for cwd, code in (("../", "PATH_OUTSIDE_SANDBOX"), ("out", "SYMLINK_DENIED"),
                      ("missing", "NOT_FOUND"), ("", "INVALID_PATH")):
        with pytest.raises(ApiError) as info:
            executor.run(plan("/usr/bin/pwd"), cwd=cwd)
        assert info.value.code == code


def test_arguments_are_literal_never_a_shell(executor: Executor) -> None:
    hostile = "; echo pwned $(id) `id` && cat /etc/passwd | tee x"
    result = executor.run(plan("/usr/bin/echo", hostile))
    assert result.stdout == hostile + "\n"
    assert not (Path(executor.workspace.root) / "x").exists()


def test_exit_code_and_stderr_are_reported(executor: Executor) -> None:
    result = executor.run(sh("echo out; echo oops >&2; exit 3"))
    assert (result.exit_code, result.stdout, result.stderr) == (3, "out\n", "oops\n")


def test_rlimits_are_in_force(executor: Executor) -> None:
    result = executor.run(sh("ulimit -n; ulimit -v; ulimit -c"))
    assert result.stdout.split() == ["256", str((1 << 30) // 1024), "0"]


@pytest.mark.timeout(30)
def test_a_timeout_kills_the_whole_process_group(executor: Executor) -> None:
    marker = f"{secrets.randbelow(10**6) + 1000}.{secrets.randbelow(10**6)}"
    started = time.monotonic()
    with pytest.raises(Timeout) as info:
        executor.run(sh(f"sleep {marker} & echo started; sleep {marker}; echo never"),
                     timeout=0.5)
    assert time.monotonic() - started < 5
    assert info.value.status == 504 and info.value.code == "TIMEOUT"
    partial = info.value.extra["result"]
    assert partial["timed_out"] and partial["exit_code"] < 0
    assert partial["stdout"] == "started\n"
    assert wait_until_gone(marker) == [], "the grandchild outlived the timeout"


@pytest.mark.timeout(30)
def test_background_leftovers_are_killed_when_the_command_exits(executor: Executor) -> None:
    marker = f"{secrets.randbelow(10**6) + 1000}.{secrets.randbelow(10**6)}"
    result = executor.run(sh(f"sleep {marker} & echo started"))
    assert result.stdout == "started\n" and not result.timed_out
    assert wait_until_gone(marker) == [], "a background child outlived its command"


@pytest.mark.timeout(30)
def test_output_is_capped_and_the_command_stopped(executor: Executor) -> None:
    started = time.monotonic()
    result = executor.run(plan("/usr/bin/yes", "spam"))
    assert time.monotonic() - started < 5
    assert result.stdout_truncated and not result.stderr_truncated
    assert result.stdout.endswith("\n[output truncated at 4096 bytes]")
    assert len(result.stdout.encode()) < 4096 + 64
    assert not result.timed_out


def test_output_is_redacted(executor: Executor) -> None:
    token = "ghp_" + "A1b2" * 9
    (Path(executor.workspace.root) / "notes.txt").write_text(
        f"github {token}\nour token service-token-0123456789 here\n")
    result = executor.run(plan("/usr/bin/cat", "notes.txt"))
    assert token not in result.stdout and "service-token-0123456789" not in result.stdout
    assert "[REDACTED:github_token]" in result.stdout
    assert "[REDACTED:sonia_secret]" in result.stdout


def test_bad_plans_are_invalid_commands(executor: Executor) -> None:
    for bad in (CommandPlan("usr/bin/true", ["true"], 1), CommandPlan("/usr/bin/true", [], 1),
                CommandPlan("/usr/bin/echo", ["echo", "a\x00b"], 1)):
        with pytest.raises(ApiError) as info:
            executor.run(bad)
        assert info.value.code == "INVALID_COMMAND"


def test_a_missing_binary_is_an_invalid_command(workspace: Workspace) -> None:
    executor = Executor(workspace, detect_sandbox("rlimits", allow_unsandboxed=True))
    with pytest.raises(ApiError) as info:
        executor.run(plan("/usr/bin/no-such-binary-here"))
    assert info.value.code == "INVALID_COMMAND"


# --- the sandbox level is reported truthfully ------------------------------------------
def test_a_claimed_bwrap_level_really_has_no_network_and_no_outside(
    workspace: Workspace, tmp_path: Path,
) -> None:
    level = level_for("bwrap")
    assert level.network == "none"
    (tmp_path / "outside.txt").write_text("OUTSIDE")
    executor = Executor(workspace, level)
    net = executor.run(plan("/usr/bin/cat", "/proc/net/dev"))
    interfaces = {line.split(":")[0].strip() for line in net.stdout.splitlines()[2:]}
    assert interfaces <= {"lo"}
    seen = executor.run(plan("/usr/bin/cat", str(tmp_path / "outside.txt")))
    assert seen.exit_code != 0 and "OUTSIDE" not in seen.stdout


def test_rlimits_is_reported_as_such() -> None:
    level = detect_sandbox("rlimits", allow_unsandboxed=True)
    assert level.as_dict() == {"level": "rlimits", "network": "host",
                               "reason": "configured: openclaw.sandbox = rlimits",
                               "runs_as_uid": str(level.runs_as)}
    with pytest.raises(ConfigError) as info:
        detect_sandbox("rlimits")
    assert info.value.key == "openclaw.allow_unsandboxed"


def test_a_bwrap_that_fails_its_probe_is_never_claimed() -> None:
    level = detect_sandbox("auto", bwrap="/usr/bin/false")
    assert level.level == "unavailable" and "probe failed" in level.reason
    level = detect_sandbox("auto", bwrap="/usr/bin/false", allow_unsandboxed=True)
    assert level.level == "rlimits" and level.network == "host"
    assert "fell back" in level.reason and "probe failed" in level.reason
    with pytest.raises(ConfigError) as info:
        detect_sandbox("bwrap", bwrap="/usr/bin/false")
    assert info.value.key == "openclaw.sandbox"


def test_an_unknown_preference_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        detect_sandbox("docker")
