"""The shapes of client tool calling: what is refused (400 naming the place) and what a
client gets back, whole or as chunks."""

from __future__ import annotations

from typing import Any

import pytest

from sonia.errors import InvalidArgument
from sonia.services.gateway import tool_calls
from sonia.services.gateway.openai_compat import CompletionBody, tool_messages

TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}
CALL = {"id": "call_1", "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
STEP: dict[str, Any] = {"message": {"content": None, "tool_calls": [CALL]},
                        "finish_reason": "tool_calls", "model": "m", "provider": "openai",
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1,
                                  "total_tokens": 2}}


@pytest.mark.parametrize(("tools", "where"), [
    ([{"type": "code_interpreter"}], "tools.0: only tools of type 'function'"),
    ([{"type": "function"}], "tools.0.function must be an object"),
    ([{"type": "function", "function": {"name": "a b"}}], "tools.0.function.name"),
    ([TOOL, {"type": "function", "function": {"name": "x", "parameters": []}}],
     "tools.1.function.parameters"),
])
def test_bad_tools_are_refused_naming_the_tool(tools: list[Any], where: str) -> None:
    with pytest.raises(InvalidArgument, match=where):
        tool_calls.check_tools(tools)


def body(*messages: dict[str, Any]) -> CompletionBody:
    return CompletionBody.model_validate({"model": "m", "tools": [TOOL],
                                          "messages": list(messages)})


def test_a_conversation_with_tool_turns_goes_through_as_the_model_sees_it() -> None:
    messages = tool_messages(body(
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"sky": "blue"}'}), 1000)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool"]
    assert messages[2]["tool_calls"] == [CALL]
    assert messages[3]["tool_call_id"] == "call_1"


@pytest.mark.parametrize(("message", "where"), [
    ({"role": "tool", "content": "x"}, "needs tool_call_id"),
    ({"role": "user", "content": "x", "tool_calls": [CALL]}, "only assistant messages"),
    ({"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f"}}]},
     "function.arguments must be a JSON string"),
    ({"role": "function", "content": "x"}, "role 'function' is not supported"),
])
def test_bad_tool_turns_are_refused_naming_the_message(message: dict[str, Any],
                                                        where: str) -> None:
    with pytest.raises(InvalidArgument, match=where):
        tool_messages(body({"role": "user", "content": "hi"}, message), 1000)


def test_a_step_with_calls_is_a_completion_that_finishes_with_tool_calls() -> None:
    completion = tool_calls.completion(STEP, "chatcmpl-1", 0)
    choice = completion["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"] == [CALL]


def test_a_streamed_step_passes_each_piece_on_then_the_finish() -> None:
    """The router's events become OpenAI chunks one for one: text, tool call deltas (the
    arguments in the pieces the model server sent), then the finish and the usage."""
    events: list[dict[str, Any]] = [
        {"type": "delta", "text": "Let me look."},
        {"type": "tool_calls", "tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                               "function": {"name": "get_weather"}}]},
        {"type": "tool_calls", "tool_calls": [{"index": 0,
                                               "function": {"arguments": '{"city": '}}]},
        {"type": "tool_calls", "tool_calls": [{"index": 0,
                                               "function": {"arguments": '"Paris"}'}}]},
        {"type": "end", **STEP},
    ]
    streamed = tool_calls.StreamedChunks("chatcmpl-1", 0, "m")
    chunks = [streamed.first()] + [c for e in events for c in streamed.of(e, True)]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert deltas[1] == {"content": "Let me look."}
    assert deltas[2]["tool_calls"][0]["id"] == "call_1"
    pieces = "".join(d["tool_calls"][0]["function"].get("arguments", "")
                     for d in deltas[2:5])
    assert pieces == '{"city": "Paris"}'
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["usage"]["total_tokens"] == 2 and chunks[-1]["choices"] == []
