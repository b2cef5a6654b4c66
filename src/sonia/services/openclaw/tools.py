"""The tools themselves, on top of the path and OS sandboxes.

What the tools are (names, tiers, argument schemas, `check_args`) is data in
`sonia.actions.tools`, shared with EVA. `Toolbox.prepare` checks arguments
against a tool's schema (400 INVALID_ARGUMENT) and fills in defaults.
`Toolbox.run` executes a tool and redacts every string of its result, so no
secret leaves OpenClaw through a tool.

`shell.run` depends on the command allowlist only through the `validate_command`
callable it is given ((argv, cwd) -> CommandPlan, raising INVALID_COMMAND or a
path refusal), so the allowlist lives with the policies it belongs to; the plan
is made again, against the disk as it is, right before the command runs.

Search never follows symbolic links (they are skipped, like FIFOs, devices,
sockets, hard-linked files, protected names and files with a NUL byte in their
first 8 KiB) and is bounded in results, files read and depth.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sonia.actions.commands import CommandPlan
from sonia.actions.tools import TOOL_SPECS, ToolSpec, check_args
from sonia.errors import ApiError, InvalidArgument, InvalidCommand, NotFound, PayloadTooLarge
from sonia.redact import Redactor, default_redactor
from sonia.services.openclaw.execution import Executor
from sonia.services.openclaw.paths import (
    Workspace,
    open_regular_file,
    open_subdir,
    read_up_to,
)

__all__ = ["Toolbox", "ValidateCommand"]

ValidateCommand = Callable[[list[str], str], CommandPlan]
"""(argv, cwd) -> the plan to run there, or INVALID_COMMAND / a path or policy refusal."""

_BINARY_SNIFF_BYTES = 8192
_MAX_LINE_CHARS = 300


def _utf8(name: str, value: str) -> bytes:
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidArgument(f"argument {name!r} is not valid Unicode text") from exc


def _entry_type(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "other"


@dataclass
class _Search:
    needle: bytes
    max_results: int
    matches: list[dict[str, Any]] = field(default_factory=list)
    files_scanned: int = 0
    truncated: bool = False


class Toolbox:
    """The tools of one workspace; `run` is blocking (call it from a worker thread)."""

    def __init__(
        self,
        workspace: Workspace,
        *,
        executor: Executor | None = None,
        validate_command: ValidateCommand | None = None,
        redactor: Redactor | None = None,
        max_file_bytes: int = 10 << 20,
        max_list_entries: int = 1000,
        max_search_files: int = 5000,
        max_search_depth: int = 32,
    ) -> None:
        self.workspace = workspace
        self.executor = executor
        self.validate_command = validate_command
        self.redactor = redactor or default_redactor()
        self.max_file_bytes = max_file_bytes
        self.max_list_entries = max_list_entries
        self.max_search_files = max_search_files
        self.max_search_depth = max_search_depth
        self.specs: dict[str, ToolSpec] = {spec.name: spec for spec in TOOL_SPECS}

    def describe(self) -> list[dict[str, Any]]:
        """Every tool with its tier and schema, for `GET /v1/tools`."""
        return [spec.as_dict() for spec in TOOL_SPECS]

    def _spec(self, tool: str) -> ToolSpec:
        spec = self.specs.get(tool)
        if spec is None:
            raise NotFound(f"unknown tool {tool!r}; tools are {', '.join(sorted(self.specs))}")
        return spec

    def _plan(self, argv: list[str], cwd: str) -> CommandPlan:
        if self.validate_command is None or self.executor is None:
            raise InvalidCommand("shell.run is not available in this OpenClaw")
        return self.validate_command(argv, cwd)

    def prepare(self, tool: str, args: Any) -> tuple[dict[str, Any], int]:
        """Checked arguments with defaults, and the tier this call has."""
        spec = self._spec(tool)
        checked = check_args(spec.schema, args)
        tier = spec.tier
        if tool == "shell.run":
            tier = max(tier, self._plan(checked["argv"], checked["cwd"]).tier)
        return checked, tier

    def run(self, tool: str, args: Any) -> dict[str, Any]:
        """Execute `tool` with `args`; the result has every string redacted."""
        checked, _tier = self.prepare(tool, args)
        handler: Callable[[dict[str, Any]], dict[str, Any]] = {
            "file.read": self._read,
            "file.list": self._list,
            "file.search": self._search,
            "file.write": self._write,
            "file.delete": self._delete,
            "shell.run": self._shell,
        }[tool]
        result: dict[str, Any] = self.redactor.redact_value(handler(checked))
        return result

    # tools -------------------------------------------------------------------
    def _read(self, args: dict[str, Any]) -> dict[str, Any]:
        data, size = self.workspace.read_bytes(args["path"], self.max_file_bytes)
        return {"path": args["path"], "content": data.decode("utf-8", "replace"),
                "size": size, "truncated": size > len(data)}

    def _list(self, args: dict[str, Any]) -> dict[str, Any]:
        fd = self.workspace.open_dir(args["path"])
        try:
            with os.scandir(fd) as scan:
                names = sorted(entry.name for entry in scan)
            entries = []
            for name in names[: self.max_list_entries]:
                try:
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    continue  # removed meanwhile
                kind = _entry_type(st.st_mode)
                entries.append({"name": name, "type": kind,
                                "size": st.st_size if kind == "file" else None})
        finally:
            os.close(fd)
        return {"path": args["path"], "entries": entries,
                "truncated": len(names) > self.max_list_entries}

    def _search(self, args: dict[str, Any]) -> dict[str, Any]:
        parts = self.workspace.parse(args["path"])
        state = _Search(_utf8("query", args["query"]), args["max_results"])
        fd = self.workspace.open_dir(args["path"])
        try:
            self._search_dir(fd, parts, 0, state)
        finally:
            os.close(fd)
        return {"query": args["query"], "path": args["path"], "matches": state.matches,
                "files_scanned": state.files_scanned, "truncated": state.truncated}

    def _search_dir(self, dir_fd: int, parts: tuple[str, ...], depth: int,
                    state: _Search) -> None:
        with os.scandir(dir_fd) as scan:
            names = sorted(entry.name for entry in scan)
        for name in names:
            if state.truncated:
                return
            child = (*parts, name)
            rel = "/".join(child)
            if self.workspace.is_protected(child):
                continue
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(st.st_mode):
                if depth + 1 >= self.max_search_depth:
                    state.truncated = True
                    return
                try:
                    sub = open_subdir(dir_fd, name, rel, flags=os.O_RDONLY)
                except ApiError:
                    continue  # became a symlink or vanished meanwhile
                try:
                    self._search_dir(sub, child, depth + 1, state)
                finally:
                    os.close(sub)
            elif stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
                if st.st_size <= self.max_file_bytes:
                    self._search_file(dir_fd, name, rel, state)
            # symlinks, FIFOs, devices, sockets and hard-linked files are skipped

    def _search_file(self, dir_fd: int, name: str, rel: str, state: _Search) -> None:
        if state.files_scanned >= self.max_search_files:
            state.truncated = True
            return
        state.files_scanned += 1
        try:
            fd, _st = open_regular_file(dir_fd, name, rel)
        except ApiError:
            return
        try:
            data = read_up_to(fd, self.max_file_bytes)
        finally:
            os.close(fd)
        if b"\x00" in data[:_BINARY_SNIFF_BYTES] or state.needle not in data:
            return
        for number, line in enumerate(data.split(b"\n"), start=1):
            if state.needle in line:
                if len(state.matches) >= state.max_results:
                    state.truncated = True
                    return
                text = line.decode("utf-8", "replace").rstrip("\r")
                state.matches.append({"path": rel, "line": number,
                                      "text": text[:_MAX_LINE_CHARS]})

    def _write(self, args: dict[str, Any]) -> dict[str, Any]:
        data = _utf8("content", args["content"])
        if len(data) > self.max_file_bytes:
            raise PayloadTooLarge(f"content is larger than {self.max_file_bytes} bytes")
        written = self.workspace.write_file(args["path"], data, mode=args["mode"],
                                            make_parents=args["parents"],
                                            max_bytes=self.max_file_bytes)
        return {"path": args["path"], "bytes": written.bytes, "mode": args["mode"],
                "created": written.created}

    def _delete(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"path": args["path"], "deleted": self.workspace.delete(args["path"])}

    def _shell(self, args: dict[str, Any]) -> dict[str, Any]:
        plan = self._plan(args["argv"], args["cwd"])
        assert self.executor is not None  # _plan refused otherwise
        return self.executor.run(plan, cwd=args["cwd"]).as_dict()
