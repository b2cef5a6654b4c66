"""EVA's policy: tool tiers (`policies/tools.toml`) and the command allowlist
(`policies/allowlist.toml`), loaded and validated like configuration.

A policy that cannot be trusted refuses to start: unknown keys, wrong types,
tiers outside 0-3, relative or missing binaries, binaries that someone other
than root could replace (the file or any directory above it writable by group
or others, or not owned by root, or inside the home or the workspace), and
any shell, interpreter or wrapper named in the allowlist (`sh`, `env`,
`xargs`, `python3`, ...) all raise `ConfigError` naming the key and the fix.

Services run as root here, so "not writable by the service user" is
approximated as "owned by root and not group/other-writable, all the way up to
/, and not inside the home": a binary that passes can only be swapped by root.

Tool arguments are part of the code, not of the policy: `validate_args` checks
them against OpenClaw's tool schemas (INVALID_ARGUMENT).
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sonia.actions.tools import TOOL_SPECS, check_args
from sonia.errors import ConfigError, InvalidArgument, PolicyDenied

__all__ = [
    "FORBIDDEN_COMMANDS",
    "TIERS",
    "TOOL_NAMES",
    "ArgSpec",
    "CommandSpec",
    "Policy",
    "ToolPolicy",
    "is_forbidden_command",
    "load_policy",
    "validate_args",
]

TIERS = (0, 1, 2, 3)
"""0 read-only, 1 compute, 2 create, 3 destructive (DESIGN.md, "Actions and approvals")."""

TOOLS_FILE = "tools.toml"
ALLOWLIST_FILE = "allowlist.toml"

FORBIDDEN_COMMANDS = frozenset({
    # shells
    "sh", "bash", "dash", "zsh", "ksh", "mksh", "csh", "tcsh", "fish", "ash", "rbash",
    "busybox", "toybox",
    # wrappers that run another program
    "env", "xargs", "timeout", "sudo", "su", "doas", "pkexec", "runuser", "nohup", "nice",
    "ionice", "stdbuf", "setsid", "setpriv", "chroot", "unshare", "nsenter", "chrt", "taskset",
    "flock", "time", "watch", "script", "expect", "strace", "ltrace", "gdb", "parallel",
    "systemd-run", "at", "batch", "crontab", "bwrap", "firejail", "docker", "podman",
    "exec", "eval", "command", "builtin", "git-shell",
    # languages and programs with a command or script language of their own
    "awk", "gawk", "mawk", "nawk", "sed", "ed", "ex", "vi", "vim", "nvim", "emacs", "less",
    "more", "man", "tar", "zip", "rsync", "ssh", "scp", "make", "perl", "ruby", "node",
    "nodejs", "deno", "bun", "php", "lua", "luajit", "tclsh", "wish", "rscript", "java",
    "jshell", "guile", "julia", "osascript", "socat", "nc", "ncat", "netcat", "curl", "wget",
    "dd", "install",
})
"""Names the allowlist may never contain: each can run another program or a script."""

_INTERPRETER = re.compile(
    r"^(python|pypy|jython|perl|ruby|php|lua|luajit|node|tclsh|wish|guile|racket|ocaml|julia"
    r"|rscript)[0-9.]*(-config)?$|^[a-z0-9]*sh$"
)
"""Versioned interpreters (`python3.11`, `perl5.36`) and anything named like a shell."""

FORBIDDEN_FLAGS: Mapping[str, frozenset[str]] = {
    "find": frozenset({"-exec", "-execdir", "-ok", "-okdir", "-delete", "-fprint", "-fprint0",
                       "-fprintf", "-fls", "-L", "-H", "-follow", "-files0-from"}),
    "git": frozenset({"-c", "-C", "-o", "--output", "--ext-diff", "--exec-path", "--git-dir",
                      "--work-tree", "--upload-pack", "--config-env", "--textconv",
                      "--namespace", "--super-prefix", "--exec", "--receive-pack",
                      "--paginate", "--open-files-in-pager", "-O"}),
    "grep": frozenset({"-f", "--file", "-R", "--dereference-recursive", "--exclude-from",
                       "-d", "--directories", "-D", "--devices"}),
    "cp": frozenset({"-L", "--dereference", "-H"}),
    "ls": frozenset({"-L", "--dereference"}),
}
"""Flags no policy may allow, per command: they run programs, write files or follow links."""
_ALWAYS_FORBIDDEN_FLAGS = frozenset({"--files0-from", "--no-preserve-root"})

_NAME = re.compile(r"^[a-z][a-z0-9._-]{0,63}$")
_SHORT_FLAG = re.compile(r"^-[A-Za-z0-9]$")
_LONG_FLAG = re.compile(r"^--[a-z0-9][a-z0-9-]*$")
_FIND_PREDICATE = re.compile(r"^-[a-z][a-z0-9]*$")
VALUE_KINDS = frozenset({"text", "path", "int", "signed_int"})
"""Kinds a flag's value may have; `re:<pattern>` is also accepted (full match)."""


