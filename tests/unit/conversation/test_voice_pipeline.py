"""A realtime session driven event by event, as a WebSocket route would drive it."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from sonia.errors import Unavailable
from sonia.services.router.providers import BuiltinProvider, GenerationRequest
from sonia.services.voice.pipeline import Outgoing, RealtimeSession
from sonia.services.voice.speech import EspeakTTS

DEADLINE = 5.0


def builtin_stream(text: str) -> AsyncIterator[str]:
    request = GenerationRequest.of([{"role": "user", "content": text}])
    return BuiltinProvider().stream(request)


class SlowModel:
    """Says its first word, then waits forever: a reply that is still in flight."""

    def __init__(self) -> None:
        self.first_word_sent = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def __call__(self, text: str) -> AsyncIterator[str]:
        yield "Thinking "
        self.first_word_sent.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        yield "never"


class FixedTranscriber:
    """A transcriber that hears the same words in any audio (the protocol, for real)."""

    name = "fixed"

    def __init__(self, words: str) -> None:
        self.words = words
        self.received: list[tuple[int, int]] = []

    async def available(self) -> bool:
        return True

    async def transcribe(self, pcm: bytes, sample_rate: int) -> str:
        self.received.append((len(pcm), sample_rate))
        return self.words


async def events_until(session: RealtimeSession,
                       done: Callable[[Outgoing], bool]) -> list[Outgoing]:
    """Outgoing events up to and including the first for which `done` is true."""
    seen: list[Outgoing] = []
    async with asyncio.timeout(DEADLINE):
        while True:
            event = await session.outgoing.get()
            seen.append(event)
            if done(event):
                return seen


def is_state(state: str) -> Callable[[Outgoing], bool]:
    return lambda e: isinstance(e, dict) and e["type"] == "state" and e["state"] == state


def of_type(kind: str) -> Callable[[Outgoing], bool]:
    return lambda e: isinstance(e, dict) and e["type"] == kind


def first(events: list[Outgoing], kind: str) -> dict[str, Any]:
    return next(e for e in events if isinstance(e, dict) and e["type"] == kind)


def kinds(events: list[Outgoing]) -> list[str]:
    return [e["type"] if isinstance(e, dict) else "audio" for e in events]


def states(events: list[Outgoing]) -> list[str]:
    return [e["state"] for e in events if isinstance(e, dict) and e["type"] == "state"]


def test_a_typed_message_gets_a_streamed_reply_through_every_state() -> None:
    async def scenario() -> list[Outgoing]:
        session = RealtimeSession("s1", builtin_stream)
        await session.start()
        await session.handle({"type": "input.text", "text": "my favourite colour is teal"})
        return await events_until(session, is_state("idle"))

    events = asyncio.run(scenario())
    assert kinds(events)[0] == "session.ready"
    assert states(events) == ["listening", "thinking", "speaking", "idle"]
    assert events[2] == {"type": "transcript", "role": "user",
                         "text": "my favourite colour is teal", "final": True, "source": "text"}
    deltas = [e["text"] for e in events if isinstance(e, dict) and e["type"] == "response.delta"]
    final = first(events, "response.final")
    assert "".join(deltas) == final["text"] == "Noted: your favourite colour is teal."
    assert final["interrupted"] is False


def test_interrupt_stops_a_reply_in_flight_within_200ms() -> None:
    model = SlowModel()

    async def scenario() -> tuple[float, list[Outgoing]]:
        session = RealtimeSession("s1", model)
        await session.handle({"type": "input.text", "text": "tell me a long story"})
        async with asyncio.timeout(DEADLINE):
            await model.first_word_sent.wait()
        started = time.monotonic()
        await session.handle(json.dumps({"type": "control.interrupt"}))
        events = await events_until(session, is_state("interrupted"))
        latency = time.monotonic() - started
        events += await events_until(session, is_state("idle"))
        assert model.cancelled.is_set()  # the generation itself was cancelled
        return latency, events

    latency, events = asyncio.run(scenario())
    assert latency < 0.2
    assert states(events)[-3:] == ["speaking", "interrupted", "idle"]
    final = first(events, "response.final")
    assert final == {"type": "response.final", "text": "Thinking ", "interrupted": True}


def test_new_text_barges_in_on_a_reply_in_flight() -> None:
    model = SlowModel()
    replies: Iterator[Callable[[str], AsyncIterator[str]]] = iter([model, builtin_stream])

    def generate(text: str) -> AsyncIterator[str]:
        return next(replies)(text)

    async def scenario() -> list[Outgoing]:
        session = RealtimeSession("s1", generate)
        await session.handle({"type": "input.text", "text": "first"})
        async with asyncio.timeout(DEADLINE):
            await model.first_word_sent.wait()
        await session.handle({"type": "input.text", "text": "hello"})
        return await events_until(session, is_state("idle"))

    events = asyncio.run(scenario())
    assert states(events) == ["listening", "thinking", "speaking", "interrupted",
                              "listening", "thinking", "speaking", "idle"]
    assert model.cancelled.is_set()


def test_spoken_input_is_transcribed_then_answered() -> None:
    transcriber = FixedTranscriber("hello")

    async def scenario() -> list[Outgoing]:
        session = RealtimeSession("s1", builtin_stream, transcriber=transcriber,
                                  input_sample_rate=16_000)
        await session.handle(b"\x01\x00" * 320)
        await session.handle(b"\x02\x00" * 320)
        await session.handle({"type": "control.end"})
        return await events_until(session, is_state("idle"))

    events = asyncio.run(scenario())
    assert transcriber.received == [(1280, 16_000)]
    assert states(events) == ["listening", "thinking", "speaking", "idle"]
    transcript = first(events, "transcript")
    assert transcript["source"] == "audio" and transcript["text"] == "hello"


def test_spoken_input_without_a_transcriber_is_an_honest_error() -> None:
    async def scenario() -> list[Outgoing]:
        session = RealtimeSession("s1", builtin_stream)
        await session.handle(b"\x00\x00" * 160)
        await session.handle({"type": "control.end"})
        return await events_until(session, is_state("idle"))

    events = asyncio.run(scenario())
    error = first(events, "error")
    assert error["code"] == "UNAVAILABLE" and "stt_base_url" in error["detail"]
    assert states(events) == ["listening", "thinking", "idle"]


@pytest.mark.parametrize("message", [
    {"type": "dance"}, {"no": "type"}, "not json", "[1, 2]", {"type": "input.text"},
    {"type": "input.text", "text": "   "}, b"\x00\x00\x00",
    '{"type": "input.text", "text": "\\ud800"}', "[" * 100_000,
])
def test_a_bad_event_answers_an_error_and_the_session_carries_on(message: Any) -> None:
    async def scenario() -> list[Outgoing]:
        session = RealtimeSession("s1", builtin_stream)
        await session.handle(message)
        error = await events_until(session, of_type("error"))
        await session.handle({"type": "input.text", "text": "hello"})
        return error + await events_until(session, is_state("idle"))

    events = asyncio.run(scenario())
    assert first(events, "error")["status"] == 400
    assert kinds(events)[-2:] == ["response.final", "state"]


def test_a_failing_model_is_reported_and_the_session_goes_back_to_idle() -> None:
    async def broken(text: str) -> AsyncIterator[str]:
        raise Unavailable("no provider could answer")
        yield ""

    async def scenario() -> list[Outgoing]:
        session = RealtimeSession("s1", broken)
        await session.handle({"type": "input.text", "text": "hello"})
        return await events_until(session, is_state("idle"))

    events = asyncio.run(scenario())
    assert kinds(events) == ["state", "transcript", "state", "error", "state"]
    assert first(events, "error")["code"] == "UNAVAILABLE"


def test_control_end_with_nothing_pending_ends_the_session() -> None:
    async def scenario() -> tuple[RealtimeSession, list[Outgoing]]:
        session = RealtimeSession("s1", builtin_stream)
        await session.handle({"type": "control.end"})
        events = await events_until(session, of_type("session.ended"))
        await session.handle({"type": "input.text", "text": "too late"})
        return session, events

    session, events = asyncio.run(scenario())
    assert session.closed
    assert kinds(events) == ["session.ended"]
    assert session.outgoing.empty()


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_with_espeak_the_reply_is_also_spoken() -> None:
    async def scenario() -> list[Outgoing]:
        session = RealtimeSession("s1", builtin_stream, tts=EspeakTTS(), queue_size=4096)
        await session.handle({"type": "input.text", "text": "my name is Ana"})
        return await events_until(session, is_state("idle"))

    events = asyncio.run(scenario())
    header = first(events, "response.audio")
    assert header["encoding"] == "pcm_s16le" and header["sample_rate"] > 0
    frames = [e for e in events if isinstance(e, bytes)]
    assert len(frames) > 10
    assert kinds(events).index("response.final") < kinds(events).index("response.audio")


def test_pump_runs_a_conversation_over_a_connection_until_the_client_ends_it() -> None:
    sent: list[Outgoing] = []
    reply_done = asyncio.Event()

    async def scenario() -> None:
        script = [{"type": "input.text", "text": "hello"}, {"type": "control.end"}]

        async def receive() -> dict[str, Any] | None:
            if len(script) == 1:
                async with asyncio.timeout(DEADLINE):
                    await reply_done.wait()
            return script.pop(0) if script else None

        async def send(event: Outgoing) -> None:
            sent.append(event)
            if is_state("idle")(event) and any(of_type("response.final")(e) for e in sent):
                reply_done.set()

        session = RealtimeSession("s1", builtin_stream)
        async with asyncio.timeout(DEADLINE):
            await session.pump(receive, send)

    asyncio.run(scenario())
    assert kinds(sent)[0] == "session.ready"
    assert kinds(sent)[-1] == "session.ended"
    assert "response.final" in kinds(sent)


def test_when_the_client_goes_away_the_reply_is_cancelled() -> None:
    model = SlowModel()

    async def scenario() -> None:
        messages: list[dict[str, Any] | None] = [{"type": "input.text", "text": "go"}]

        async def receive() -> dict[str, Any] | None:
            if not messages:
                async with asyncio.timeout(DEADLINE):
                    await model.first_word_sent.wait()
                return None  # the socket closed
            return messages.pop(0)

        async def send(event: Outgoing) -> None:
            return None

        async with asyncio.timeout(DEADLINE):
            await RealtimeSession("s1", model).pump(receive, send)
        assert model.cancelled.is_set()

    asyncio.run(scenario())
