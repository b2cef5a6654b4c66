"""Client tool calling through `/v1/chat/completions`, with the official `openai` SDK.

The upstream is a real OpenAI-compatible HTTP server (`ScriptedModelServer`)
that answers with `tool_calls` when it is offered a tool and with text once it
has the tool's result; the test checks that the tools and the tool turns reach
it unchanged and that the SDK gets the calls back, streamed too. A stack on the
builtin model refuses a request with tools (400), never dropping them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from sonia.gates.security.model_server import ScriptedModelServer, tool_call
from sonia.testing import FreshStack

pytestmark = pytest.mark.integration

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}


def weather_model(request: dict[str, Any]) -> dict[str, Any]:
    """Calls get_weather for Paris until it has the result, then says it."""
    results = [m for m in request["messages"] if m["role"] == "tool"]
    if results:
        return {"content": f"It is {json.loads(results[-1]['content'])['sky']} in Paris."}
    if any(t["function"]["name"] == "get_weather" for t in request.get("tools", [])):
        return {"tool_calls": [tool_call("call_w1", "get_weather", {"city": "Paris"})]}
    return {"content": "no tools offered"}


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedModelServer]:
    with ScriptedModelServer(weather_model) as server:
        yield server


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory,
          upstream: ScriptedModelServer) -> Iterator[FreshStack]:
    config = {"router": {"openai_base_url": upstream.url, "openai_model": "scripted"}}
    with FreshStack(tmp_path_factory.mktemp("tools-home"), config=config) as s:
        s.up()
        yield s


def client(stack: FreshStack, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url() + "/v1", api_key=key, max_retries=0, timeout=60)


def test_the_sdk_gets_tool_calls_and_sends_the_result_back(stack: FreshStack,
                                                            upstream: ScriptedModelServer) -> None:
    sdk = client(stack, stack.user_key)
    first = sdk.chat.completions.create(
        model="scripted", tools=[WEATHER],  # type: ignore[list-item]
        messages=[{"role": "user", "content": "weather in Paris?"}])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert [(c.id, c.function.name, json.loads(c.function.arguments))  # type: ignore[union-attr]
            for c in calls] == [
        ("call_w1", "get_weather", {"city": "Paris"})]
    assert upstream.requests[-1]["tools"][0]["function"]["name"] == "get_weather"

    second = sdk.chat.completions.create(
        model="scripted", tools=[WEATHER],  # type: ignore[list-item]
        messages=[{"role": "user", "content": "weather in Paris?"},
                  choice.message.model_dump(exclude_none=True),  # type: ignore[list-item]
                  {"role": "tool", "tool_call_id": "call_w1", "content": '{"sky": "sunny"}'}])
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == "It is sunny in Paris."
    seen = upstream.requests[-1]["messages"]
    assert seen[-2]["tool_calls"][0]["id"] == "call_w1"
    assert seen[-1] == {"role": "tool", "tool_call_id": "call_w1", "content": '{"sky": "sunny"}'}


def test_a_streamed_tool_call_arrives_as_delta_chunks(stack: FreshStack,
                                                     upstream: ScriptedModelServer) -> None:
    sdk = client(stack, stack.user_key)
    stream = sdk.chat.completions.create(
        model="scripted", tools=[WEATHER], stream=True,  # type: ignore[list-item]
        messages=[{"role": "user", "content": "weather in Paris?"}])
    names, pieces, finish = [], [], None
    for chunk in stream:
        for choice in chunk.choices:  # type: ignore[union-attr]
            for call in choice.delta.tool_calls or []:
                if call.function and call.function.name:
                    names.append(call.function.name)
                if call.function and call.function.arguments:
                    pieces.append(call.function.arguments)
            finish = choice.finish_reason or finish
    assert names == ["get_weather"]
    assert json.loads("".join(pieces)) == {"city": "Paris"}
    assert finish == "tool_calls"
    # streamed end to end: the model server was asked to stream, and its pieces came through
    assert upstream.requests[-1]["stream"] is True
    assert len(pieces) >= 2, pieces


def test_malformed_tools_are_refused_with_400(stack: FreshStack) -> None:
    sdk = client(stack, stack.user_key)
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.chat.completions.create(
            model="scripted", tools=[{"type": "function",
                                      "function": {"name": "bad name!"}}],
            messages=[{"role": "user", "content": "hi"}])
    assert "tools.0.function.name" in refused.value.response.json()["detail"]


def test_the_builtin_model_refuses_tools_instead_of_dropping_them(tmp_path: Path) -> None:
    with FreshStack(tmp_path / "home") as builtin_stack:
        builtin_stack.up()
        sdk = client(builtin_stack, builtin_stack.user_key)
        with pytest.raises(openai.BadRequestError) as refused:
            sdk.chat.completions.create(
                model="sonia", tools=[WEATHER],  # type: ignore[list-item]
                messages=[{"role": "user", "content": "weather in Paris?"}])
        assert refused.value.status_code == 400
        problem = refused.value.response.json()
        assert problem["code"] == "INVALID_ARGUMENT"
        assert "sonia-builtin cannot call tools" in problem["detail"]