# --- tool arguments ------------------------------------------------------------------------
TOOL_NAMES = frozenset(spec.name for spec in TOOL_SPECS)
"""Every tool Sonia knows (OpenClaw's registry)."""


def validate_args(tool: str, args: object) -> dict[str, Any]:
    """`args` checked against the tool's schema, with defaults filled in (INVALID_ARGUMENT).

    The schema is OpenClaw's own (`TOOL_SPECS`), so EVA never approves arguments
    OpenClaw would refuse. Hash the arguments as requested, not this result.
    """
    spec = next((spec for spec in TOOL_SPECS if spec.name == tool), None)
    if spec is None:
        raise InvalidArgument(f"unknown tool {tool!r}; tools are {', '.join(sorted(TOOL_NAMES))}")
    return check_args(spec.schema, args)


# --- the loaded policy ---------------------------------------------------------------------
@dataclass(frozen=True)
class ToolPolicy:
    """How one tool is treated: its tier, whether it is denied outright, whether its
    tier is raised to that of the command it runs (`shell.run`)."""

    name: str
    tier: int
    deny: bool = False
    tier_from_command: bool = False


@dataclass(frozen=True)
class ArgSpec:
    """The argument policy of a command (or of one git subcommand)."""

    tier: int
    flags: frozenset[str] = frozenset()
    value_flags: Mapping[str, str] = field(default_factory=dict)
    operands: Literal["path", "none"] = "path"
    pattern_operand: bool = False
    pattern_flags: frozenset[str] = frozenset()
    revisions: bool = False
    min_operands: int = 0
    max_operands: int = 64
    fixed_args: tuple[str, ...] = ()
    recursive_flags: frozenset[str] = frozenset()
    """Flags that make the command walk directories (`grep -r`, `ls -R`, `cp -r`)."""


@dataclass(frozen=True)
class CommandSpec:
    """An allowlisted command: its name, absolute binary and argument policy.

    `binary` is the resolved real file that will run; `argv0` the configured path
    passed as argv[0] (multi-call binaries dispatch on it). Exactly one of `args`
    and `subcommands` is set.
    """

    name: str
    binary: str
    argv0: str
    syntax: Literal["getopt", "find"] = "getopt"
    global_args: tuple[str, ...] = ()
    args: ArgSpec | None = None
    subcommands: Mapping[str, ArgSpec] = field(default_factory=dict)


@dataclass(frozen=True)
class Policy:
    """Tool tiers and the command allowlist, as validated at start-up."""

    tools: Mapping[str, ToolPolicy]
    commands: Mapping[str, CommandSpec]
    unavailable: tuple[str, ...] = ()
    """Optional commands left out because their binary is not installed."""

    def tool(self, name: str) -> ToolPolicy:
        """The policy of `name`; a known tool without a policy is denied (POLICY_DENIED)."""
        if name not in TOOL_NAMES:
            raise InvalidArgument(
                f"unknown tool {name!r}; tools are {', '.join(sorted(TOOL_NAMES))}"
            )
        found = self.tools.get(name)
        if found is None:
            raise PolicyDenied(f"tool {name} has no entry in policies/{TOOLS_FILE}")
        return found


