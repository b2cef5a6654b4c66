"""Speech in and out: the adapters the voice service can use, and which ones really work.

Audio inside Sonia is 16-bit little-endian PCM, mono, cut into frames of a fixed
duration (20 ms by default); every frame says its sample rate.

Text to speech:
  * `EspeakTTS` runs `espeak-ng --stdout` (no shell; the text goes in on stdin, so
    it can never be read as an option) and turns the WAV it prints into frames as
    they arrive. espeak-ng writes a streaming WAV whose size fields are
    placeholders, so the data chunk is read to the end of the output.
  * `NullTTS` speaks nothing: text sessions and machines without a synthesizer.

Speech to text:
  * `OpenAITranscriber` posts a WAV to an OpenAI-compatible
    `/audio/transcriptions` endpoint (faster-whisper-server, LocalAI, vLLM, ...).

`available()` is always an honest check (the binary runs, the server answers),
and `detect_adapters` reports the result for /readyz: nothing is assumed.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import shutil
import struct
import wave
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from sonia.config import VoiceSettings
from sonia.errors import ApiError, ConfigError, InvalidArgument, Timeout, Unavailable

# httpx is imported where a transcriber is made: it brings its command line's rich and
# pygments, 9 MiB that a voice service without a speech server never uses.
if TYPE_CHECKING:
    import httpx

SAMPLE_WIDTH = 2  # bytes: 16-bit PCM
TTS_CHOICES = ("auto", "espeak-ng", "none")


@dataclass(frozen=True)
class AudioFrame:
    pcm: bytes
    sample_rate: int

    @property
    def duration_ms(self) -> float:
        return 1000.0 * len(self.pcm) / (SAMPLE_WIDTH * self.sample_rate)


class TextToSpeech(Protocol):
    name: str

    async def available(self) -> bool: ...

    def synthesize(self, text: str) -> AsyncIterator[AudioFrame]: ...


class Transcriber(Protocol):
    name: str

    async def available(self) -> bool: ...

    async def transcribe(self, pcm: bytes, sample_rate: int) -> str: ...


class WavError(ValueError):
    """The bytes are not a PCM WAV this module can read."""


class WavFramer:
    """Incremental WAV reader: feed bytes as they arrive, get whole PCM frames back.

    Accepts mono 16-bit PCM only (what espeak-ng writes); the data chunk's size
    is ignored, so a streaming WAV with placeholder sizes reads to its end.
    """

    def __init__(self, frame_ms: int = 20) -> None:
        self.frame_ms = frame_ms
        self.sample_rate: int | None = None
        self._buffer = b""
        self._in_data = False
        self._header_checked = False

    @property
    def frame_bytes(self) -> int:
        if self.sample_rate is None:
            raise WavError("no fmt chunk seen yet")
        return self.sample_rate * self.frame_ms // 1000 * SAMPLE_WIDTH

    def feed(self, chunk: bytes) -> list[bytes]:
        self._buffer += chunk
        if not self._in_data and not self._read_header():
            return []
        frames: list[bytes] = []
        size = self.frame_bytes
        while len(self._buffer) >= size:
            frames.append(self._buffer[:size])
            self._buffer = self._buffer[size:]
        return frames

    def finish(self) -> list[bytes]:
        """The last partial frame, padded with silence to full length."""
        if not self._in_data:
            if self._buffer:
                raise WavError("output ended inside the WAV header")
            return []
        rest, self._buffer = self._buffer, b""
        if not rest:
            return []
        rest = rest[: len(rest) - len(rest) % SAMPLE_WIDTH]
        return [rest + b"\x00" * (self.frame_bytes - len(rest))]

    def _read_header(self) -> bool:
        if not self._header_checked:
            if len(self._buffer) < 12:
                return False
            if self._buffer[:4] != b"RIFF" or self._buffer[8:12] != b"WAVE":
                raise WavError("not a RIFF/WAVE stream")
            self._buffer = self._buffer[12:]
            self._header_checked = True
        while len(self._buffer) >= 8:
            chunk_id = self._buffer[:4]
            (size,) = struct.unpack("<I", self._buffer[4:8])
            if chunk_id == b"data":
                if self.sample_rate is None:
                    raise WavError("data chunk before fmt chunk")
                self._buffer = self._buffer[8:]
                self._in_data = True
                return True
            padded = size + (size & 1)
            if len(self._buffer) < 8 + padded:
                return False
            body = self._buffer[8:8 + size]
            self._buffer = self._buffer[8 + padded:]
            if chunk_id == b"fmt ":
                fmt, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
                if fmt != 1 or channels != 1 or bits != 16:
                    raise WavError(f"need mono 16-bit PCM, got format {fmt}, "
                                   f"{channels} channels, {bits} bits")
                self.sample_rate = rate
        return False


def pcm_to_wav(pcm: bytes, sample_rate: int) -> bytes:
    """Wrap mono 16-bit PCM in a WAV container (for upload to a transcription server)."""
    if len(pcm) % SAMPLE_WIDTH:
        raise InvalidArgument("16-bit PCM must have an even number of bytes")
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(SAMPLE_WIDTH)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm)
    return out.getvalue()


class EspeakTTS:
    """espeak-ng as a subprocess; frames stream out while it is still speaking."""

    name = "espeak-ng"

    def __init__(self, binary: str = "espeak-ng", *, voice: str | None = None,
                 frame_ms: int = 20, max_chars: int = 10_000) -> None:
        self.binary = binary
        self.voice = voice
        self.frame_ms = frame_ms
        self.max_chars = max_chars

    def _path(self) -> str | None:
        return shutil.which(self.binary)

    async def version(self) -> str | None:
        """`espeak-ng --version`'s first line, or None when it does not run."""
        path = self._path()
        if path is None:
            return None
        try:
            proc = await asyncio.create_subprocess_exec(
                path, "--version", stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        except OSError:
            return None
        try:
            async with asyncio.timeout(5.0):
                out, _ = await proc.communicate()
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return None
        if proc.returncode != 0:
            return None
        return out.decode(errors="replace").strip().splitlines()[0] if out.strip() else ""

    async def available(self) -> bool:
        return await self.version() is not None

    async def synthesize(self, text: str) -> AsyncGenerator[AudioFrame, None]:
        """PCM frames of `text` spoken; closing the iterator early kills espeak-ng."""
        if len(text) > self.max_chars:
            raise InvalidArgument(f"text to speak is longer than {self.max_chars} characters")
        if not text.strip():
            return
        path = self._path()
        if path is None:
            raise Unavailable(f"{self.binary} is not installed")
        args = [path, "--stdout"] + (["-v", self.voice] if self.voice else [])
        try:
            proc = await asyncio.create_subprocess_exec(
                *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            raise Unavailable(f"cannot run {self.binary}: {exc}") from exc
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        framer = WavFramer(self.frame_ms)
        try:
            proc.stdin.write(text.encode())
            await proc.stdin.drain()
            proc.stdin.close()
            while chunk := await proc.stdout.read(16_384):
                for pcm in framer.feed(chunk):
                    yield AudioFrame(pcm, framer.sample_rate or 0)
            for pcm in framer.finish():
                yield AudioFrame(pcm, framer.sample_rate or 0)
            errors = await proc.stderr.read()
            if await proc.wait() != 0:
                raise Unavailable(f"{self.binary} exited with {proc.returncode}: "
                                  f"{errors.decode(errors='replace').strip()[:200]}")
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise Unavailable(f"{self.binary} stopped early: {exc}") from exc
        except WavError as exc:
            raise Unavailable(f"{self.binary} printed unreadable audio: {exc}") from exc
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()


class NullTTS:
    """No speech: replies stay text."""

    name = "none"

    async def available(self) -> bool:
        return True

    async def synthesize(self, text: str) -> AsyncGenerator[AudioFrame, None]:
        return
        yield  # an async generator that yields nothing


class OpenAITranscriber:
    """An OpenAI-compatible transcription server; `base_url` includes `/v1`."""

    name = "openai"

    def __init__(self, base_url: str, model: str = "whisper-1", timeout: float = 30.0,
                 *, api_key: str | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        import httpx

        self.base_url = base_url.rstrip("/")
        self.model = model
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            base_url=self.base_url, headers=headers, transport=transport,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)))

    async def aclose(self) -> None:
        await self._client.aclose()

    def _failure(self, exc: httpx.HTTPError) -> ApiError:
        import httpx

        if isinstance(exc, httpx.TimeoutException):
            return Timeout("transcription server did not answer in time")
        return Unavailable(f"transcription server unreachable: {type(exc).__name__}")

    async def available(self) -> bool:
        import httpx

        try:
            response = await self._client.get("/models")
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def transcribe(self, pcm: bytes, sample_rate: int) -> str:
        import httpx

        files = {"file": ("speech.wav", pcm_to_wav(pcm, sample_rate), "audio/wav")}
        try:
            response = await self._client.post(
                "/audio/transcriptions", files=files,
                data={"model": self.model, "response_format": "json"})
        except httpx.HTTPError as exc:
            raise self._failure(exc) from exc
        if response.status_code >= 300:
            raise Unavailable(f"transcription server answered HTTP {response.status_code}: "
                              f"{response.text[:200]}")
        try:
            text = response.json()["text"]
        except (ValueError, KeyError, TypeError) as exc:
            raise Unavailable("transcription server answered a malformed body") from exc
        if not isinstance(text, str):
            raise Unavailable("transcription server answered a malformed body")
        return text.strip()


