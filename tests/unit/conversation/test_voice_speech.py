"""Speech adapters: espeak-ng for real (where installed), WAV framing, transcription uploads."""

from __future__ import annotations

import asyncio
import contextlib
import io
import shutil
import socket
import struct
import wave
from email.parser import BytesParser
from email.policy import HTTP

import httpx
import psutil
import pytest

from sonia.config import VoiceSettings
from sonia.errors import ConfigError, Timeout, Unavailable
from sonia.services.voice import speech
from sonia.services.voice.speech import (
    AudioFrame,
    EspeakTTS,
    NullTTS,
    OpenAITranscriber,
    WavError,
    WavFramer,
    detect_adapters,
    pcm_to_wav,
    select_tts,
)

HAS_ESPEAK = shutil.which("espeak-ng") is not None
needs_espeak = pytest.mark.skipif(not HAS_ESPEAK, reason="espeak-ng is not installed")


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_exported_names_are_sorted_and_exist() -> None:
    assert speech.__all__ == sorted(speech.__all__)
    assert all(hasattr(speech, name) for name in speech.__all__)


def _tone(samples: int) -> bytes:
    return b"".join(struct.pack("<h", (i * 37) % 2000 - 1000) for i in range(samples))


def test_the_framer_cuts_a_wav_into_equal_frames_however_it_arrives() -> None:
    pcm = _tone(1000)  # at 8 kHz and 20 ms, frames hold 160 samples: 6 full, 1 padded
    wav = pcm_to_wav(pcm, 8000)
    for cut in range(0, len(wav), 7):
        framer = WavFramer(frame_ms=20)
        frames = framer.feed(wav[:cut]) + framer.feed(wav[cut:]) + framer.finish()
        assert framer.sample_rate == 8000
        assert [len(f) for f in frames] == [320] * 7
        assert b"".join(frames)[: len(pcm)] == pcm
        assert set(b"".join(frames)[len(pcm):]) == {0}