# --- the files, as typed models ------------------------------------------------------------
M = TypeVar("M", bound=BaseModel)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _ToolEntry(_Strict):
    tier: int = Field(ge=0, le=3)
    deny: bool = False
    tier_from_command: bool = False
    description: str = ""


class _ToolsFile(_Strict):
    tools: dict[str, _ToolEntry]


class _ArgsEntry(_Strict):
    flags: list[str] = []
    value_flags: dict[str, str] = {}
    operands: Literal["path", "none"] = "path"
    pattern_operand: bool = False
    pattern_flags: list[str] = []
    revisions: bool = False
    min_operands: int = Field(0, ge=0, le=256)
    max_operands: int = Field(64, ge=0, le=256)
    fixed_args: list[str] = []
    recursive_flags: list[str] = []


class _SubcommandEntry(_ArgsEntry):
    tier: int = Field(ge=0, le=3)


class _CommandEntry(_ArgsEntry):
    binary: str | list[str]
    optional: bool = False
    tier: int | None = Field(None, ge=0, le=3)
    syntax: Literal["getopt", "find"] = "getopt"
    global_args: list[str] = []
    subcommands: dict[str, _SubcommandEntry] = {}
    description: str = ""


class _AllowlistFile(_Strict):
    commands: dict[str, _CommandEntry]


def _read_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(
            f"{path} is missing: copy the default from a fresh `sonia init` home",
            key=f"policies.{path.name}",
        )
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}", key=f"policies.{path.name}") from exc


def _parse(model: type[M], data: dict[str, Any], path: Path) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(part) for part in first["loc"])
        hint = {
            "extra_forbidden": "unknown key: remove it or fix its spelling",
            "missing": "required key is missing: add it",
        }.get(first["type"], first["msg"])
        raise ConfigError(f"{path.name}: {key}: {hint}", key=f"policies.{path.name}.{key}") \
            from exc


def is_forbidden_command(name: str) -> bool:
    """True when `name` is a shell, an interpreter or a wrapper that runs other programs."""
    lowered = name.lower()
    return lowered in FORBIDDEN_COMMANDS or bool(_INTERPRETER.match(lowered))


