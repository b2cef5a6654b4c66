"""Providers: the builtin model's replies, the SSE decoder, and how HTTP failures are named."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from sonia.errors import ConfigError, Timeout, Unavailable
from sonia.services.router import providers
from sonia.services.router.providers import (
    BuiltinProvider,
    GenerationRequest,
    LlamaCppProvider,
    OpenAIProvider,
    Provider,
    SSEDecoder,
    chunk_delta,
    word_deltas,
)


def ask(message: str, recalled: tuple[str, ...] = (),
        history: tuple[tuple[str, str], ...] = ()) -> str:
    messages = [{"role": role, "content": text} for role, text in history]
    messages.append({"role": "user", "content": message})
    return BuiltinProvider().reply(GenerationRequest.of(messages, recalled))


def test_exported_names_are_sorted_and_exist() -> None:
    assert providers.__all__ == sorted(providers.__all__)
    assert all(hasattr(providers, name) for name in providers.__all__)


def test_every_provider_class_satisfies_the_protocol() -> None:
    openai = OpenAIProvider("http://127.0.0.1:9/v1", "m")
    assert isinstance(BuiltinProvider(), Provider)
    assert isinstance(openai, Provider)
    asyncio.run(openai.aclose())


def test_it_says_plainly_what_it_is() -> None:
    assert "built-in offline model" in ask("hello")
    assert "built-in offline model" in ask("help")


def test_a_stated_fact_is_acknowledged_from_sonias_side() -> None:
    assert ask("my favourite colour is teal") == "Noted: your favourite colour is teal."
    assert ask("Remember that I am allergic to peanuts.") == "Noted: you are allergic to peanuts."


def test_a_question_is_answered_from_the_recalled_memory_that_fits_best() -> None:
    recalled = ("I live in Lisbon", "my favourite colour is teal")
    assert ask("What is my favourite colour?", recalled) == \
        "You told me: my favourite colour is teal."
    assert ask("where do I live?", recalled) == "You told me: I live in Lisbon."


def test_a_question_is_answered_from_an_earlier_turn_of_the_conversation() -> None:
    history = (("user", "my name is Ana"), ("assistant", "Noted: your name is Ana."))
    assert ask("what's my name", history=history) == "You told me: my name is Ana."


def test_it_admits_what_it_was_never_told() -> None:
    assert ask("what is the capital of France?").startswith("I don't know that yet")


def test_other_messages_get_what_it_knows_about_them() -> None:
    reply = ask("tell me about colours", ("my favourite colour is teal",))
    assert reply == "Here is what I know that relates to that: my favourite colour is teal."


def test_the_same_request_always_gets_the_same_reply() -> None:
    request = GenerationRequest.of([{"role": "user", "content": "what do I like?"}],
                                   ["I like hiking", "I like tea"])
    assert len({BuiltinProvider().reply(request) for _ in range(20)}) == 1


def test_streamed_deltas_are_words_that_add_up_to_the_reply() -> None:
    request = GenerationRequest.of([{"role": "user", "content": "hello"}])
    builtin = BuiltinProvider()

    async def collect() -> list[str]:
        return [delta async for delta in builtin.stream(request)]

    deltas = asyncio.run(collect())
    generation = asyncio.run(builtin.generate(request))
    assert "".join(deltas) == generation.text
    assert all(len(delta.split()) == 1 for delta in deltas)
    assert generation.usage.completion_tokens == len(generation.text.split())
    assert generation.usage.prompt_tokens == 1


def test_max_tokens_caps_the_reply_in_words() -> None:
    request = GenerationRequest.of([{"role": "user", "content": "help"}], max_tokens=5)
    assert len(BuiltinProvider().reply(request).split()) == 5


@pytest.mark.parametrize("text", ["", "one", "two words", " lead and trail ", "a\n\nb\tc"])
def test_word_deltas_reassemble_exactly(text: str) -> None:
    assert "".join(word_deltas(text)) == text


SSE_STREAM = (
    b": keep-alive comment\r\n\r\n"
    b'data: {"choices":[{"delta":{"role":"assistant"}}]}\r\n\r\n'
    b'data: {"choices":[{"delta":{"content":"Hel"}}]}\n\n'
    b'data: {"choices":[{"delta":{"content":"lo \xc3\xa9"}}]}\r\r'
    b"event: ignored\ndata: [DONE]\n\n"
)


def _split_everywhere(data: bytes) -> Iterator[list[bytes]]:
    for cut in range(len(data) + 1):
        yield [data[:cut], data[cut:]]
    yield [data[i:i + 1] for i in range(len(data))]


def test_the_sse_decoder_reads_events_however_the_bytes_are_split() -> None:
    expected = [
        '{"choices":[{"delta":{"role":"assistant"}}]}',
        '{"choices":[{"delta":{"content":"Hel"}}]}',
        '{"choices":[{"delta":{"content":"lo é"}}]}',
        "[DONE]",
    ]
    for chunks in _split_everywhere(SSE_STREAM):
        decoder = SSEDecoder()
        events = [event for chunk in chunks for event in decoder.feed(chunk)]
        events += decoder.close()
        assert events == expected
    assert [chunk_delta(e) for e in expected[:3]] == ["", "Hel", "lo é"]


def test_multi_line_data_is_joined_and_an_unterminated_event_is_flushed() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: one\ndata: two\n\ndata:three") == ["one\ntwo"]
    assert decoder.close() == ["three"]


def test_a_malformed_chunk_is_unavailable() -> None:
    with pytest.raises(Unavailable):
        chunk_delta("{not json")


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_refused_connection_is_unavailable() -> None:
    provider = OpenAIProvider(f"http://127.0.0.1:{_closed_port()}/v1", "m", timeout=2.0)
    request = GenerationRequest.of([{"role": "user", "content": "hi"}])

    async def scenario() -> None:
        try:
            with pytest.raises(Unavailable) as raised:
                await provider.generate(request)
            assert raised.value.__cause__ is not None
            with pytest.raises(Unavailable):
                async for _ in provider.stream(request):
                    pass
            assert await provider.health() is False
        finally:
            await provider.aclose()

    asyncio.run(scenario())


def test_a_server_that_never_answers_is_a_timeout() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # accepts connections (the kernel does) but never replies
        port = silent.getsockname()[1]
        provider = OpenAIProvider(f"http://127.0.0.1:{port}/v1", "m", timeout=0.3)
        request = GenerationRequest.of([{"role": "user", "content": "hi"}])

        async def scenario() -> None:
            try:
                with pytest.raises(Timeout):
                    await provider.generate(request)
                with pytest.raises(Timeout):
                    async for _ in provider.stream(request):
                        pass
            finally:
                await provider.aclose()

        asyncio.run(scenario())


def test_the_request_body_carries_recalled_memories_as_a_system_message() -> None:
    provider = OpenAIProvider("http://127.0.0.1:9/v1", "default-model")
    request = GenerationRequest.of([{"role": "user", "content": "hi"}], ["I like tea"])
    payload = provider._payload(request, stream=True)
    assert payload["model"] == "default-model"
    assert payload["stream"] is True
    assert payload["messages"][0]["role"] == "system"
    assert "I like tea" in payload["messages"][0]["content"]
    assert payload["messages"][-1] == {"role": "user", "content": "hi"}
    json.dumps(payload)
    asyncio.run(provider.aclose())


def test_llamacpp_without_its_extra_names_the_extra_to_install(tmp_path: Path) -> None:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("llama_cpp is installed here")
    with pytest.raises(ConfigError, match=r"sonia-stack\[local-llm\]"):
        LlamaCppProvider(tmp_path / "model.gguf")