def test_the_framer_refuses_what_it_cannot_play() -> None:
    stereo = io.BytesIO()
    with wave.open(stereo, "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(b"\x00" * 64)
    with pytest.raises(WavError):
        WavFramer().feed(stereo.getvalue())
    with pytest.raises(WavError):
        WavFramer().feed(b"this is not a RIFF file at all")


@needs_espeak
def test_espeak_reports_itself_available_with_its_version() -> None:
    tts = EspeakTTS()
    assert asyncio.run(tts.available()) is True
    assert "eSpeak" in (asyncio.run(tts.version()) or "")


@needs_espeak
def test_espeak_speaks_text_as_20ms_pcm_frames() -> None:
    async def collect() -> list[AudioFrame]:
        return [frame async for frame in EspeakTTS().synthesize("-v hello, this is Sonia")]

    frames = asyncio.run(collect())
    rate = frames[0].sample_rate
    assert rate > 0
    assert all(f.sample_rate == rate and len(f.pcm) == rate // 50 * 2 for f in frames)
    assert all(abs(f.duration_ms - 20.0) < 0.1 for f in frames)
    assert len(frames) > 25  # more than half a second of speech
    assert any(any(f.pcm) for f in frames)  # not silence


@needs_espeak
def test_stopping_early_kills_espeak() -> None:
    async def first_frame_then_stop() -> None:
        frames = EspeakTTS().synthesize("a long sentence " * 200)
        async with contextlib.aclosing(frames):
            async for _ in frames:
                break

    asyncio.run(first_frame_then_stop())
    assert [c for c in psutil.Process().children() if "espeak" in c.name()] == []


def test_a_missing_or_broken_binary_is_reported_honestly() -> None:
    missing = EspeakTTS(binary="no-such-espeak-binary")
    assert asyncio.run(missing.available()) is False
    assert asyncio.run(EspeakTTS(binary="false").available()) is False

    async def speak() -> None:
        async for _ in missing.synthesize("hello"):
            pass

    with pytest.raises(Unavailable):
        asyncio.run(speak())


def test_null_tts_speaks_nothing() -> None:
    async def collect() -> list[AudioFrame]:
        return [frame async for frame in NullTTS().synthesize("hello")]

    assert asyncio.run(collect()) == []


def test_the_transcriber_uploads_a_wav_as_multipart() -> None:
    seen: dict[str, object] = {}

    def server(request: httpx.Request) -> httpx.Response:
        message = BytesParser(policy=HTTP).parsebytes(
            b"Content-Type: " + request.headers["content-type"].encode() + b"\r\n\r\n"
            + request.content)
        parts = {part.get_param("name", header="content-disposition"): part
                 for part in message.iter_parts()}
        audio = parts["file"].get_payload(decode=True)
        assert isinstance(audio, bytes)
        with wave.open(io.BytesIO(audio), "rb") as wav:
            seen.update(rate=wav.getframerate(), frames=wav.getnframes(),
                        channels=wav.getnchannels())
        seen["model"] = parts["model"].get_payload()
        seen["path"] = request.url.path
        return httpx.Response(200, json={"text": " hello there "})

    transcriber = OpenAITranscriber("http://stt.invalid/v1", model="whisper-small",
                                    transport=httpx.MockTransport(server))

    async def scenario() -> str:
        try:
            return await transcriber.transcribe(_tone(1600), 16_000)
        finally:
            await transcriber.aclose()

    assert asyncio.run(scenario()) == "hello there"
    assert seen == {"rate": 16_000, "frames": 1600, "channels": 1, "model": "whisper-small",
                    "path": "/v1/audio/transcriptions"}


def test_an_unreachable_transcriber_is_unavailable() -> None:
    transcriber = OpenAITranscriber(f"http://127.0.0.1:{_closed_port()}/v1", timeout=2.0)

    async def scenario() -> None:
        try:
            assert await transcriber.available() is False
            with pytest.raises(Unavailable):
                await transcriber.transcribe(b"\x00\x00" * 160, 16_000)
        finally:
            await transcriber.aclose()

    asyncio.run(scenario())


def test_a_transcriber_that_never_answers_is_a_timeout() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        transcriber = OpenAITranscriber(f"http://127.0.0.1:{silent.getsockname()[1]}/v1",
                                        timeout=0.3)

        async def scenario() -> None:
            try:
                with pytest.raises(Timeout):
                    await transcriber.transcribe(b"\x00\x00" * 160, 16_000)
            finally:
                await transcriber.aclose()

        asyncio.run(scenario())


def test_detection_reports_what_really_works() -> None:
    port = _closed_port()
    report = asyncio.run(detect_adapters(VoiceSettings(
        tts="espeak-ng", stt_base_url=f"http://127.0.0.1:{port}/v1")))
    assert report["tts"]["available"] is HAS_ESPEAK
    assert report["stt"] == {"adapter": "openai", "available": False,
                             "detail": f"http://127.0.0.1:{port}/v1 does not answer"}
    assert report["ready"] is False  # a configured transcriber that does not answer

    quiet = asyncio.run(detect_adapters(VoiceSettings(tts="none", stt_base_url=None)))
    assert quiet["tts"]["adapter"] == "none"
    assert quiet["stt"]["available"] is False
    assert quiet["ready"] is True  # nothing configured is broken


def test_auto_falls_back_to_no_speech_only_when_espeak_does_not_run() -> None:
    tts = asyncio.run(select_tts(VoiceSettings(tts="auto", stt_base_url=None)))
    assert isinstance(tts, EspeakTTS if HAS_ESPEAK else NullTTS)


def test_an_unknown_tts_setting_is_refused_by_the_settings_and_by_the_adapters() -> None:
    with pytest.raises(ValueError, match="auto, espeak-ng, none"):
        VoiceSettings(tts="festival", stt_base_url=None)
    unchecked = VoiceSettings.model_construct(tts="festival", stt_base_url=None)
    with pytest.raises(ConfigError) as raised:
        asyncio.run(select_tts(unchecked))
    assert raised.value.key == "voice.tts"
