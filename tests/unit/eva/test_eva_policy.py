"""Policies load like configuration: a policy that cannot be trusted refuses to start, with a
ConfigError that names the key and says what to do."""

from __future__ import annotations

import os
import shutil
import tomllib
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from sonia.actions.policy import (
    TOOL_NAMES,
    Policy,
    is_forbidden_command,
    load_policy,
    validate_args,
)
from sonia.errors import ConfigError, InvalidArgument, PolicyDenied
from sonia.home import Home

DEFAULT_POLICIES = Path(str(files("sonia.policies")))
IS_ROOT = os.geteuid() == 0


def _default(name: str) -> dict[str, Any]:
    return tomllib.loads((DEFAULT_POLICIES / name).read_text())


def _write(directory: Path, tools: dict[str, Any] | None = None,
           allowlist: dict[str, Any] | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tools.toml").write_text(tomli_w.dumps(tools or _default("tools.toml")))
    (directory / "allowlist.toml").write_text(
        tomli_w.dumps(allowlist if allowlist is not None else _default("allowlist.toml")))
    return directory


def _refused(directory: Path, **kwargs: Any) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_policy(directory, **kwargs)
    assert caught.value.key
    return caught.value


def _only(name: str, entry: dict[str, Any]) -> dict[str, Any]:
    return {"commands": {name: entry}}


LS = {"binary": "/usr/bin/ls", "tier": 1, "flags": ["-l"]}


# --- the shipped defaults ------------------------------------------------------------------
def test_the_default_policy_loads_with_the_documented_tiers() -> None:
    policy = load_policy(DEFAULT_POLICIES)
    tiers = {name: tool.tier for name, tool in policy.tools.items()}
    assert tiers == {"file.read": 0, "file.list": 0, "file.search": 0, "file.write": 2,
                     "file.delete": 3, "shell.run": 1}
    assert policy.tools["shell.run"].tier_from_command
    assert set(policy.tools) == TOOL_NAMES
    assert {"ls", "cat", "head", "wc", "grep", "find", "mkdir", "cp", "mv", "rm"} <= set(
        policy.commands)
    assert set(policy.commands) | set(policy.unavailable) == set(
        _default("allowlist.toml")["commands"])


def test_home_init_installs_the_default_policy(tmp_path: Path) -> None:
    home = Home.at(tmp_path / "home")
    home.init()
    policy = load_policy(home.policies, forbidden_roots=[home.root, home.workspace])
    assert policy.tools["file.write"].tier == 2


# --- the files themselves ------------------------------------------------------------------
def test_a_missing_policy_file_refuses_to_start(tmp_path: Path) -> None:
    _write(tmp_path)
    (tmp_path / "allowlist.toml").unlink()
    assert "allowlist.toml" in str(_refused(tmp_path))


def test_invalid_toml_refuses_to_start(tmp_path: Path) -> None:
    _write(tmp_path)
    (tmp_path / "tools.toml").write_text("[tools\n")
    assert "not valid TOML" in str(_refused(tmp_path))


def test_an_unknown_key_is_named(tmp_path: Path) -> None:
    tools = _default("tools.toml")
    tools["tools"]["file.read"]["teir"] = 0
    error = _refused(_write(tmp_path, tools=tools))
    assert error.key == "policies.tools.toml.tools.file.read.teir"
    assert "unknown key" in str(error)


def test_an_unknown_top_level_key_is_named(tmp_path: Path) -> None:
    allowlist = _default("allowlist.toml")
    allowlist["comands"] = {}
    assert "comands" in str(_refused(_write(tmp_path, allowlist=allowlist)))


@pytest.mark.parametrize("tier", ["high", 1.5, True, -1, 4, [1]])
def test_a_wrong_tier_is_named(tmp_path: Path, tier: Any) -> None:
    tools = _default("tools.toml")
    tools["tools"]["file.write"]["tier"] = tier
    assert "file.write" in str(_refused(_write(tmp_path, tools=tools)).key)


def test_an_unknown_tool_is_refused(tmp_path: Path) -> None:
    tools = _default("tools.toml")
    tools["tools"]["file.exec"] = {"tier": 0}
    assert "file.exec" in str(_refused(_write(tmp_path, tools=tools)))


def test_tier_from_command_is_only_for_shell_run(tmp_path: Path) -> None:
    tools = _default("tools.toml")
    tools["tools"]["file.read"]["tier_from_command"] = True
    _refused(_write(tmp_path, tools=tools))


@pytest.mark.parametrize("change", [
    {"flags": "-l"}, {"flags": [1]}, {"min_operands": "1"}, {"operands": "anything"},
    {"syntax": "shell"}, {"value_flags": {"-n": 5}}, {"binary": 7}, {"tier": None},
])
def test_wrong_types_in_the_allowlist_are_named(tmp_path: Path, change: dict[str, Any]) -> None:
    entry = {**LS, **change}
    if entry.get("tier", 0) is None:
        del entry["tier"]
    _refused(_write(tmp_path, allowlist=_only("ls", entry)))


# --- binaries ------------------------------------------------------------------------------
def test_a_relative_binary_is_refused(tmp_path: Path) -> None:
    error = _refused(_write(tmp_path, allowlist=_only("ls", {**LS, "binary": "ls"})))
    assert "relative" in str(error) and error.key == "policies.allowlist.toml.commands.ls.binary"


def test_a_non_normalized_binary_is_refused(tmp_path: Path) -> None:
    entry = {**LS, "binary": "/usr/bin/../bin/ls"}
    assert "normalized" in str(_refused(_write(tmp_path, allowlist=_only("ls", entry))))


def test_a_missing_binary_is_refused_unless_optional(tmp_path: Path) -> None:
    entry = {**LS, "binary": ["/nonexistent/ls", "/nonexistent/bin/ls"]}
    assert "no binary" in str(_refused(_write(tmp_path, allowlist=_only("ls", entry))))
    _write(tmp_path, allowlist=_only("ls", {**entry, "optional": True}))
    policy = load_policy(tmp_path)
    assert "ls" not in policy.commands and policy.unavailable == ("ls",)


def test_the_first_existing_candidate_is_used(tmp_path: Path) -> None:
    entry = {**LS, "binary": ["/nonexistent/ls", "/usr/bin/ls"]}
    policy = load_policy(_write(tmp_path, allowlist=_only("ls", entry)))
    assert policy.commands["ls"].argv0 == "/usr/bin/ls"
    assert policy.commands["ls"].binary == os.path.realpath("/usr/bin/ls")


@pytest.mark.parametrize("name", [
    "sh", "bash", "dash", "zsh", "ksh", "fish", "env", "xargs", "timeout", "sudo", "su",
    "nohup", "nice", "stdbuf", "setsid", "python", "python3", "python3.11", "perl", "perl5.36",
    "ruby", "node", "awk", "gawk", "sed", "busybox", "tar", "ssh", "make", "lua5.4", "php8.2",
])
def test_shells_interpreters_and_wrappers_may_not_be_allowlisted(
        tmp_path: Path, name: str) -> None:
    assert is_forbidden_command(name)
    error = _refused(_write(tmp_path, allowlist=_only(name, LS)))
    assert "shell, interpreter or wrapper" in str(error)


@pytest.mark.parametrize("binary", ["/usr/bin/env", "/usr/bin/python3", "/bin/sh", "/usr/bin/xargs",
                                    "/usr/bin/timeout", "/usr/bin/bash"])
def test_a_wrapper_binary_under_an_innocent_name_is_refused(tmp_path: Path, binary: str) -> None:
    if not Path(binary).exists():
        pytest.skip(f"{binary} is not installed here")
    entry = {**LS, "binary": binary}
    assert "wrapper" in str(_refused(_write(tmp_path, allowlist=_only("lister", entry))))


def test_allowed_names_are_not_mistaken_for_wrappers() -> None:
    for name in ("ls", "cat", "head", "wc", "grep", "find", "git", "mkdir", "cp", "mv", "rm"):
        assert not is_forbidden_command(name)


def _copy_ls(directory: Path, mode: int = 0o755) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    binary = directory / "ls"
    shutil.copy2(os.path.realpath("/usr/bin/ls"), binary)
    binary.chmod(mode)
    return binary


def test_a_binary_in_a_world_writable_directory_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "bin"
    binary = _copy_ls(folder)
    folder.chmod(0o777)
    error = _refused(_write(tmp_path / "p", allowlist=_only("ls", {**LS, "binary": str(binary)})))
    assert f"{folder} (mode 777)" in str(error) and "chmod go-w" in str(error)


def test_a_group_writable_binary_is_refused(tmp_path: Path) -> None:
    binary = _copy_ls(tmp_path / "bin", mode=0o775)
    error = _refused(_write(tmp_path / "p", allowlist=_only("ls", {**LS, "binary": str(binary)})))
    assert f"{binary} (mode 775)" in str(error)


def test_every_directory_up_to_the_root_is_checked(tmp_path: Path) -> None:
    binary = _copy_ls(tmp_path / "a" / "b")
    (tmp_path / "a").chmod(0o757)
    error = _refused(_write(tmp_path / "p", allowlist=_only("ls", {**LS, "binary": str(binary)})))
    assert f"{tmp_path / 'a'} (mode 757)" in str(error)


@pytest.mark.skipif(not IS_ROOT, reason="changing a file's owner needs root")
def test_a_binary_not_owned_by_root_is_refused(tmp_path: Path) -> None:
    binary = _copy_ls(tmp_path / "bin")
    os.chown(binary, 65534, 65534)
    error = _refused(_write(tmp_path / "p", allowlist=_only("ls", {**LS, "binary": str(binary)})))
    assert "owned by uid 65534" in str(error)


def test_a_binary_inside_the_home_is_refused(tmp_path: Path) -> None:
    binary = _copy_ls(tmp_path / "home" / "workspace")
    directory = _write(tmp_path / "p", allowlist=_only("ls", {**LS, "binary": str(binary)}))
    error = _refused(directory, forbidden_roots=[tmp_path / "home"])
    assert "inside" in str(error)


def test_a_symlink_to_a_wrapper_is_refused(tmp_path: Path) -> None:
    link = tmp_path / "innocent"
    link.symlink_to("/usr/bin/env")
    entry = {**LS, "binary": str(link)}
    assert "wrapper" in str(_refused(_write(tmp_path / "p", allowlist=_only("ls", entry))))


# --- argument policies ---------------------------------------------------------------------
@pytest.mark.parametrize("name, entry", [
    ("find", {"binary": "/usr/bin/find", "tier": 1, "syntax": "find", "flags": ["-exec"]}),
    ("find", {"binary": "/usr/bin/find", "tier": 1, "syntax": "find", "flags": ["-delete"]}),
    ("find", {"binary": "/usr/bin/find", "tier": 1, "syntax": "find",
              "value_flags": {"-fprint": "path"}}),
    ("grep", {"binary": "/usr/bin/grep", "tier": 1, "value_flags": {"-f": "path"}}),
    ("grep", {"binary": "/usr/bin/grep", "tier": 1, "flags": ["-R"]}),
    ("wc", {"binary": "/usr/bin/wc", "tier": 1, "value_flags": {"--files0-from": "path"}}),
    ("rm", {"binary": "/usr/bin/rm", "tier": 3, "flags": ["--no-preserve-root"]}),
    ("findx", {"binary": "/usr/bin/find", "tier": 1, "syntax": "find", "flags": ["-exec"]}),
])
def test_dangerous_flags_may_never_be_allowed(
        tmp_path: Path, name: str, entry: dict[str, Any]) -> None:
    assert "may never be allowed" in str(_refused(_write(tmp_path, allowlist=_only(name, entry))))


@pytest.mark.skipif(not Path("/usr/bin/git").exists(), reason="git is not installed here")
@pytest.mark.parametrize("flag", ["-c", "-C", "--output", "--ext-diff", "--git-dir", "--textconv",
                                  "--upload-pack", "--exec-path", "--work-tree", "--config-env"])
def test_dangerous_git_flags_may_never_be_allowed(tmp_path: Path, flag: str) -> None:
    entry = {"binary": "/usr/bin/git",
             "subcommands": {"log": {"tier": 1, "value_flags": {flag: "text"}}}}
    _refused(_write(tmp_path, allowlist=_only("git", entry)))


@pytest.mark.parametrize("change", [
    {"flags": ["l"]}, {"flags": ["--All"]}, {"flags": ["-ll"]}, {"flags": ["-l"],
                                                                 "value_flags": {"-l": "int"}},
    {"value_flags": {"-n": "number"}}, {"value_flags": {"-n": "re:("}},
    {"pattern_flags": ["-e"]}, {"min_operands": 5, "max_operands": 2},
    {"operands": "none", "min_operands": 1}, {"recursive_flags": ["-R"]},
])
def test_malformed_argument_policies_are_refused(tmp_path: Path, change: dict[str, Any]) -> None:
    _refused(_write(tmp_path, allowlist=_only("ls", {**LS, **change})))


def test_the_default_policy_knows_which_flags_recurse() -> None:
    commands = load_policy(DEFAULT_POLICIES).commands
    for name, flags in (("grep", {"-r", "--recursive"}), ("ls", {"-R", "--recursive"}),
                        ("cp", {"-r", "-R", "--recursive"}), ("rm", {"-r", "-R", "--recursive"})):
        spec = commands[name].args
        assert spec is not None and spec.recursive_flags == flags, name


def test_commands_with_subcommands_keep_tiers_per_subcommand(tmp_path: Path) -> None:
    entry = {"binary": "/usr/bin/ls", "tier": 1, "subcommands": {"x": {"tier": 1}}}
    _refused(_write(tmp_path, allowlist=_only("ls", entry)))
    _refused(_write(tmp_path, allowlist=_only("ls", {"binary": "/usr/bin/ls"})))


# --- tools ---------------------------------------------------------------------------------
def test_a_known_tool_without_a_policy_is_denied(tmp_path: Path) -> None:
    tools = _default("tools.toml")
    del tools["tools"]["file.delete"]
    policy = load_policy(_write(tmp_path, tools=tools))
    with pytest.raises(PolicyDenied):
        policy.tool("file.delete")
    with pytest.raises(InvalidArgument):
        policy.tool("file.nope")


@pytest.mark.parametrize("tool, args", [
    ("file.read", {}), ("file.read", {"path": 1}), ("file.read", {"path": "a", "x": 1}),
    ("file.read", ["a"]), ("file.search", {"query": "q", "max_results": True}),
    ("file.search", {"query": "q", "max_results": "5"}), ("shell.run", {"argv": "ls -la"}),
    ("shell.run", {"argv": ["ls", 1]}), ("shell.run", {}), ("file.write", {"path": "a"}),
    ("no.such.tool", {}),
])
def test_arguments_are_checked_against_the_tool_schema(tool: str, args: Any) -> None:
    with pytest.raises(InvalidArgument):
        validate_args(tool, args)


def test_valid_arguments_pass_with_defaults_filled_in() -> None:
    assert validate_args("file.read", {"path": "a.txt"}) == {"path": "a.txt"}
    assert validate_args("shell.run", {"argv": ["ls"]})["argv"] == ["ls"]


def test_policy_is_plain_data() -> None:
    policy = load_policy(DEFAULT_POLICIES)
    assert isinstance(policy, Policy)
    with pytest.raises(AttributeError):
        policy.tools = {}  # type: ignore[misc]
