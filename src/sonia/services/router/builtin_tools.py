"""The builtin model's tool use: a small deterministic grammar over Sonia's own tools.

So that the offline default shows the whole loop (propose, approve, resume) and
tests need no network, the builtin model calls a tool when the user's message
is one of these (case-insensitive, an optional "please" first):

    list my files [in DIR]          file_list   {path: DIR or "."}
    read PATH                       file_read   {path}
    search for TEXT [in DIR]        file_search {query: TEXT, path: DIR or "."}
    write TEXT to PATH              file_write  {path, content: TEXT (quotes removed)}
    delete PATH                     file_delete {path}

and only when that tool is offered. After the tool results come back it says
what they were, plainly; anything else gets its ordinary reply. It never calls
a tool because of what a tool result or a memory says: only the user's own
message selects a call (the grammar is matched against it alone).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from sonia.services.router.providers import BuiltinProvider, GenerationRequest

_PLEASE = r"^\s*(?:please\s+)?"
GRAMMAR: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("file_list", re.compile(_PLEASE + r"list (?:my |the )?files(?: in (?P<path>\S+?))?\W*$",
                             re.IGNORECASE)),
    ("file_search", re.compile(_PLEASE + r"search (?:for )?(?P<query>.+?)(?: in (?P<path>\S+))?"
                               r"\s*$", re.IGNORECASE)),
    ("file_write", re.compile(_PLEASE + r"write (?P<content>.+) to (?P<path>\S+?)\s*$",
                              re.IGNORECASE | re.DOTALL)),
    ("file_delete", re.compile(_PLEASE + r"delete (?P<path>\S+?)\s*$", re.IGNORECASE)),
    ("file_read", re.compile(_PLEASE + r"(?:read|show me|open) (?P<path>\S+?)\s*$",
                             re.IGNORECASE)),
)
MAX_SHOWN_CHARS = 2000


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


def parse(message: str) -> tuple[str, dict[str, Any]] | None:
    """The (function name, arguments) the grammar gives `message`, or None."""
    for name, pattern in GRAMMAR:
        found = pattern.match(message)
        if found is None:
            continue
        groups = {k: v for k, v in found.groupdict().items() if v is not None}
        if name == "file_list":
            return name, {"path": groups.get("path", ".")}
        if name == "file_search":
            return name, {"query": _unquote(groups["query"]), "path": groups.get("path", ".")}
        if name == "file_write":
            return name, {"path": groups["path"], "content": _unquote(groups["content"])}
        return name, {"path": groups["path"]}
    return None


def _offered(tools: Sequence[dict[str, Any]]) -> set[str]:
    names: set[str] = set()
    for tool in tools:
        function = tool.get("function")
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            names.add(function["name"])
    return names


def _describe_result(name: str, content: str) -> str:
    """One plain sentence about a tool's result (the tool message's JSON content)."""
    try:
        result = json.loads(content)
    except ValueError:
        return f"{name} answered: {content[:MAX_SHOWN_CHARS]}"
    if isinstance(result, dict) and "error" in result:
        return f"{name} did not run: {result['error']}"
    if isinstance(result, dict) and isinstance(result.get("entries"), list):
        names = [str(e.get("name")) for e in result["entries"] if isinstance(e, dict)]
        return "Your files: " + (", ".join(names) if names else "(none)")
    if isinstance(result, dict) and isinstance(result.get("matches"), list):
        lines = [f"{m.get('path')}:{m.get('line')}: {m.get('text')}"
                 for m in result["matches"] if isinstance(m, dict)]
        return "Found: " + ("; ".join(lines) if lines else "nothing")
    if isinstance(result, dict) and isinstance(result.get("content"), str):
        return f"{result.get('path', 'The file')} says: {result['content'][:MAX_SHOWN_CHARS]}"
    if isinstance(result, dict) and isinstance(result.get("results"), list):
        found = [str(r.get("content")) for r in result["results"] if isinstance(r, dict)]
        return "I recalled: " + ("; ".join(found) if found else "nothing")
    if name == "file_write" and isinstance(result, dict):
        return f"Wrote {result.get('path', 'the file')}."
    if name == "file_delete" and isinstance(result, dict):
        return f"Deleted {result.get('path', 'it')}."
    return f"{name} answered: {json.dumps(result)[:MAX_SHOWN_CHARS]}"


def step(provider: BuiltinProvider, messages: Sequence[dict[str, Any]],
         recalled: Sequence[str], tools: Sequence[dict[str, Any]]
         ) -> tuple[str | None, list[dict[str, Any]]]:
    """The builtin model's next step: (text, tool calls); see the module docstring."""
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    after = messages[last_user + 1:]
    calls_by_id = {call.get("id"): call for m in after if m.get("role") == "assistant"
                   for call in (m.get("tool_calls") or []) if isinstance(call, dict)}
    results = [m for m in after if m.get("role") == "tool"]
    if results:
        lines = []
        for result in results:
            call = calls_by_id.get(result.get("tool_call_id")) or {}
            name = str((call.get("function") or {}).get("name", "the tool"))
            lines.append(_describe_result(name, str(result.get("content") or "")))
        return " ".join(lines), []
    message = str(messages[last_user].get("content") or "") if last_user >= 0 else ""
    parsed = parse(message)
    if parsed is not None and parsed[0] in _offered(tools):
        name, args = parsed
        return None, [{"id": "call_1", "type": "function",
                       "function": {"name": name, "arguments": json.dumps(args)}}]
    plain = [{"role": m["role"], "content": m.get("content") or ""} for m in messages
             if m.get("role") in {"system", "user", "assistant"} and m.get("content")]
    return provider.reply(GenerationRequest.of(plain or [{"role": "user", "content": ""}],
                                               recalled)), []


__all__ = ["GRAMMAR", "parse", "step"]
