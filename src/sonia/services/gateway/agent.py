"""The assistant acts: Sonia's tools offered to the model, each call a proposal to EVA.

In `/v1/chat` the model is offered Sonia's tools as OpenAI functions: each
OpenClaw tool with `.` as `_` (`file_read`, `file_list`, `file_search`,
`file_write`, `file_delete`, `shell_run`; parameters = the tool's argument
schema) and `memory_search`. A turn alternates model steps (router
`POST /v1/generate/tools`) and tool calls until the model answers in words:

- each OpenClaw tool call is proposed to EVA exactly as `POST /v1/actions`
  does it, with `origin: model`, the turn's id and the untrusted sources in the
  turn's context; what EVA allows runs at once (OpenClaw, with EVA's grant) and
  its result goes back to the model as a `tool` message;
- what needs approval pauses the turn (`pending_approval`: action id, tool,
  args, plan hash, tier, untrusted sources); an approver's decision through the
  gateway resumes it (`Agent.decided`), with the result or with "denied" for
  the model; an expiry is noticed when the turn is next read and told to the
  model the same way;
- `memory_search` reads memories through the memory service (a read of the
  user's own store, not an action: nothing changes, nothing to approve).

Taint (DESIGN.md, "Actions and approvals"): recalled memories, every tool
result, and earlier replies of the session that were made with untrusted
content in context (their turn's metadata says so) are untrusted. From the
moment one is in the turn's context, the turn names them on every proposal and
EVA requires a person's approval whatever the tier. The model's words are only
ever data here: they can propose, never approve, deny or reach OpenClaw (the
gateway approves only for an approver key).

Streamed: each model step is read as the router streams it
(`/v1/generate/tools/stream`), so a watcher (`TurnLive`: a session's stream
through the voice service) hears the model's words as they come. A watcher
that leaves interrupts the turn: the model step in flight is closed (and with
it the model server's stream), a tool call in flight finishes first, and the
turn ends with what was said, stored as interrupted. `/v1/chat` has no watcher.

Bounded: at most `gateway.agent_max_steps` model steps and
`gateway.agent_max_tool_calls` tool calls per turn; past either the turn ends
with a reply that says so. Every step is in the turn record (`turns`), kept
`gateway.agent_turn_retention_days` (pruned at start-up and then hourly).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sonia.actions.tools import TOOL_SPECS
from sonia.errors import ApiError, NotFound, Unavailable
from sonia.home import ApiKey
from sonia.kit import correlation
from sonia.kit.periodic import Periodic
from sonia.services.gateway import actions, turns
from sonia.services.gateway.actions_api import Actions
from sonia.services.gateway.assistant import Assistant, Progress
from sonia.services.gateway.state import Gateway

log = logging.getLogger("sonia.gateway.agent")

MEMORY_SEARCH = "memory_search"
PRUNE_EVERY_SECONDS = 3600.0
MAX_RESULT_CHARS = 16_000
"""The longest tool result the model is shown (longer ones are cut, and say so)."""


def function_name(tool: str) -> str:
    return tool.replace(".", "_")


TOOL_OF: dict[str, str] = {function_name(spec.name): spec.name for spec in TOOL_SPECS}
FUNCTIONS: list[dict[str, Any]] = [
    *({"type": "function", "function": {"name": function_name(spec.name),
                                         "description": spec.description,
                                         "parameters": spec.schema}} for spec in TOOL_SPECS),
    {"type": "function", "function": {
        "name": MEMORY_SEARCH, "description": "Search what the user asked Sonia to remember.",
        "parameters": {"type": "object", "additionalProperties": False, "required": ["query"],
                       "properties": {"query": {"type": "string", "minLength": 1,
                                                "maxLength": 1024}}}}},
]
"""Sonia's tools as the model is offered them."""


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    if len(text) > MAX_RESULT_CHARS:
        return text[:MAX_RESULT_CHARS] + f"... [cut: {len(text)} characters in all]"
    return text


