"""The tool registry: tiers, argument schemas, and each tool end to end on a real workspace."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sonia.actions.commands import CommandPlan
from sonia.actions.tools import TOOL_SPECS, check_args
from sonia.errors import ApiError, InvalidCommand
from sonia.redact import Redactor
from sonia.services.openclaw.execution import Executor, detect_sandbox
from sonia.services.openclaw.paths import Workspace
from sonia.services.openclaw.tools import Toolbox

GITHUB_TOKEN = "ghp_" + "Zz90" * 9


def validate(argv: list[str], cwd: str = ".") -> CommandPlan:
    """A two-command allowlist standing in for EVA's."""
    if argv[0] == "ls" and all(arg in ("-a", "-1") for arg in argv[1:]):
        return CommandPlan("/usr/bin/ls", list(argv), tier=1)
    if argv[0] == "touch" and len(argv) == 2:
        return CommandPlan("/usr/bin/touch", list(argv), tier=3)
    raise InvalidCommand(f"{argv[0]!r} is not allowlisted")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "workspace"
    (root / "src" / "deep").mkdir(parents=True)
    (root / "src" / "a.py").write_text("import os\nneedle = 1\n")
    (root / "src" / "deep" / "b.txt").write_text("no\nthe needle again\nneedle\n")
    (root / "secret.env.txt").write_text(f"token: {GITHUB_TOKEN}\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "leak.txt").write_text("needle from outside\n")
    return root


@pytest.fixture
def toolbox(root: Path) -> Iterator[Toolbox]:
    with Workspace(root) as ws:
        yield Toolbox(
            ws,
            executor=Executor(ws, detect_sandbox("rlimits", allow_unsandboxed=True),
                              max_output_bytes=4096),
            validate_command=validate,
            redactor=Redactor(),
            max_file_bytes=4096,
            max_search_files=100,
        )


def code_of(toolbox: Toolbox, tool: str, args: dict[str, Any]) -> str:
    with pytest.raises(ApiError) as info:
        toolbox.run(tool, args)
    return info.value.code


# --- the registry -------------------------------------------------------------
def test_every_tool_has_its_design_tier_and_a_closed_schema(toolbox: Toolbox) -> None:
    tiers = {spec["name"]: spec["tier"] for spec in toolbox.describe()}
    assert tiers == {"file.read": 0, "file.list": 0, "file.search": 0, "shell.run": 1,
                     "file.write": 2, "file.delete": 3}
    for spec in TOOL_SPECS:
        assert spec.schema["type"] == "object"
        assert spec.schema["additionalProperties"] is False
        assert set(spec.schema["required"]) <= set(spec.schema["properties"])


def test_shell_run_takes_the_tier_of_its_plan(toolbox: Toolbox) -> None:
    assert toolbox.prepare("shell.run", {"argv": ["ls", "-a"]}) == (
        {"argv": ["ls", "-a"], "cwd": "."}, 1)
    assert toolbox.prepare("shell.run", {"argv": ["touch", "x"]})[1] == 3
    with pytest.raises(ApiError) as info:
        toolbox.prepare("shell.run", {"argv": ["sh", "-c", "id"]})
    assert info.value.code == "INVALID_COMMAND"


@pytest.mark.parametrize(("args", "problem"), [
    ([], "must be an object"),
    ({}, "missing arguments: 'path'"),
    ({"path": "a", "follow": True}, "unknown arguments: 'follow'"),
    ({"path": 7}, "must be of type string"),
    ({"path": ""}, "is empty"),
    ({"path": "a" * 5000}, "longer than 4096"),
])
def test_arguments_are_checked_against_the_schema(
    toolbox: Toolbox, args: Any, problem: str,
) -> None:
    with pytest.raises(ApiError) as info:
        toolbox.run("file.read", args)
    assert info.value.code == "INVALID_ARGUMENT"
    assert problem in info.value.detail


def test_schema_types_are_strict() -> None:
    schema = next(spec.schema for spec in TOOL_SPECS if spec.name == "file.search")
    assert check_args(schema, {"query": "x"}) == {"query": "x", "path": ".", "max_results": 100}
    for bad in ({"query": "x", "max_results": True}, {"query": "x", "max_results": 0},
                {"query": "x", "max_results": 1.5}, {"query": ["x"]}):
        with pytest.raises(ApiError) as info:
            check_args(schema, bad)
        assert info.value.code == "INVALID_ARGUMENT"


def test_an_unknown_tool_is_not_found(toolbox: Toolbox) -> None:
    assert code_of(toolbox, "file.chmod", {"path": "a"}) == "NOT_FOUND"


# --- file tools ---------------------------------------------------------------
def test_read_returns_text_and_redacts_secrets(toolbox: Toolbox) -> None:
    result = toolbox.run("file.read", {"path": "secret.env.txt"})
    assert result["content"] == "token: [REDACTED:github_token]\n"
    assert GITHUB_TOKEN not in str(result)


def test_read_is_capped_at_max_file_bytes(toolbox: Toolbox, root: Path) -> None:
    (root / "big.txt").write_bytes(b"x" * 5000)
    result = toolbox.run("file.read", {"path": "big.txt"})
    assert (len(result["content"]), result["size"], result["truncated"]) == (4096, 5000, True)


def test_list_shows_entries_without_following_them(toolbox: Toolbox, root: Path) -> None:
    (root / "link").symlink_to(root.parent / "outside")
    os.mkfifo(root / "pipe")
    result = toolbox.run("file.list", {})
    assert result["entries"] == [
        {"name": "link", "type": "symlink", "size": None},
        {"name": "pipe", "type": "fifo", "size": None},
        {"name": "secret.env.txt", "type": "file", "size": len(f"token: {GITHUB_TOKEN}\n")},
        {"name": "src", "type": "directory", "size": None},
    ]
    assert code_of(toolbox, "file.list", {"path": "link"}) == "SYMLINK_DENIED"
    assert code_of(toolbox, "file.list", {"path": "secret.env.txt"}) == "INVALID_PATH"


@pytest.mark.timeout(20)
def test_search_finds_lines_and_skips_links_fifos_and_protected(
    toolbox: Toolbox, root: Path,
) -> None:
    (root / "link").symlink_to(root.parent / "outside")
    (root / "src" / "leak.txt").symlink_to(root.parent / "outside" / "leak.txt")
    os.mkfifo(root / "src" / "pipe")
    (root / ".env").write_text("needle=protected\n")
    (root / "bin.dat").write_bytes(b"\x00needle")
    result = toolbox.run("file.search", {"query": "needle"})
    assert result["matches"] == [
        {"path": "src/a.py", "line": 2, "text": "needle = 1"},
        {"path": "src/deep/b.txt", "line": 2, "text": "the needle again"},
        {"path": "src/deep/b.txt", "line": 3, "text": "needle"},
    ]
    assert result["truncated"] is False


def test_search_is_bounded(toolbox: Toolbox) -> None:
    result = toolbox.run("file.search", {"query": "needle", "path": "src", "max_results": 2})
    assert len(result["matches"]) == 2 and result["truncated"] is True


def test_search_results_are_redacted(toolbox: Toolbox) -> None:
    result = toolbox.run("file.search", {"query": "token"})
    assert result["matches"] == [
        {"path": "secret.env.txt", "line": 1, "text": "token: [REDACTED:github_token]"}]


def test_write_then_read_then_delete(toolbox: Toolbox, root: Path) -> None:
    written = toolbox.run("file.write", {"path": "notes/today.md", "content": "héllo\n",
                                         "parents": True})
    assert written == {"path": "notes/today.md", "bytes": 7, "mode": "overwrite",
                       "created": True}
    toolbox.run("file.write", {"path": "notes/today.md", "content": "more\n", "mode": "append"})
    assert toolbox.run("file.read", {"path": "notes/today.md"})["content"] == "héllo\nmore\n"
    assert toolbox.run("file.delete", {"path": "notes/today.md"})["deleted"] == "file"
    assert toolbox.run("file.delete", {"path": "notes"})["deleted"] == "directory"
    assert not (root / "notes").exists()


def test_writes_are_capped_and_protected(toolbox: Toolbox) -> None:
    assert code_of(toolbox, "file.write", {"path": "big", "content": "x" * 5000}) == (
        "PAYLOAD_TOO_LARGE")
    assert code_of(toolbox, "file.write", {"path": ".env", "content": "A=1"}) == "POLICY_DENIED"
    assert code_of(toolbox, "file.write", {"path": "../x", "content": ""}) == (
        "PATH_OUTSIDE_SANDBOX")
    assert code_of(toolbox, "file.write", {"path": "x", "content": "\ud800"}) == (
        "INVALID_ARGUMENT")


# --- shell.run ---------------------------------------------------------------
def test_shell_run_runs_the_plan_in_the_workspace(toolbox: Toolbox) -> None:
    result = toolbox.run("shell.run", {"argv": ["ls", "-1"], "cwd": "src"})
    assert result["stdout"] == "a.py\ndeep\n"
    assert result["exit_code"] == 0 and result["sandbox"]["level"] == "rlimits"


def test_shell_run_refuses_what_the_allowlist_refuses(toolbox: Toolbox, root: Path) -> None:
    assert code_of(toolbox, "shell.run", {"argv": ["rm", "-rf", "src"]}) == "INVALID_COMMAND"
    assert (root / "src").is_dir()


def test_shell_run_is_unavailable_without_an_allowlist(root: Path) -> None:
    with Workspace(root) as ws:
        toolbox = Toolbox(ws)
        assert code_of(toolbox, "shell.run", {"argv": ["ls"]}) == "INVALID_COMMAND"
