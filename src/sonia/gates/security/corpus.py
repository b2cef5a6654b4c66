"""Every payload of the public attack lists in `corpus/`, sent through the live API.

    path-traversal/*.txt     each line as the path of `file.read`
    command-injection/*.txt  each line as a command (`argv = [line]`) and as an
                             argument of an allowlisted one (`argv = ["cat", line]`)

A path payload passes when it is refused (PATH_OUTSIDE_SANDBOX, SYMLINK_DENIED,
INVALID_PATH, NOT_FOUND, POLICY_DENIED, INVALID_ARGUMENT) or when it reads
exactly the decoy planted inside the workspace under the name it asks for. A
command payload passes when it is refused, or when only `cat` ran with it as
one literal argument (or it is itself the bare name of an allowlisted command):
nothing in the answer may show that anything else ran (`uid=`), and no answer
may contain the canary planted outside the workspace or a real /etc/passwd line.
Requests go out concurrently (an httpx.AsyncClient under a semaphore); `stride`
keeps every n-th line (1: all of them).
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

import sonia
from sonia.gates.security.probe import INSIDE, Probe

__all__ = ["CORPUS_KINDS", "CorpusPayload", "corpus_dir", "load_payloads", "run_corpus"]

CORPUS_KINDS = {"path-traversal": ("file.read",), "command-injection": ("argv0", "argument")}
PATH_REFUSALS = {(403, "PATH_OUTSIDE_SANDBOX"), (403, "SYMLINK_DENIED"), (400, "INVALID_PATH"),
                 (404, "NOT_FOUND"), (403, "POLICY_DENIED"), (400, "INVALID_ARGUMENT")}
COMMAND_REFUSALS = {(400, "INVALID_COMMAND"), (400, "INVALID_ARGUMENT"),
                    (403, "SYMLINK_DENIED"), (403, "POLICY_DENIED"),
                    (403, "PATH_OUTSIDE_SANDBOX"), (400, "INVALID_PATH")}


def corpus_dir() -> Path:
    """`corpus/` at the root of the source tree this package runs from."""
    return Path(sonia.__file__).resolve().parents[2] / "corpus"


@dataclass(frozen=True)
class CorpusPayload:
    file: str
    line: int
    kind: str
    payload: str


def load_payloads(root: Path, stride: int) -> list[CorpusPayload]:
    """Every `stride`-th non-empty line of each list, for each way it is sent."""
    payloads: list[CorpusPayload] = []
    for folder, kinds in CORPUS_KINDS.items():
        for path in sorted((root / folder).glob("*.txt")):
            text = path.read_text(encoding="utf-8", errors="surrogateescape")
            lines = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line]
            for index, (number, line) in enumerate(lines):
                if index % stride:
                    continue
                value = line.replace("{FILE}", "etc/passwd")
                value = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                for kind in kinds:
                    payloads.append(CorpusPayload(f"{folder}/{path.name}", number, kind, value))
    return payloads


def _body(item: CorpusPayload) -> dict[str, Any]:
    if item.kind == "file.read":
        return {"tool": "file.read", "args": {"path": item.payload}}
    argv = [item.payload] if item.kind == "argv0" else ["cat", item.payload]
    return {"tool": "shell.run", "args": {"argv": argv}}


def judge(probe: Probe, item: CorpusPayload, status: int, text: str,
          allowlisted: frozenset[str] = frozenset()) -> tuple[str | None, str]:
    """(code, why it failed or "") of one answer."""
    try:
        body = json.loads(text)
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    code = body.get("code")
    leaks = probe.leaked(text)
    if leaks:
        return code, f"the answer contains {leaks}"
    if status == 200:
        result = body.get("result", {})
        if item.kind == "file.read":
            if result.get("content") != INSIDE:
                return code, "read a file other than the decoy inside the workspace"
            return code, ""
        if item.kind == "argv0" and item.payload not in allowlisted:
            return code, "a non-allowlisted command ran"
        output = f"{result.get('stdout', '')}{result.get('stderr', '')}"
        if "uid=" in output or "gid=" in output:
            return code, "the output shows that another program ran"
        return code, ""
    allowed = PATH_REFUSALS if item.kind == "file.read" else COMMAND_REFUSALS
    if (status, code) not in allowed:
        return code, f"answered {status} {code}, which is neither a refusal nor a safe run"
    return code, ""


async def run_corpus(probe: Probe, payloads: list[CorpusPayload], *, concurrency: int,
                     on_done: Callable[[], None] | None = None) -> list[dict[str, Any]]:
    """Send every payload through the gateway; one row per payload, in payload order."""
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency,
                          keepalive_expiry=1.0)  # well before the server drops idle ones

    async with httpx.AsyncClient(base_url=probe.stack.url("gateway"), timeout=120,
                                 headers=probe.user(), limits=limits,
                                 trust_env=False) as client:
        registry = (await client.get("/v1/tools")).json()
        allowlisted = frozenset(str(name) for name in registry.get("commands", ()))

        async def one(item: CorpusPayload) -> dict[str, Any]:
            async with gate:
                try:
                    response = await client.post("/v1/actions", json=_body(item))
                    status, text = response.status_code, response.text
                    code, why = judge(probe, item, status, text, allowlisted)
                except httpx.HTTPError as exc:
                    status, code, why = 0, None, f"no answer: {type(exc).__name__}"
            if on_done is not None:
                on_done()
            return {"file": item.file, "line": item.line, "kind": item.kind,
                    "payload": item.payload, "status": status, "code": code,
                    "passed": not why, "why": why}

        return list(await asyncio.gather(*(one(item) for item in payloads)))


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    by_kind: dict[str, Counter[str]] = {}
    for row in rows:
        outcome = "executed-safely" if row["status"] == 200 else str(row["code"])
        by_kind.setdefault(row["kind"], Counter())[outcome] += 1
    return {
        "payloads_sent": len(rows),
        "passed": sum(1 for r in rows if r["passed"]),
        "failed": sum(1 for r in rows if not r["passed"]),
        "outcomes": {kind: dict(sorted(c.items())) for kind, c in sorted(by_kind.items())},
        "files": sorted({r["file"] for r in rows}),
    }
