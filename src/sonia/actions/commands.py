"""Command validation: an argv list checked against the allowlist becomes a `CommandPlan`.

`shell.run` takes an argv list, never a shell string, and nothing runs that this
module did not turn into a plan. The plan is *normalized*: flags first (each
short flag on its own, long flags as `--name=value`), then `--`, then the
operands, so what the binary parses is exactly what was checked here, whatever
its own option parser would have made of the original order. Refused:

- argv[0] that is not a bare allowlisted name (`./ls`, `/bin/ls`, `bash`, `env`);
- any element with NUL, newline or another control or format character;
- unknown flags, abbreviated long flags (`--max-cou`), boolean flags given a value,
  value flags without one or with a value of the wrong kind;
- operands that start with `-` unless after `--`, and `-` itself (standard input);
- operands that are not workspace-relative paths: absolute, `~`, `..` components,
  empty, over-long. (OpenClaw's path sandbox checks them again when it runs.)

Git needs a subcommand first (`git status|log|diff|show`), global options such
as `-c`, `-C` or `--git-dir` are never accepted, and the policy's fixed
arguments (`--no-pager`, `--no-ext-diff`, every `protocol.<name>.allow=never`,
...) are always added; there is no free-text `--format` (OpenClaw's `gitguard`
also inspects the repository before git runs). `find` accepts
start points and then only the predicates the policy lists (no `-exec`,
`-delete`, `-fprint`, ...). Every refusal raises InvalidCommand (400
INVALID_COMMAND) whose detail names the offending element and its index.

The plan also says what the command will open as a path (`paths`: every operand,
those after `--` included, and the values of path flags such as `find -newer`)
and whether it walks directories (`recursive`), so OpenClaw can check each path
from the command's real cwd and hide protected names from a recursive walk.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field

from sonia.actions.policy import ArgSpec, CommandSpec, Policy, is_forbidden_command
from sonia.errors import InvalidCommand

__all__ = ["MAX_ARG_CHARS", "MAX_ARGS", "CommandPlan", "check_workspace_path", "plan_command"]


@dataclass(frozen=True)
class CommandPlan:
    """A command the allowlist accepted: absolute `binary`, `argv[0]` its name, a tier.

    `name` is the allowlisted command, `paths` every argument the command will open
    as a path (operands and path-valued flags, relative to its cwd), `recursive`
    whether it walks directories, and `hidden` the absolute paths of protected
    names the sandbox must cover while it runs.
    """

    binary: str
    argv: list[str]
    tier: int
    name: str = ""
    paths: tuple[str, ...] = ()
    recursive: bool = False
    hidden: tuple[str, ...] = ()


MAX_ARGS = 256
MAX_ARG_CHARS = 4096
MAX_TOTAL_CHARS = 65_536
MAX_COMPONENT_BYTES = 255
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})
"""Control, format (bidi overrides, zero-width), surrogate, private-use, line/paragraph
separators: none has a place in a command line."""
_FIND_OPERATORS = frozenset({"(", ")", "!", "-not", "-a", "-and", "-o", "-or"})
_INT = re.compile(r"^[0-9]{1,18}$")
_SIGNED_INT = re.compile(r"^[+-]?[0-9]{1,18}$")
_REVISION = re.compile(r"^[A-Za-z0-9_@][A-Za-z0-9_./@^~:{}+-]{0,255}$")


def _show(element: str) -> str:
    text = repr(element)
    return text if len(text) <= 80 else text[:77] + "..."


def _refuse(index: int, element: str, why: str) -> InvalidCommand:
    return InvalidCommand(f"argv[{index}] {_show(element)}: {why}",
                          extra={"index": index})


def check_workspace_path(value: str) -> str | None:
    """Why `value` is not a workspace-relative path, or None when it is one."""
    if value == "":
        return "an empty path"
    if value.startswith("/"):
        return "an absolute path; paths are relative to the workspace"
    if value.startswith("~"):
        return "'~' is not expanded; paths are relative to the workspace"
    if value == "-":
        return "'-' would read standard input; name a file"
    if len(value.encode()) > MAX_ARG_CHARS:
        return f"a path longer than {MAX_ARG_CHARS} bytes"
    for part in value.split("/"):
        if part == "..":
            return "'..' would leave the workspace"
        if len(part.encode()) > MAX_COMPONENT_BYTES:
            return f"a path component longer than {MAX_COMPONENT_BYTES} bytes"
    return None


def _check_element(index: int, element: object) -> str:
    if not isinstance(element, str):
        raise InvalidCommand(f"argv[{index}] is a {type(element).__name__}, not a string",
                             extra={"index": index})
    if len(element) > MAX_ARG_CHARS:
        raise _refuse(index, element, f"longer than {MAX_ARG_CHARS} characters")
    for char in element:
        if unicodedata.category(char) in _FORBIDDEN_CATEGORIES:
            raise _refuse(index, element,
                          f"contains the control or format character U+{ord(char):04X}")
    return element


def _check_value(index: int, element: str, flag: str, kind: str, value: str) -> None:
    if kind == "text":
        return
    if kind == "int":
        ok, what = bool(_INT.match(value)), "a non-negative integer"
    elif kind == "signed_int":
        ok, what = bool(_SIGNED_INT.match(value)), "an integer"
    elif kind == "path":
        why = check_workspace_path(value)
        if why is not None:
            raise _refuse(index, element, f"the value of {flag} is {why}")
        return
    else:  # "re:<pattern>", checked at policy load
        ok, what = bool(re.fullmatch(kind[3:], value)), f"matching {kind[3:]}"
    if not ok:
        raise _refuse(index, element, f"the value of {flag} must be {what}")


@dataclass
class _Parsed:
    flags: list[str] = field(default_factory=list)
    pattern: list[str] = field(default_factory=list)
    revisions: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    flag_paths: list[str] = field(default_factory=list)
    used_pattern_flag: bool = False
    recursive: bool = False


def _unknown_long(index: int, element: str, name: str, spec: ArgSpec) -> InvalidCommand:
    known = sorted(flag for flag in (*spec.flags, *spec.value_flags)
                   if len(name) > 2 and flag.startswith(name) and flag != name)
    if known:
        return _refuse(index, element,
                       f"abbreviated flags are refused; write the flag in full ({known[0]})")
    return _refuse(index, element, "flag not allowed for this command")


def _parse_getopt(argv: Sequence[str], start: int, spec: ArgSpec) -> _Parsed:
    parsed = _Parsed()
    positionals: list[tuple[int, str, bool]] = []  # (index, value, after --)
    after_dashes = False
    i = start
    while i < len(argv):
        element = argv[i]
        if after_dashes or element == "-" or not element.startswith("-"):
            positionals.append((i, element, after_dashes))
        elif element == "--":
            after_dashes = True
        elif element.startswith("--"):
            name, eq, value = element.partition("=")
            if name in spec.flags:
                if eq:
                    raise _refuse(i, element, f"{name} takes no value")
                parsed.flags.append(name)
                parsed.recursive |= name in spec.recursive_flags
            elif name in spec.value_flags:
                if not eq:
                    if i + 1 >= len(argv):
                        raise _refuse(i, element, f"{name} needs a value")
                    i += 1
                    value = argv[i]
                _check_value(i, element, name, spec.value_flags[name], value)
                if spec.value_flags[name] == "path":
                    parsed.flag_paths.append(value)
                parsed.flags.append(f"{name}={value}")
                parsed.used_pattern_flag |= name in spec.pattern_flags
            else:
                raise _unknown_long(i, element, name, spec)
        else:
            cluster = element[1:]
            for offset, letter in enumerate(cluster):
                flag = f"-{letter}"
                if flag in spec.flags:
                    parsed.flags.append(flag)
                    parsed.recursive |= flag in spec.recursive_flags
                elif flag in spec.value_flags:
                    value = cluster[offset + 1:]
                    if not value:
                        if i + 1 >= len(argv):
                            raise _refuse(i, element, f"{flag} needs a value")
                        i += 1
                        value = argv[i]
                    _check_value(i, element, flag, spec.value_flags[flag], value)
                    if spec.value_flags[flag] == "path":
                        parsed.flag_paths.append(value)
                    parsed.flags.extend((flag, value))
                    parsed.used_pattern_flag |= flag in spec.pattern_flags
                    break
                else:
                    what = f"flag {flag}" + (f" (in {element})" if len(cluster) > 1 else "")
                    raise _refuse(i, element, f"{what} not allowed for this command")
        i += 1
    if spec.pattern_operand and not parsed.used_pattern_flag:
        if not positionals:
            raise InvalidCommand("a pattern is required (or give it with a pattern flag)")
        parsed.pattern.append(positionals.pop(0)[1])
    for index, value, after in positionals:
        if spec.operands == "none":
            raise _refuse(index, value, "this command takes no operands")
        if spec.revisions and not after:
            if not _REVISION.match(value) or any(p == ".." for p in value.split("/")):
                raise _refuse(index, value, "not a revision (put paths after --)")
            parsed.revisions.append(value)
            continue
        why = check_workspace_path(value)
        if why is not None:
            raise _refuse(index, value, f"operand is {why}")
        parsed.paths.append(value)
    return parsed


def _count(spec: ArgSpec, count: int, name: str) -> None:
    if count < spec.min_operands:
        raise InvalidCommand(f"{name} needs at least {spec.min_operands} path operand(s)")
    if count > spec.max_operands:
        raise InvalidCommand(f"{name} takes at most {spec.max_operands} path operand(s)")


def _plan_getopt(command: CommandSpec, argv: Sequence[str]) -> CommandPlan:
    head: list[str] = [command.argv0, *command.global_args]
    start = 1
    if command.subcommands:
        if len(argv) < 2 or argv[1] not in command.subcommands:
            element = argv[1] if len(argv) > 1 else ""
            raise _refuse(1, element, f"{command.name} needs one of the subcommands "
                                      f"{', '.join(command.subcommands)} first")
        spec = command.subcommands[argv[1]]
        head.append(argv[1])
        start = 2
        name = f"{command.name} {argv[1]}"
    else:
        assert command.args is not None  # one of args/subcommands, by construction
        spec = command.args
        name = command.name
    parsed = _parse_getopt(argv, start, spec)
    _count(spec, len(parsed.paths), name)
    tail = [] if spec.operands == "none" else ["--", *parsed.pattern, *parsed.paths]
    out = [*head, *spec.fixed_args, *parsed.flags, *parsed.revisions, *tail]
    # A recursive command with no operand walks its cwd.
    paths = (*parsed.flag_paths, *(parsed.paths or (["."] if parsed.recursive else [])))
    return CommandPlan(binary=command.binary, argv=out, tier=spec.tier, name=command.name,
                       paths=paths, recursive=parsed.recursive)


def _plan_find(command: CommandSpec, argv: Sequence[str]) -> CommandPlan:
    assert command.args is not None
    spec = command.args
    starts: list[str] = []
    i = 1
    while i < len(argv) and not (argv[i].startswith("-") or argv[i] in {"(", ")", "!", ","}):
        why = check_workspace_path(argv[i])
        if why is not None:
            raise _refuse(i, argv[i], f"start point is {why}")
        starts.append(argv[i])
        i += 1
    _count(spec, len(starts), command.name)
    expression: list[str] = []
    flag_paths: list[str] = []
    while i < len(argv):
        element = argv[i]
        if element in _FIND_OPERATORS or element in spec.flags:
            expression.append(element)
        elif element in spec.value_flags:
            if i + 1 >= len(argv):
                raise _refuse(i, element, f"{element} needs a value")
            _check_value(i + 1, argv[i + 1], element, spec.value_flags[element], argv[i + 1])
            if spec.value_flags[element] == "path":
                flag_paths.append(argv[i + 1])
            expression.extend((element, argv[i + 1]))
            i += 1
        elif element.startswith("-"):
            raise _refuse(i, element, "find predicate or option not allowed")
        else:
            raise _refuse(i, element, "start points must come before the expression")
        i += 1
    out = [command.argv0, *command.global_args, *spec.fixed_args, *starts, *expression]
    return CommandPlan(binary=command.binary, argv=out, tier=spec.tier, name=command.name,
                       paths=(*(starts or ["."]), *flag_paths), recursive=True)


def plan_command(policy: Policy, argv: object) -> CommandPlan:
    """Check `argv` against the allowlist of `policy` and return the plan to run.

    The plan's `binary` is the allowlisted binary's real path, `argv[0]` its
    configured path, and `tier` the tier of the command (or git subcommand).
    """
    if not isinstance(argv, list | tuple) or not argv:
        raise InvalidCommand("argv must be a non-empty list of strings")
    if len(argv) > MAX_ARGS:
        raise InvalidCommand(f"argv has {len(argv)} elements, more than {MAX_ARGS}")
    checked = [_check_element(index, element) for index, element in enumerate(argv)]
    if sum(len(element) for element in checked) > MAX_TOTAL_CHARS:
        raise InvalidCommand(f"argv is longer than {MAX_TOTAL_CHARS} characters in all")
    name = checked[0]
    if "/" in name or name.startswith("."):
        raise _refuse(0, name, "a path; give the bare command name from the allowlist")
    if is_forbidden_command(name):
        raise _refuse(0, name, "shells, interpreters and wrappers never run")
    command = policy.commands.get(name)
    if command is None:
        allowed = ", ".join(sorted(policy.commands)) or "none"
        raise _refuse(0, name, f"not in the allowlist (allowed: {allowed})")
    if command.syntax == "find":
        return _plan_find(command, checked)
    return _plan_getopt(command, checked)