# --- binaries ------------------------------------------------------------------------------
def _within(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True


def _check_not_replaceable(path: Path, key: str) -> None:
    """Refuse when `path` or any directory above it is not root's alone."""
    for item in (path, *path.parents):
        info = item.stat()
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o022:
            raise ConfigError(
                f"{item} (mode {mode:o}) is writable by group or others, so anyone could "
                f"replace the binary {path}: run `chmod go-w {item}` or install it elsewhere",
                key=key,
            )
        if info.st_uid != 0:
            raise ConfigError(
                f"{item} is owned by uid {info.st_uid}, not root, so the binary {path} can be "
                f"replaced without root: use a root-owned binary such as one in /usr/bin",
                key=key,
            )


def _resolve_binary(
    name: str, candidates: Sequence[str], key: str, forbidden_roots: Sequence[Path]
) -> tuple[str, str] | None:
    """(real path, configured path) of the first candidate that exists, checked;
    None when none exists."""
    for candidate in candidates:
        configured = Path(candidate)
        if not configured.is_absolute():
            raise ConfigError(
                f"binary {candidate!r} of command {name} is relative: give an absolute path "
                f"such as /usr/bin/{name}",
                key=key,
            )
        if os.path.normpath(candidate) != candidate:
            raise ConfigError(
                f"binary {candidate!r} of command {name} is not a normalized path: "
                f"write it as {os.path.normpath(candidate)}",
                key=key,
            )
        if not configured.exists():
            continue
        real = configured.resolve(strict=True)
        for shown in {configured.name, real.name}:
            if is_forbidden_command(shown):
                raise ConfigError(
                    f"binary {candidate} of command {name} is {shown}, a shell, interpreter or "
                    f"wrapper, which the allowlist may never name: remove it",
                    key=key,
                )
        for root in forbidden_roots:
            if _within(real, root) or _within(configured, root):
                raise ConfigError(
                    f"binary {candidate} of command {name} lies inside {root}, which tools can "
                    f"write: use a system binary such as /usr/bin/{name}",
                    key=key,
                )
        if not real.is_file() or not os.access(real, os.X_OK):
            raise ConfigError(
                f"binary {candidate} of command {name} is not an executable file", key=key
            )
        _check_not_replaceable(real, key)
        _check_not_replaceable(configured.parent, key)
        return str(real), candidate
    return None


# --- argument policies ---------------------------------------------------------------------
def _check_value_kind(kind: str, key: str) -> None:
    if kind in VALUE_KINDS:
        return
    if kind.startswith("re:"):
        try:
            re.compile(kind[3:])
        except re.error as exc:
            raise ConfigError(f"{key}: bad regular expression {kind[3:]!r}: {exc}",
                              key=key) from exc
        return
    raise ConfigError(
        f"{key}: unknown value kind {kind!r}; use one of {', '.join(sorted(VALUE_KINDS))} "
        f"or re:<pattern>",
        key=key,
    )


def _build_args(
    command: str, binary: str, syntax: str, entry: _ArgsEntry, tier: int, key: str
) -> ArgSpec:
    pattern = _FIND_PREDICATE if syntax == "find" else None
    # By the allowlisted name and by the binary's own name, so an alias such as
    # [commands.findx] binary = "/usr/bin/find" cannot smuggle in -exec.
    forbidden = (FORBIDDEN_FLAGS.get(command, frozenset())
                 | FORBIDDEN_FLAGS.get(Path(binary).name, frozenset())
                 | _ALWAYS_FORBIDDEN_FLAGS)
    for flag in (*entry.flags, *entry.value_flags):
        good = (pattern.match(flag) if pattern else
                _SHORT_FLAG.match(flag) or _LONG_FLAG.match(flag))
        if not good:
            raise ConfigError(
                f"{key}: {flag!r} is not a flag ({'-name' if pattern else '-x or --name'})",
                key=f"{key}.flags",
            )
        if flag in forbidden:
            raise ConfigError(
                f"{key}: flag {flag} of {command} runs programs, writes files or follows "
                f"links and may never be allowed: remove it",
                key=f"{key}.flags",
            )
    both = set(entry.flags) & set(entry.value_flags)
    if both:
        raise ConfigError(f"{key}: {', '.join(sorted(both))} listed as both a flag and a "
                          f"value flag: keep one", key=f"{key}.flags")
    for flag, kind in entry.value_flags.items():
        _check_value_kind(kind, f"{key}.value_flags.{flag}")
    for flag in entry.pattern_flags:
        if flag not in entry.value_flags:
            raise ConfigError(f"{key}: pattern flag {flag} must also be a value flag",
                              key=f"{key}.pattern_flags")
    for flag in entry.recursive_flags:
        if flag not in entry.flags:
            raise ConfigError(f"{key}: recursive flag {flag} must also be a flag",
                              key=f"{key}.recursive_flags")
    if entry.min_operands > entry.max_operands:
        raise ConfigError(f"{key}: min_operands exceeds max_operands", key=f"{key}.min_operands")
    if entry.operands == "none" and (entry.min_operands or entry.pattern_operand):
        raise ConfigError(f"{key}: operands = 'none' contradicts min_operands/pattern_operand",
                          key=f"{key}.operands")
    return ArgSpec(
        tier=tier,
        flags=frozenset(entry.flags),
        value_flags=dict(entry.value_flags),
        operands=entry.operands,
        pattern_operand=entry.pattern_operand,
        pattern_flags=frozenset(entry.pattern_flags),
        revisions=entry.revisions,
        min_operands=entry.min_operands,
        max_operands=entry.max_operands,
        fixed_args=tuple(entry.fixed_args),
        recursive_flags=frozenset(entry.recursive_flags),
    )


def _build_command(
    name: str, entry: _CommandEntry, forbidden_roots: Sequence[Path]
) -> CommandSpec | None:
    key = f"policies.{ALLOWLIST_FILE}.commands.{name}"
    if not _NAME.match(name):
        raise ConfigError(f"command name {name!r} must be a plain lower-case name", key=key)
    if is_forbidden_command(name):
        raise ConfigError(
            f"command {name} is a shell, interpreter or wrapper (it can run other programs) "
            f"and may never be allowlisted: remove [commands.{name}]",
            key=key,
        )
    candidates = [entry.binary] if isinstance(entry.binary, str) else list(entry.binary)
    if not candidates:
        raise ConfigError(f"command {name} lists no binary", key=f"{key}.binary")
    found = _resolve_binary(name, candidates, f"{key}.binary", forbidden_roots)
    if found is None:
        if entry.optional:
            return None
        raise ConfigError(
            f"no binary of command {name} exists (looked for {', '.join(candidates)}): install "
            f"it, set optional = true, or remove [commands.{name}] from policies/{ALLOWLIST_FILE}",
            key=f"{key}.binary",
        )
    binary, argv0 = found
    if entry.subcommands:
        if entry.tier is not None or entry.flags or entry.value_flags:
            raise ConfigError(
                f"command {name} has subcommands: put tier and flags under each subcommand",
                key=key,
            )
        subs: dict[str, ArgSpec] = {}
        for sub, sub_entry in entry.subcommands.items():
            if not _NAME.match(sub):
                raise ConfigError(f"subcommand {sub!r} of {name} must be a plain name",
                                  key=f"{key}.subcommands")
            subs[sub] = _build_args(name, binary, entry.syntax, sub_entry, sub_entry.tier,
                                    f"{key}.subcommands.{sub}")
        return CommandSpec(name=name, binary=binary, argv0=argv0, syntax=entry.syntax,
                           global_args=tuple(entry.global_args), subcommands=subs)
    if entry.tier is None:
        raise ConfigError(f"command {name} needs a tier (0-3)", key=f"{key}.tier")
    return CommandSpec(
        name=name, binary=binary, argv0=argv0, syntax=entry.syntax,
        global_args=tuple(entry.global_args),
        args=_build_args(name, binary, entry.syntax, entry, entry.tier, key),
    )


def load_policy(
    directory: Path, *, forbidden_roots: Sequence[Path] = ()
) -> Policy:
    """Load and validate `tools.toml` and `allowlist.toml` from `directory`.

    `forbidden_roots` are folders no binary may live in: pass the home and the
    workspace. Every problem raises ConfigError naming the key and the fix.
    """
    roots = [Path(root).resolve() for root in forbidden_roots]
    tools_path = directory / TOOLS_FILE
    tools_file = _parse(_ToolsFile, _read_toml(tools_path), tools_path)
    tools: dict[str, ToolPolicy] = {}
    for name, tool_entry in tools_file.tools.items():
        if name not in TOOL_NAMES:
            raise ConfigError(
                f"{TOOLS_FILE}: unknown tool {name!r}; tools are {', '.join(sorted(TOOL_NAMES))}",
                key=f"policies.{TOOLS_FILE}.tools.{name}",
            )
        if tool_entry.tier_from_command and name != "shell.run":
            raise ConfigError(
                f"{TOOLS_FILE}: tier_from_command applies to shell.run only, not {name}",
                key=f"policies.{TOOLS_FILE}.tools.{name}.tier_from_command",
            )
        tools[name] = ToolPolicy(name=name, tier=tool_entry.tier, deny=tool_entry.deny,
                                 tier_from_command=tool_entry.tier_from_command)
    allow_path = directory / ALLOWLIST_FILE
    allow_file = _parse(_AllowlistFile, _read_toml(allow_path), allow_path)
    commands: dict[str, CommandSpec] = {}
    unavailable: list[str] = []
    for name, entry in allow_file.commands.items():
        spec = _build_command(name, entry, roots)
        if spec is None:
            unavailable.append(name)
        else:
            commands[name] = spec
    return Policy(tools=tools, commands=commands, unavailable=tuple(unavailable))
