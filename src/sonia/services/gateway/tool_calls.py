"""Client tool calling on `/v1/chat/completions`: the client's tools go to the model and
the model's `tool_calls` come back to the client, which runs them itself.

A request takes this path when it carries `tools`, or a history with tool turns
(an assistant message with `tool_calls`, a `tool` message answering one). The
gateway checks the shapes (400 INVALID_ARGUMENT naming the message or tool),
asks the router for one step (`POST /v1/generate/tools`) and answers a
`chat.completion` whose message carries the model's `tool_calls` and whose
`finish_reason` is `tool_calls`. With `stream: true` the step streams as the
model makes it (router `POST /v1/generate/tools/stream`): the role, then each
piece of text and each tool call delta (index, id and name first, then the
`arguments` in the pieces the model server sent) as `chat.completion.chunk`s,
then the finish reason (and the usage when `stream_options.include_usage`).

Sonia runs none of these tools: they are the client's. A model that cannot call
tools (the builtin) makes the router answer 400 saying so, never a reply that
silently ignored them. Sonia's own tools, which do run (through EVA), are
offered on `/v1/chat` instead (`agent`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from typing import Any

from sonia.errors import InvalidArgument

FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_ARGUMENT_CHARS = 65_536


def check_tools(tools: Sequence[Any]) -> list[dict[str, Any]]:
    """The client's tool definitions, checked: OpenAI function tools with valid names."""
    checked: list[dict[str, Any]] = []
    for index, tool in enumerate(tools):
        where = f"tools.{index}"
        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise InvalidArgument(f"{where}: only tools of type 'function' are supported")
        function = tool.get("function")
        if not isinstance(function, dict):
            raise InvalidArgument(f"{where}.function must be an object")
        name = function.get("name")
        if not isinstance(name, str) or not FUNCTION_NAME.match(name):
            raise InvalidArgument(f"{where}.function.name must be 1-64 letters, digits, "
                                  "'_' or '-'")
        parameters = function.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(parameters, dict):
            raise InvalidArgument(f"{where}.function.parameters must be a JSON schema object")
        checked.append({"type": "function", "function": {
            "name": name, "description": str(function.get("description", "")),
            "parameters": parameters}})
    return checked


def check_tool_calls(calls: Any, where: str) -> list[dict[str, Any]]:
    """An assistant message's `tool_calls`, checked and normalised."""
    if not isinstance(calls, list) or not calls:
        raise InvalidArgument(f"{where}.tool_calls must be a non-empty list")
    checked: list[dict[str, Any]] = []
    for index, call in enumerate(calls):
        at = f"{where}.tool_calls.{index}"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(call, dict) or not isinstance(call.get("id"), str) \
                or not isinstance(function, dict):
            raise InvalidArgument(f"{at} must be {{id, type: function, function: "
                                  "{name, arguments}}")
        name, arguments = function.get("name"), function.get("arguments")
        if not isinstance(name, str) or not FUNCTION_NAME.match(name):
            raise InvalidArgument(f"{at}.function.name is not a valid function name")
        if not isinstance(arguments, str) or len(arguments) > MAX_ARGUMENT_CHARS:
            raise InvalidArgument(f"{at}.function.arguments must be a JSON string of at most "
                                  f"{MAX_ARGUMENT_CHARS} characters")
        checked.append({"id": call["id"], "type": "function",
                        "function": {"name": name, "arguments": arguments}})
    return checked


def completion(step: dict[str, Any], completion_id: str, created: int) -> dict[str, Any]:
    """The router's step as an OpenAI `chat.completion`."""
    message: dict[str, Any] = {"role": "assistant", "content": step["message"].get("content")}
    calls = step["message"].get("tool_calls") or []
    if calls:
        message["tool_calls"] = calls
    return {"id": completion_id, "object": "chat.completion", "created": created,
            "model": step["model"],
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": "tool_calls" if calls else step["finish_reason"]}],
            "usage": step["usage"]}


class StreamedChunks:
    """The router's streamed step (delta, tool_calls, end events) as the
    `chat.completion.chunk`s of an OpenAI stream."""

    def __init__(self, completion_id: str, created: int, model: str) -> None:
        self.completion_id = completion_id
        self.created = created
        self.model = model

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": self.completion_id, "object": "chat.completion.chunk",
                "created": self.created, "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish,
                             "logprobs": None}]}

    def first(self) -> dict[str, Any]:
        return self._chunk({"role": "assistant", "content": ""})

    def of(self, event: dict[str, Any], include_usage: bool) -> Iterator[dict[str, Any]]:
        kind = event.get("type")
        if kind == "delta" and event.get("text"):
            yield self._chunk({"content": event["text"]})
        elif kind == "tool_calls" and event.get("tool_calls"):
            yield self._chunk({"tool_calls": event["tool_calls"]})
        elif kind == "end":
            calls = (event.get("message") or {}).get("tool_calls") or []
            yield self._chunk({}, "tool_calls" if calls else str(event.get("finish_reason")))
            if include_usage:
                yield {"id": self.completion_id, "object": "chat.completion.chunk",
                       "created": self.created, "model": self.model, "choices": [],
                       "usage": event.get("usage")}


def dumps(payload: dict[str, Any]) -> str:
    return json.dumps(payload, separators=(",", ":"))


__all__ = ["StreamedChunks", "check_tool_calls", "check_tools", "completion", "dumps"]
