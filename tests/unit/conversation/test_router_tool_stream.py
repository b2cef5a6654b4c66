"""A streamed tool-calling step put back together: OpenAI's chunk deltas in, one step out.

Model servers stream a tool call as a first delta with its index, id and name,
then its `arguments` in pieces; several calls interleave by index. The builder
must give the whole step `/v1/generate/tools` would have answered, and say
what each chunk added (for the stream's events).
"""

from __future__ import annotations

from typing import Any

from sonia.services.router.providers import BuiltinProvider, completion_as_chunk
from sonia.services.router.tools import StepBuilder, ToolsBody

BODY = ToolsBody.model_validate({"messages": [{"role": "user", "content": "hi"}],
                                 "tools": [{"type": "function",
                                            "function": {"name": "f", "parameters": {}}}]})


def chunk(delta: dict[str, Any], finish: str | None = None, **more: Any) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **more}


def call(index: int, **fields: Any) -> dict[str, Any]:
    return chunk({"tool_calls": [{"index": index, **fields}]})


def test_interleaved_calls_with_arguments_in_pieces_become_whole_calls() -> None:
    builder = StepBuilder()
    events = []
    for piece in [chunk({"role": "assistant", "content": "Checking "}),
                  chunk({"content": "both."}),
                  call(0, id="call_a", type="function", function={"name": "weather",
                                                                  "arguments": ""}),
                  call(1, id="call_b", type="function", function={"name": "time"}),
                  call(0, function={"arguments": '{"city": "Pa'}),
                  call(1, function={"arguments": '{"tz": "UTC"}'}),
                  call(0, function={"arguments": 'ris"}'}),
                  chunk({}, "tool_calls", usage={"prompt_tokens": 5, "completion_tokens": 7},
                        model="m-1")]:
        events += builder.add(piece)
    step = builder.step(BuiltinProvider(), BODY)
    assert step.content == "Checking both."
    assert step.tool_calls == [
        {"id": "call_a", "type": "function",
         "function": {"name": "weather", "arguments": '{"city": "Paris"}'}},
        {"id": "call_b", "type": "function",
         "function": {"name": "time", "arguments": '{"tz": "UTC"}'}}]
    assert (step.finish_reason, step.model) == ("tool_calls", "m-1")
    assert step.usage == {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
    assert [e["type"] for e in events] == ["delta", "delta"] + ["tool_calls"] * 5


def test_a_call_without_an_id_gets_one_and_a_bad_index_does_not_crash() -> None:
    builder = StepBuilder()
    builder.add(call(0, function={"name": "f", "arguments": "{}"}))
    builder.add(chunk({"tool_calls": [{"index": "x", "function": {"name": "g"}}]}))
    builder.add(chunk({"tool_calls": ["not a call"]}))
    step = builder.step(BuiltinProvider(), BODY)
    assert [c["id"] for c in step.tool_calls] == ["call_1", "call_2"]
    assert step.finish_reason == "tool_calls"


def test_a_server_that_ignores_stream_answers_one_completion_read_as_one_chunk() -> None:
    completion = {"model": "m", "usage": {"prompt_tokens": 1, "completion_tokens": 1},
                  "choices": [{"finish_reason": "tool_calls", "message": {
                      "role": "assistant", "content": None,
                      "tool_calls": [{"id": "c1", "type": "function",
                                      "function": {"name": "f", "arguments": "{}"}}]}}]}
    builder = StepBuilder()
    builder.add(completion_as_chunk(completion))
    step = builder.step(BuiltinProvider(), BODY)
    assert step.tool_calls[0]["id"] == "c1" and step.finish_reason == "tool_calls"