def build_tts(voice: VoiceSettings) -> EspeakTTS | NullTTS:
    """The synthesizer `voice.tts` asks for ("auto" picks espeak-ng; check availability
    with `detect_adapters`, which also says whether "auto" fell back to none)."""
    if voice.tts not in TTS_CHOICES:
        raise ConfigError(f"setting 'voice.tts' is invalid (got {voice.tts!r}): "
                          f"use one of {', '.join(TTS_CHOICES)}", key="voice.tts")
    return NullTTS() if voice.tts == "none" else EspeakTTS()


async def select_tts(voice: VoiceSettings) -> EspeakTTS | NullTTS:
    """The synthesizer to use now: "auto" falls back to NullTTS when espeak-ng does not run."""
    tts = build_tts(voice)
    if voice.tts == "auto" and not await tts.available():
        return NullTTS()
    return tts


def build_transcriber(voice: VoiceSettings, timeout: float = 30.0) -> OpenAITranscriber | None:
    return OpenAITranscriber(voice.stt_base_url, timeout=timeout) if voice.stt_base_url else None


async def detect_adapters(voice: VoiceSettings) -> dict[str, Any]:
    """Which speech adapters really work now, for /readyz.

    `ready` is False only when something configured explicitly does not work
    (tts = "espeak-ng" without a running espeak-ng, or an unreachable
    stt_base_url); "auto" without espeak-ng is a text-only voice service, not a
    broken one.
    """
    tts = build_tts(voice)
    espeak = EspeakTTS()
    version = await espeak.version()
    if voice.tts == "none":
        tts_report = {"adapter": "none", "configured": "none", "available": True,
                      "detail": "speech output turned off"}
    else:
        tts_report = {"adapter": tts.name if version is not None else "none",
                      "configured": voice.tts, "available": version is not None,
                      "detail": version if version is not None else "espeak-ng does not run"}
    transcriber = build_transcriber(voice, timeout=5.0)
    if transcriber is None:
        stt_report: dict[str, Any] = {"adapter": "none", "available": False,
                                      "detail": "voice.stt_base_url is not set"}
    else:
        try:
            reachable = await transcriber.available()
        finally:
            await transcriber.aclose()
        stt_report = {"adapter": "openai", "available": reachable,
                      "detail": f"{transcriber.base_url} "
                                + ("answers" if reachable else "does not answer")}
    ready = (voice.tts != "espeak-ng" or version is not None) and (
        transcriber is None or bool(stt_report["available"]))
    return {"tts": tts_report, "stt": stt_report, "ready": ready}


__all__ = [
    "AudioFrame", "EspeakTTS", "NullTTS", "OpenAITranscriber", "TextToSpeech", "Transcriber",
    "WavError", "WavFramer", "build_transcriber", "build_tts", "detect_adapters", "pcm_to_wav",
    "select_tts",
]
