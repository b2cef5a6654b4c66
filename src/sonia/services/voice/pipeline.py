"""One realtime session's logic, independent of any WebSocket framework.

The route reads messages from the socket and hands each one to
`await session.handle(message)`; a writer sends whatever appears on
`session.outgoing` (dicts as JSON text frames, bytes as binary audio frames).
`session.pump(receive, send)` does both for any pair of callables, so a
Starlette route is a few lines.

Client events (JSON objects with a `type`), and what they do:

    input.text {text}    a typed utterance: barges in on a reply in flight, then
                         transcript -> thinking -> response.delta... -> response.final
    (binary frame)       16-bit mono PCM at `input_sample_rate`: starts or extends an
                         utterance (idle -> listening); ignored while Sonia is
                         thinking or speaking (half duplex: her own voice must not
                         become input), use control.interrupt to barge in
    control.interrupt    stops the reply in flight at once (the generation task is
                         cancelled, which cancels the provider call): state
                         interrupted, a response.final with the partial text and
                         `interrupted: true`, then state idle
    control.end          with audio pending: the utterance is complete, transcribe it
                         and answer; otherwise the client is done: whatever is in
                         flight stops, `session.ended` is sent and `closed` is set

Server events: session.ready, state {state, previous, reason}, transcript {role,
text, final, source}, response.delta {text}, response.final {text, interrupted,
provider, model; with Sonia's tools also agent_turn_id, status, pending_approval?},
response.pending_approval {agent_turn_id, action_id, tool, args, tier, plan_hash,
reason, expires_at, untrusted_sources} (before the final of a reply whose tool
call waits for an approver), response.audio {encoding, sample_rate, channels}
(before the reply's first audio frame), error {status, code, detail},
session.ended. A bad event answers an `error` and the session carries on; it
never takes the session down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

from sonia.errors import ApiError, Internal, InvalidArgument, PayloadTooLarge, Unavailable
from sonia.kit.encoding import check_text
from sonia.services.voice.speech import NullTTS, TextToSpeech, Transcriber
from sonia.services.voice.turns import TurnMachine, TurnState

_log = logging.getLogger(__name__)

GenerateStream = Callable[[str], AsyncIterator[str]]
Outgoing = dict[str, Any] | bytes

T = TypeVar("T")

INTERRUPT_DEADLINE_SECONDS = 0.2
"""How long an interrupt waits for the cancelled reply to finish unwinding."""


class Attribution(str):
    """An empty delta that says which provider and model answer this reply.

    It travels in the delta stream itself (first, before any text), so the
    session can tell the client who answered without a second channel; as a
    string it is empty and adds nothing to the reply.
    """

    provider: str
    model: str
    turn: dict[str, Any]
    """For a reply made by the gateway's agent (Sonia's tools offered): its
    `agent_turn_id`, `status` and, when a tool call waits for an approver,
    `pending_approval`; empty for a plain reply."""

    def __new__(cls, provider: str, model: str,
                turn: dict[str, Any] | None = None) -> Attribution:
        note = super().__new__(cls, "")
        note.provider = provider
        note.model = model
        note.turn = dict(turn or {})
        return note


@contextlib.asynccontextmanager
async def _closing(iterator: AsyncIterator[T]) -> AsyncIterator[AsyncIterator[T]]:
    """Close an async generator when we stop early (kills espeak-ng, cancels a stream)."""
    try:
        yield iterator
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()


class RealtimeSession:
    """The turn-taking logic of one voice or text session."""

    def __init__(
        self,
        session_id: str,
        generate_stream: GenerateStream,
        *,
        tts: TextToSpeech | None = None,
        transcriber: Transcriber | None = None,
        input_sample_rate: int = 16_000,
        max_audio_seconds: float = 60.0,
        max_text_chars: int = 32_768,
        queue_size: int = 256,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.session_id = session_id
        self.outgoing: asyncio.Queue[Outgoing] = asyncio.Queue(maxsize=queue_size)
        self.turns = TurnMachine(clock=clock)
        self.closed = False
        self._generate = generate_stream
        self._tts: TextToSpeech = tts or NullTTS()
        self._transcriber = transcriber
        self._input_rate = input_sample_rate
        self._max_audio_bytes = int(max_audio_seconds * input_sample_rate) * 2
        self._max_text_chars = max_text_chars
        self._audio = bytearray()
        self._reply: asyncio.Task[None] | None = None
        self._reply_no = 0
        self._partial = ""

    # ------------------------------------------------------------------ outgoing

    async def _send(self, event: Outgoing) -> None:
        await self.outgoing.put(event)

    async def _state(self, target: TurnState, reason: str = "") -> None:
        transition = self.turns.to(target, reason)
        await self._send({"type": "state", "state": str(transition.state),
                          "previous": str(transition.previous), "reason": reason})

    async def _error(self, exc: ApiError) -> None:
        await self._send({"type": "error", "status": exc.status, "code": exc.code,
                          "detail": exc.detail})

    async def start(self) -> None:
        """Announce the session (the first event a client sees)."""
        await self._send({
            "type": "session.ready", "session_id": self.session_id,
            "state": str(self.turns.state),
            "audio": {
                "input": {"encoding": "pcm_s16le", "sample_rate": self._input_rate,
                          "channels": 1, "transcription": self._transcriber is not None},
                "output": {"tts": self._tts.name},
            },
        })

    # ------------------------------------------------------------------ incoming

    async def handle(self, message: Mapping[str, Any] | bytes | str) -> None:
        """Act on one client message; returns quickly (replies run in their own task)."""
        if self.closed:
            return
        try:
            if isinstance(message, bytes | bytearray):
                await self._on_audio(bytes(message))
                return
            event = self._parse(message)
            kind = event.get("type")
            if kind == "input.text":
                await self._on_text(event.get("text"))
            elif kind == "control.interrupt":
                await self.interrupt("control.interrupt")
            elif kind == "control.end":
                await self._on_end()
            else:
                raise InvalidArgument(
                    f"unknown event type {kind!r}; expected input.text, control.interrupt, "
                    "control.end or binary audio")
        except ApiError as exc:
            await self._error(exc)

    @staticmethod
    def _parse(message: Mapping[str, Any] | str) -> Mapping[str, Any]:
        if isinstance(message, str):
            try:
                message = json.loads(message)
            except (ValueError, RecursionError) as exc:
                raise InvalidArgument("a text frame must be a JSON object") from exc
            check_text(message)  # a lone surrogate would fail later, storing the turn
        if not isinstance(message, Mapping):
            raise InvalidArgument("a text frame must be a JSON object")
        return message

    def _busy(self) -> bool:
        return self._reply is not None and not self._reply.done()

    async def _on_text(self, text: Any) -> None:
        if not isinstance(text, str) or not text.strip():
            raise InvalidArgument("input.text needs a non-empty `text`")
        if len(text) > self._max_text_chars:
            raise PayloadTooLarge(f"input.text is longer than {self._max_text_chars} characters")
        if self._busy():
            await self.interrupt("barge-in", settle=False)
        self._audio.clear()
        if self.turns.state is not TurnState.LISTENING:
            await self._state(TurnState.LISTENING, "input.text")
        await self._send({"type": "transcript", "role": "user", "text": text, "final": True,
                          "source": "text"})
        await self._begin_reply(text=text, audio=None)

    async def _on_audio(self, pcm: bytes) -> None:
        if self._busy():
            return  # half duplex: audio while Sonia thinks or speaks is not input
        if len(pcm) % 2:
            raise InvalidArgument("audio frames are 16-bit PCM: an even number of bytes")
        if len(self._audio) + len(pcm) > self._max_audio_bytes:
            self._audio.clear()
            if self.turns.state is TurnState.LISTENING:
                await self._state(TurnState.IDLE, "utterance too long")
            raise PayloadTooLarge("utterance is longer than the session allows")
        if self.turns.state is not TurnState.LISTENING:
            await self._state(TurnState.LISTENING, "audio")
        self._audio += pcm

    async def _on_end(self) -> None:
        if self.turns.state is TurnState.LISTENING and self._audio and not self._busy():
            audio, self._audio = bytes(self._audio), bytearray()
            await self._begin_reply(text=None, audio=audio)
            return
        await self.close("control.end")

    # ------------------------------------------------------------------ replies

    async def _begin_reply(self, *, text: str | None, audio: bytes | None) -> None:
        await self._state(TurnState.THINKING, "utterance complete")
        self._reply_no += 1
        self._partial = ""
        self._reply = asyncio.create_task(self._run_reply(self._reply_no, text, audio),
                                          name=f"reply-{self.session_id}-{self._reply_no}")

    async def _run_reply(self, number: int, text: str | None, audio: bytes | None) -> None:
        try:
            if text is None:
                text = await self._transcribe(audio or b"")
                if not text:
                    await self._state(TurnState.IDLE, "nothing heard")
                    return
            answered_by: dict[str, Any] = {}
            async with _closing(self._generate(text)) as deltas:
                async for delta in deltas:
                    if isinstance(delta, Attribution):
                        answered_by = {"provider": delta.provider, "model": delta.model,
                                       **delta.turn}
                        if delta.turn.get("pending_approval") and number == self._reply_no:
                            await self._send({
                                "type": "response.pending_approval",
                                "agent_turn_id": delta.turn.get("agent_turn_id"),
                                **delta.turn["pending_approval"]})
                        continue
                    if not delta:
                        continue
                    if number != self._reply_no:
                        return  # interrupted: this reply no longer speaks
                    if self.turns.state is TurnState.THINKING:
                        await self._state(TurnState.SPEAKING, "first words")
                    self._partial += delta
                    await self._send({"type": "response.delta", "text": delta})
            await self._send({"type": "response.final", "text": self._partial,
                              "interrupted": False, **answered_by})
            await self._speak(self._partial)
            await self._state(TurnState.IDLE, "reply complete")
        except ApiError as exc:
            await self._fail(number, exc)
        except Exception as exc:  # a bug must not leave the session stuck: log, tell, go idle
            _log.exception("reply %s of session %s failed", number, self.session_id)
            await self._fail(number, Internal(f"reply failed: {type(exc).__name__}"))

    async def _fail(self, number: int, exc: ApiError) -> None:
        if number != self._reply_no:
            return
        await self._error(exc)
        if self.turns.state in (TurnState.THINKING, TurnState.SPEAKING):
            await self._state(TurnState.IDLE, f"failed: {exc.code}")

    async def _transcribe(self, audio: bytes) -> str:
        if self._transcriber is None:
            raise Unavailable("speech-to-text is not configured (voice.stt_base_url)")
        text = await self._transcriber.transcribe(audio, self._input_rate)
        if text:
            await self._send({"type": "transcript", "role": "user", "text": text,
                              "final": True, "source": "audio"})
        return text

    async def _speak(self, text: str) -> None:
        if not text.strip() or isinstance(self._tts, NullTTS):
            return
        announced = False
        async with _closing(self._tts.synthesize(text)) as frames:
            async for frame in frames:
                if not announced:
                    await self._send({"type": "response.audio", "encoding": "pcm_s16le",
                                      "sample_rate": frame.sample_rate, "channels": 1})
                    announced = True
                await self._send(frame.pcm)

    # ------------------------------------------------------------------ control

    async def interrupt(self, reason: str = "control.interrupt", *, settle: bool = True) -> None:
        """Stop the reply in flight: cancel it, wait at most INTERRUPT_DEADLINE_SECONDS for
        it to unwind, report the partial text. `settle=False` leaves the state at
        interrupted (the caller moves on to listening)."""
        if not self._busy():
            if self.turns.state is TurnState.LISTENING and self._audio:
                self._audio.clear()
                await self._state(TurnState.IDLE, reason)
            return
        assert self._reply is not None
        self._reply_no += 1  # anything the old reply still says is now stale
        self._reply.cancel()
        await asyncio.wait({self._reply}, timeout=INTERRUPT_DEADLINE_SECONDS)
        if self.turns.state not in (TurnState.THINKING, TurnState.SPEAKING):
            return  # the reply had already finished; only its last event was queued
        await self._state(TurnState.INTERRUPTED, reason)
        await self._send({"type": "response.final", "text": self._partial,
                          "interrupted": True})
        if settle:
            await self._state(TurnState.IDLE, "interrupt settled")

    async def settled(self) -> None:
        """Wait until no reply is in flight (tests and graceful shutdown)."""
        if self._reply is not None:
            await asyncio.wait({self._reply})

    async def close(self, reason: str = "closed") -> None:
        """End the session: stop what is in flight, say `session.ended`, refuse input."""
        if self.closed:
            return
        if self._busy():
            await self.interrupt(reason)
        self.closed = True
        await self._send({"type": "session.ended", "reason": reason})

    async def abort(self) -> None:
        """The client went away: cancel the reply (and so the provider call) without
        queueing anything more, since nobody is reading."""
        self.closed = True
        if self._reply is not None and not self._reply.done():
            self._reply.cancel()
            await asyncio.wait({self._reply}, timeout=INTERRUPT_DEADLINE_SECONDS)

    async def pump(
        self,
        receive: Callable[[], Awaitable[Mapping[str, Any] | bytes | str | None]],
        send: Callable[[Outgoing], Awaitable[None]],
    ) -> None:
        """Run the session over a connection until either side ends it.

        `receive()` returns the next client message or None when the client has
        gone; `send` delivers one outgoing event. Returns after `session.ended`
        was sent or the client went away; never leaves a task behind. An
        exception raised by `send` (the transport closed) propagates.
        """
        async def write() -> None:
            while True:
                event = await self.outgoing.get()
                await send(event)
                if isinstance(event, dict) and event.get("type") == "session.ended":
                    return

        writer = asyncio.create_task(write(), name=f"writer-{self.session_id}")
        try:
            await self.start()
            while not self.closed and not writer.done():
                reading = asyncio.ensure_future(receive())
                await asyncio.wait({reading, writer}, return_when=asyncio.FIRST_COMPLETED)
                if not reading.done():
                    reading.cancel()
                    break
                message = reading.result()
                if message is None:
                    break
                await self.handle(message)
            if self.closed:
                await asyncio.wait({writer}, timeout=INTERRUPT_DEADLINE_SECONDS * 5)
        finally:
            await self.abort()
            if not writer.done():
                writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer


__all__ = [
    "GenerateStream", "INTERRUPT_DEADLINE_SECONDS", "Outgoing", "RealtimeSession",
]
