"""What a pending file action would change, shown to the person who decides on it.

An approver asked to allow `file.write` or `file.delete` should see the change,
not only the arguments: `preview(toolbox, tool, args)` reads the file as it is
now, through the same path sandbox as `file.read` (so a path that a read would
refuse, a symlink, a protected name or one outside the workspace, is refused
here too and said so), and answers a unified diff of before and after.

A preview changes nothing, needs no grant and runs nothing: it is a read for the
decision, of what the tool itself would read. Like every tool result it is
redacted before it leaves OpenClaw, and it is bounded: files over
`MAX_PREVIEW_BYTES`, and binary files, are described, not diffed. A command
(`shell.run`) has nothing to read ahead: its argv is the plan, and the caller
shows it.
"""

from __future__ import annotations

import difflib
from typing import Any

from sonia.errors import ApiError, InvalidArgument, NotFound
from sonia.services.openclaw.tools import Toolbox

__all__ = ["MAX_PREVIEW_BYTES", "preview"]

MAX_PREVIEW_BYTES = 256 * 1024
"""Largest before or after a diff is made of (difflib is quadratic at worst)."""
_BINARY_SNIFF_BYTES = 8192


def _is_binary(data: bytes) -> bool:
    return b"\x00" in data[:_BINARY_SNIFF_BYTES]


def _current(toolbox: Toolbox, path: str) -> tuple[bytes | None, int]:
    """The file's bytes now (up to one byte past the preview limit) and its size; None
    when it does not exist."""
    try:
        return toolbox.workspace.read_bytes(path, MAX_PREVIEW_BYTES + 1)
    except NotFound:
        return None, 0


def preview(toolbox: Toolbox, tool: str, args: Any) -> dict[str, Any]:
    """The change `tool` with `args` would make, as `{tool, path, exists, size_before,
    size_after, diff | null, binary, too_large, refused?}`."""
    if tool not in ("file.write", "file.delete"):
        raise InvalidArgument(f"only file.write and file.delete have a preview, not {tool!r}")
    checked, _tier = toolbox.prepare(tool, args)
    path = str(checked["path"])
    answer: dict[str, Any] = {"tool": tool, "path": path, "exists": False, "size_before": 0,
                              "size_after": 0, "diff": None, "binary": False,
                              "too_large": False}
    try:
        before, size = _current(toolbox, path)
    except ApiError as exc:  # the read is refused: so would the action most likely be
        return {**answer, "refused": {"code": exc.code, "detail": exc.detail}}
    answer.update(exists=before is not None, size_before=size)
    old = before or b""
    if tool == "file.delete":
        new = b""
    else:
        content = str(checked["content"]).encode("utf-8", "replace")
        new = old + content if checked["mode"] == "append" else content
    answer["size_after"] = size + len(new) - len(old) if checked.get("mode") == "append" \
        else len(new)
    if size > MAX_PREVIEW_BYTES or len(new) > MAX_PREVIEW_BYTES:
        answer["too_large"] = True
    elif _is_binary(old) or _is_binary(new):
        answer["binary"] = True
    else:
        lines = difflib.unified_diff(
            old.decode("utf-8", "replace").splitlines(keepends=True),
            new.decode("utf-8", "replace").splitlines(keepends=True),
            fromfile=f"a/{path}" if before is not None else "/dev/null",
            tofile="/dev/null" if tool == "file.delete" else f"b/{path}")
        answer["diff"] = "".join(line if line.endswith("\n") else line + "\n\\ No newline at "
                                 "end of file\n" for line in lines)
    result: dict[str, Any] = toolbox.redactor.redact_value(answer)
    return result