def _arguments(raw: Any) -> dict[str, Any] | None:
    """A call's arguments as an object (a JSON string, or an object some servers send),
    or None when they are not one: the model is told, the turn goes on."""
    if isinstance(raw, dict):
        return raw
    try:
        value = json.loads(raw) if isinstance(raw, str) and raw.strip() else {}
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def source_of(tool: str, args: dict[str, Any]) -> str:
    """How an untrusted source is named: `tool:file.read:notes.txt`."""
    where = args.get("path") or args.get("query") or " ".join(map(str, args.get("argv", [])))
    return f"tool:{tool}:{str(where)[:200]}"


@dataclass
class TurnLive:
    """Someone watching a turn as it happens: told each piece of the model's words, and
    able to interrupt it."""

    on_delta: Callable[[str], Awaitable[None]] | None = None
    interrupt: asyncio.Event = field(default_factory=asyncio.Event)
    said: str = ""


class _Interrupted(Exception):
    """The watcher left: the turn ends with what was said."""


class Agent:
    """Runs chat turns in which the model may call Sonia's tools."""

    def __init__(self, gw: Gateway, assistant: Assistant, service: Actions) -> None:
        self.gw = gw
        self.assistant = assistant
        self.actions = service  # proposals and executions go exactly its way
        settings = gw.ctx.settings.gateway
        self.max_steps = settings.agent_max_steps
        self.max_tool_calls = settings.agent_max_tool_calls
        self.retention_seconds = settings.agent_turn_retention_days * 86_400
        self.action_ttl_seconds = settings.action_ttl_seconds
        self._locks: dict[str, asyncio.Lock] = {}
        self._pruner = Periodic("turn pruning", PRUNE_EVERY_SECONDS, self.prune,
                                first_now=True)
        self._watchers: dict[str, Progress] = {}

    # ------------------------------------------------------------------ retention

    async def prune(self, now: float | None = None) -> int:
        """Delete the turn records past retention; how many."""
        now = time.time() if now is None else now
        ended_before = now - self.retention_seconds
        deleted = await self.gw.db.write(lambda c: turns.prune(
            c, ended_before, ended_before - self.action_ttl_seconds))
        if deleted:
            log.info("pruned %d turn records", deleted)
        return deleted

    def start(self) -> None:
        self._pruner.start()

    async def stop(self) -> None:
        await self._pruner.stop()

    # ------------------------------------------------------------------ entry points

    async def turn(self, key: ApiKey, session_id: str, message: str,
                   profile: str | None, progress: Progress | None = None,
                   live: TurnLive | None = None) -> dict[str, Any]:
        """A new chat turn; the answer of `POST /v1/chat`. `progress` is told of each
        step as it completes (a resumed turn, after an approval, tells nobody); `live`
        hears the model's words as they come and may interrupt the turn (a session's
        stream)."""
        recalled, stored_turns = await self.assistant.context_turns(session_id, message,
                                                                      owner=key.id)
        history = [{"role": t["role"], "content": t["content"]} for t in stored_turns]
        record = turns.TurnRecord(
            id=turns.new_turn_id(), key_id=key.id, session_id=session_id, message=message,
            profile=profile, messages=[*history, {"role": "user", "content": message}],
            recalled=[r["content"] for r in recalled])
        for memory in recalled:
            record.taint(f"memory:{memory['id']}")
        for earlier in stored_turns:
            # A reply made after untrusted content may repeat it: it stays untrusted.
            if earlier.get("role") == "assistant" and \
                    (earlier.get("metadata") or {}).get("untrusted_sources"):
                record.taint(f"history:{earlier['id']}")
        if progress is not None:
            self._watchers[record.id] = progress
            await progress({"type": "start", "session_id": session_id,
                            "agent_turn_id": record.id,
                            "recalled": [{k: r[k] for k in ("id", "kind", "content", "score")}
                                         for r in recalled]})
        try:
            await self._advance(record, live)  # saved when it pauses, completes or fails
        finally:
            self._watchers.pop(record.id, None)
        return self.answer(record, recalled)

    async def _tell(self, record: turns.TurnRecord, step: dict[str, Any]) -> None:
        """Tell whoever watches this turn that `step` completed (its public fields)."""
        watcher = self._watchers.get(record.id)
        if watcher is None:
            return
        shown: dict[str, Any] = {k: step[k] for k in ("kind", "function", "tool", "args", "status",
                                      "action_id", "tier", "provider", "model")
                 if k in step}
        if step.get("kind") == "model":
            shown["tool_calls"] = [str((c.get("function") or {}).get("name", ""))
                                   for c in step.get("tool_calls") or []]
        await watcher({"type": "step", **shown})

    async def show(self, key: ApiKey, turn_id: str) -> dict[str, Any]:
        """The turn record (its key's, or any for an approver); notices an expired approval."""
        record = await self.gw.db.read(lambda c: turns.load(c, turn_id))
        if record.key_id != key.id and key.role != "approver":
            raise NotFound(f"no turn {turn_id[:80]!r}")
        if record.status == "pending_approval" and record.pending is not None:
            action_id = str(record.pending["action_id"])
            found = await self.actions.eva.request("GET", f"/v1/decisions/{action_id}")
            if found["status"] == "expired" or (
                    found["status"] == "pending" and (found["expires_at"] or 0) <= time.time()):
                await self.decided(action_id, {"status": "expired"})
                record = await self.gw.db.read(lambda c: turns.load(c, turn_id))
        return record.public()

    async def decided(self, action_id: str, outcome: dict[str, Any]) -> str | None:
        """An approver decided `action_id` (or it expired): resume the turn waiting on it.

        Returns the turn's id, or None when no turn waits on it. A failure to resume
        (the model server is down, say) fails the turn, not the approval."""
        turn_id = await self.gw.db.read(lambda c: turns.find_pending(c, action_id))
        if turn_id is None or not await self.gw.db.write(
                lambda c: turns.claim(c, turn_id, action_id)):
            return turn_id
        record = await self.gw.db.read(lambda c: turns.load(c, turn_id))
        pending = record.pending or {}
        record.pending = None
        record.status = "running"
        status = str(outcome["status"])
        step = {"kind": "decision", "action_id": action_id, "tool": pending.get("tool"),
                "status": status}
        if status == "executed":
            result: Any = outcome.get("result")
            record.taint(source_of(str(pending.get("tool")), dict(pending.get("args") or {})))
        elif status == "failed":
            result = {"error": outcome.get("error"), "code": outcome.get("code")}
            step["error"] = result
        else:
            result = {"error": f"the action was {status} by "
                               f"{'an approver' if status == 'denied' else 'its deadline'}; "
                               "it did not run"}
        step["result"] = _shown(result)
        record.steps.append(step)
        record.messages.append({"role": "tool", "tool_call_id": pending.get("call_id"),
                                "content": step["result"]})
        try:
            await self._advance(record)
        except Exception:  # the action already ran: its approval must not fail with the turn
            log.exception("turn %s could not resume after %s was %s", turn_id, action_id,
                          status)
        event = {"type": "turn.resumed", "decision": status,
                 **{k: v for k, v in self.answer(record, []).items() if k != "memory"}}
        for listener in self.gw.on_turn_resumed:
            try:
                await listener(record.session_id, event)
            except Exception:  # a stream that went away must not fail the approval
                log.exception("could not tell the streams of %s", record.session_id)
        return turn_id

    # ------------------------------------------------------------------ the loop

    async def _advance(self, record: turns.TurnRecord, live: TurnLive | None = None) -> None:
        """Run the turn until it completes, pauses for approval or fails (saved each step)."""
        lock = self._locks.setdefault(record.id, asyncio.Lock())
        async with lock:
            try:
                await self._run(record, live)
            except _Interrupted:
                record.interrupted = True
                await self._finish(record, live.said if live is not None else "")
            except Exception as exc:
                record.status = "failed"
                record.error = ({"code": exc.code, "detail": exc.detail}
                                if isinstance(exc, ApiError)
                                else {"code": "INTERNAL", "detail": type(exc).__name__})
                await self._save(record)
                raise
            finally:
                if record.status != "running":
                    self._locks.pop(record.id, None)

    async def _run(self, record: turns.TurnRecord, live: TurnLive | None) -> None:
        while True:
            while record.queue:
                call = record.queue.pop(0)
                if await self._call(record, call) == "paused":
                    await self._save(record)
                    return
            if record.model_steps >= self.max_steps:
                await self._finish(record, f"I stopped: this turn reached its limit of "
                                           f"{self.max_steps} model steps.")
                return
            if live is not None and live.interrupt.is_set():
                raise _Interrupted
            step = await self._model_step(record, live)
            record.model_steps += 1
            for name in ("prompt_tokens", "completion_tokens", "total_tokens"):
                record.usage[name] += int(step["usage"].get(name, 0))
            record.model, record.provider = step["model"], step["provider"]
            message = step["message"]
            calls = [c for c in (message.get("tool_calls") or []) if isinstance(c, dict)]
            record.steps.append({"kind": "model", "content": message.get("content"),
                                 "tool_calls": list(calls), "model": step["model"],
                                 "provider": step["provider"],
                                 "tools_refused": bool(step.get("tools_refused"))})
            await self._tell(record, record.steps[-1])
            if not calls:
                await self._finish(record, str(message.get("content") or ""))
                return
            record.messages.append({"role": "assistant", "content": message.get("content"),
                                    "tool_calls": calls})
            record.queue = list(calls)  # a copy: the queue is consumed, the history is not
            await self._save(record)

    async def _model_step(self, record: turns.TurnRecord,
                          live: TurnLive | None) -> dict[str, Any]:
        """One model step, read as it streams; its `end` event (the whole step)."""
        ended: dict[str, Any] = {}

        async def read() -> None:
            async for event in self.assistant.tool_step_events(self._request(record)):
                kind = event.get("type")
                if kind == "delta" and live is not None:
                    live.said += str(event.get("text", ""))
                    if live.on_delta is not None:
                        await live.on_delta(str(event.get("text", "")))
                elif kind == "end":
                    ended.update(event)

        if live is None:
            await read()
        else:
            reading = asyncio.ensure_future(read())
            waiting = asyncio.ensure_future(live.interrupt.wait())
            try:
                await asyncio.wait({reading, waiting}, return_when=asyncio.FIRST_COMPLETED)
            except BaseException:
                reading.cancel()
                waiting.cancel()
                raise
            waiting.cancel()
            if not reading.done():  # interrupted: close the stream, and the model's with it
                reading.cancel()
                await asyncio.wait({reading})
                raise _Interrupted
            reading.result()
        if not ended:
            raise Unavailable("the model's step ended without its last event")
        return ended

    def _request(self, record: turns.TurnRecord) -> dict[str, Any]:
        body: dict[str, Any] = {"messages": record.messages, "tools": FUNCTIONS,
                                "recalled": record.recalled, "sonia_tools": True}
        if record.profile is not None:
            body["profile"] = record.profile
        return body

    async def _call(self, record: turns.TurnRecord, call: dict[str, Any]) -> str:
        """Handle one tool call: its result appended for the model, or 'paused'."""
        call_id = str(call.get("id") or f"call_{record.tool_calls + 1}")
        raw = call.get("function")
        function: dict[str, Any] = raw if isinstance(raw, dict) else {}
        name = str(function.get("name", ""))
        step: dict[str, Any] = {"kind": "tool_call", "call_id": call_id, "function": name}
        record.steps.append(step)
        if record.tool_calls >= self.max_tool_calls:
            result: Any = {"error": f"this turn reached its limit of {self.max_tool_calls} "
                                    "tool calls; answer with what you have"}
            step["status"] = "refused"
        else:
            record.tool_calls += 1
            args = _arguments(function.get("arguments"))
            if args is None:
                result = {"error": "the arguments must be a JSON object"}
                step["status"] = "refused"
            else:
                step["args"] = args
                outcome = await self._act(record, call_id, name, args, step)
                if outcome is None:
                    await self._tell(record, step)
                    return "paused"
                result = outcome
        step["result"] = _shown(result)  # what the model was shown, in the record too
        record.messages.append({"role": "tool", "tool_call_id": call_id,
                                "content": step["result"]})
        await self._tell(record, step)
        return "done"

    async def _act(self, record: turns.TurnRecord, call_id: str, name: str,
                   args: dict[str, Any], step: dict[str, Any]) -> Any:
        """Run or propose one call; its result, or None when it waits for approval."""
        if name == MEMORY_SEARCH:
            query = args.get("query")
            if not isinstance(query, str) or not query.strip():
                step["status"] = "refused"
                return {"error": "memory_search needs a non-empty query"}
            found = await self.assistant.recall(query[:1024], owner=record.key_id)
            for memory in found:
                record.taint(f"memory:{memory['id']}")
            step["status"] = "executed"
            return {"results": [{"id": m["id"], "content": m["content"]} for m in found]}
        tool = TOOL_OF.get(name)
        if tool is None:
            step["status"] = "refused"
            return {"error": f"there is no tool {name!r}; tools are "
                             f"{', '.join(f['function']['name'] for f in FUNCTIONS)}"}
        step["tool"] = tool
        step["untrusted_sources"] = list(record.untrusted)
        try:
            decision = await self.actions.eva.request("POST", "/v1/decisions", json_body={
                "tool": tool, "args": args, "principal": f"key:{record.key_id}",
                "session_id": record.session_id, "origin": "model", "turn_id": record.id,
                "untrusted": record.untrusted})
        except ApiError as exc:
            if exc.status >= 500:
                raise
            step.update(status="refused", error={"code": exc.code, "detail": exc.detail},
                        action_id=exc.extra.get("action_id"))
            return {"error": exc.detail, "code": exc.code}
        action_id = str(decision["action_id"])
        step.update(action_id=action_id, tier=decision["tier"], plan_hash=decision["plan_hash"],
                    decision=decision["decision"])
        if decision["decision"] != "allow":
            await self.gw.db.write(lambda c: actions.save_action(
                c, action_id, record.key_id, tool, "pending_approval"))
            step["status"] = "pending_approval"
            record.status = "pending_approval"
            record.pending = {"action_id": action_id, "call_id": call_id, "tool": tool,
                              "args": args, "tier": decision["tier"],
                              "plan_hash": decision["plan_hash"], "reason": decision["reason"],
                              "expires_at": actions.iso_time(decision.get("expires_at")),
                              "untrusted_sources": list(record.untrusted)}
            return None
        try:
            result = await self.actions.run_granted(record.key_id, action_id, tool, args,
                                                    str(decision["grant"]))
        except ApiError as exc:
            if exc.status >= 500:
                raise
            step.update(status="failed", error={"code": exc.code, "detail": exc.detail})
            return {"error": exc.detail, "code": exc.code}
        step["status"] = "executed"
        record.taint(source_of(tool, args))
        return result

    async def _finish(self, record: turns.TurnRecord, reply: str) -> None:
        record.reply = reply
        stored = await self.assistant.store_exchange(
            record.session_id, record.message, reply or None,
            {"model": record.model, "provider": record.provider, "agent_turn_id": record.id,
             "untrusted_sources": record.untrusted, "correlation_id": correlation.current(),
             **({"interrupted": True} if record.interrupted else {})},
            owner=record.key_id)
        record.memory_turn_id = str(stored["turns"][-1]["id"])
        record.stored = list(stored["memories"])
        record.status = "completed"
        await self._save(record)

    async def _save(self, record: turns.TurnRecord) -> None:
        await self.gw.db.write(lambda c: turns.save(c, record))

    # ------------------------------------------------------------------ answers

    @staticmethod
    def answer(record: turns.TurnRecord, recalled: list[dict[str, Any]]) -> dict[str, Any]:
        stored = record.stored
        reply = record.reply or ""
        if record.pending is not None and not reply:
            reply = (f"Waiting for an approver to run {record.pending['tool']} "
                     f"(action {record.pending['action_id']}).")
        answer: dict[str, Any] = {
            "reply": reply,
            "status": record.status,
            "session_id": record.session_id,
            "turn_id": record.memory_turn_id,
            "agent_turn_id": record.id,
            "model": record.model,
            "provider": record.provider,
            "memory": {
                "recalled": [{k: r[k] for k in ("id", "kind", "content", "score")}
                             for r in recalled],
                "stored": [{k: m[k] for k in ("id", "kind", "content", "new")} for m in stored],
            },
            "usage": record.usage,
            "steps": len(record.steps),
        }
        if record.pending is not None:
            answer["pending_approval"] = record.pending
        return answer


__all__ = ["FUNCTIONS", "MEMORY_SEARCH", "TOOL_OF", "Agent", "TurnLive", "function_name",
           "source_of"]
