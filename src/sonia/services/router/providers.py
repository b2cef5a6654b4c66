"""Model providers: what the router can ask for a reply.

Every provider has a `name` and answers the same three calls:

    await provider.generate(request) -> Generation      the whole reply
    provider.stream(request)         -> AsyncIterator[str] text deltas, in order
    await provider.health()          -> bool             can it answer right now?

`BuiltinProvider` runs anywhere with no model at all (the default, so the stack
and its tests need nothing installed); `OpenAIProvider` talks to any
OpenAI-compatible server (Ollama, LM Studio, vLLM, llama.cpp server);
`LlamaCppProvider` embeds a GGUF model through the optional `sonia-stack[local-llm]`
extra. Failures leave a provider as Sonia's errors (`Unavailable`, `Timeout`),
translated here at the boundary with `raise ... from exc`, so the router can
fall back without knowing any HTTP library.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import re
import threading
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import httpx

from sonia.errors import ApiError, ConfigError, InvalidArgument, Timeout, Unavailable

ROLES = frozenset({"system", "user", "assistant"})


@dataclass(frozen=True)
class Message:
    role: str
    content: str

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Message:
        role, content = data.get("role"), data.get("content")
        if role not in ROLES or not isinstance(content, str):
            raise InvalidArgument("a message is {role: system|user|assistant, content: str}")
        return cls(role=str(role), content=content)

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True)
class GenerationRequest:
    """What to answer: the conversation so far (last message is the user's) and what
    the memory service recalled for it."""

    messages: tuple[Message, ...]
    recalled: tuple[str, ...] = ()
    max_tokens: int = 512
    temperature: float = 0.0
    model: str | None = None

    @classmethod
    def of(
        cls,
        messages: Sequence[Mapping[str, Any]],
        recalled: Sequence[str] = (),
        *,
        max_tokens: int = 512,
        temperature: float = 0.0,
        model: str | None = None,
    ) -> GenerationRequest:
        """Build a request from plain dicts, refusing what no provider could serve."""
        if not messages:
            raise InvalidArgument("a generation needs at least one message")
        if isinstance(max_tokens, bool) or not 1 <= max_tokens <= 32_768:
            raise InvalidArgument("max_tokens must be from 1 to 32768")
        if not 0.0 <= temperature <= 2.0:
            raise InvalidArgument("temperature must be from 0 to 2")
        return cls(messages=tuple(Message.from_dict(m) for m in messages),
                   recalled=tuple(recalled), max_tokens=max_tokens,
                   temperature=temperature, model=model)

    def last_user_message(self) -> str:
        for message in reversed(self.messages):
            if message.role == "user":
                return message.content
        return ""


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "total_tokens": self.total_tokens}


@dataclass(frozen=True)
class Generation:
    text: str
    model: str
    provider: str
    usage: Usage = field(default_factory=lambda: Usage(0, 0))
    finish_reason: str = "stop"


@runtime_checkable
class Provider(Protocol):
    """A source of replies; see the module docstring."""

    name: str

    async def generate(self, request: GenerationRequest) -> Generation: ...

    def stream(self, request: GenerationRequest) -> AsyncIterator[str]: ...

    async def health(self) -> bool: ...

    async def models(self) -> list[str]:
        """The model ids this provider can answer with; Unavailable when it cannot say."""
        ...


def count_words(text: str) -> int:
    """The builtin's token unit: whitespace-separated words (no tokenizer needed)."""
    return len(text.split())


def word_deltas(text: str) -> list[str]:
    """Split `text` into word-sized pieces (each word with the space after it) whose
    concatenation is exactly `text`."""
    pieces = re.findall(r"\s*\S+\s*", text) if text.strip() else ([text] if text else [])
    return pieces


# --------------------------------------------------------------------------- builtin

_STOPWORDS = frozenset("""
a an the is are was were be been am do does did i me my mine myself you your yours we our
what whats where who whom which when why how that this these those it its of to in on at for
with about from by as and or but if so not no yes can could would should will shall may might
must have has had s t m re ve ll d tell know remember please again any some there here than
then just also too very much many more most one them they he she him her his hers
""".split())

_GREETINGS = frozenset({"hi", "hello", "hey", "hiya", "howdy", "greetings", "yo", "morning",
                        "evening", "afternoon", "good"})
_QUESTION_WORDS = frozenset({"what", "whats", "where", "wheres", "who", "whos", "when", "which",
                             "why", "how", "do", "does", "did", "is", "are", "am", "can",
                             "could", "would", "will", "should", "have", "has", "was", "were"})
_FLIP = {"i": "you", "me": "you", "my": "your", "mine": "yours", "myself": "yourself",
         "am": "are", "i'm": "you're", "im": "you're", "i've": "you've", "i'll": "you'll",
         "i'd": "you'd", "we": "you", "our": "your", "us": "you"}
_REMEMBER = re.compile(r"^\s*(?:please\s+)?(?:remember|note|don't forget|do not forget)"
                       r"(?:\s+that)?[\s:,]+(?P<fact>.+)$", re.IGNORECASE | re.DOTALL)
_FACT_START = re.compile(r"^\s*(?:my|i|i'm|im|i've|we|our)\b", re.IGNORECASE)
_HELP = re.compile(r"^\s*(?:help|\?|what can you do|who are you|what are you)\W*$",
                   re.IGNORECASE)

INTRO = ("I'm Sonia's built-in offline model: I can remember what you tell me and answer "
         "from it, but I don't reason beyond that. Tell me a fact (\"my favourite colour is "
         "teal\") or ask about one (\"what is my favourite colour?\"). For open-ended answers, "
         "connect a language model (router.openai_base_url).")


def _words(text: str) -> list[str]:
    return [w.replace("'", "") for w in re.findall(r"[a-z0-9']+", text.lower())]


def _stem(word: str) -> str:
    for suffix in ("ing", "es", "s"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def _content_words(text: str) -> set[str]:
    return {_stem(w) for w in _words(text) if w not in _STOPWORDS}


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().rstrip(".!?;,: ")


def _flip_person(text: str) -> str:
    """Say the user's fact back from Sonia's side: "my dog is Rex" -> "your dog is Rex"."""
    out: list[str] = []
    previous = ""
    for token in re.findall(r"\S+|\s+", text):
        if token.isspace():
            out.append(token)
            continue
        core = token.strip(".,;:!?\"()")
        key = core.lower()
        flipped = _FLIP.get(key) if core else None
        if key == "am" and previous != "i":
            flipped = None  # only "I am" becomes "you are"
        out.append(token.replace(core, flipped, 1) if flipped else token)
        previous = key
    return "".join(out)


class BuiltinProvider:
    """An offline, deterministic stand-in for a language model.

    It is honest about what it is and useful within that: it notes facts the user
    states, answers questions from recalled memories and earlier user turns by word
    overlap, greets, explains itself on "help", and otherwise says what it knows
    that relates to the message. The same request always gets the same reply (no
    randomness, no clock). Usage counts whitespace-separated words as tokens.
    """

    def __init__(self, name: str = "builtin", model: str = "sonia-builtin") -> None:
        self.name = name
        self.model = model

    def reply(self, request: GenerationRequest) -> str:
        """The reply text (truncated to `max_tokens` words)."""
        text = self._compose(request)
        words = text.split()
        if len(words) > max(request.max_tokens, 1):
            text = " ".join(words[: max(request.max_tokens, 1)])
        return text

    def _compose(self, request: GenerationRequest) -> str:
        message = request.last_user_message().strip()
        words = _words(message)
        if not words:
            return "I didn't catch anything there. " + INTRO
        if _HELP.match(message):
            return INTRO
        if words[0] in _GREETINGS and len(words) <= 4 and not message.endswith("?"):
            return "Hello! " + INTRO
        remember = _REMEMBER.match(message)
        if remember:
            return f"Noted: {_flip_person(_clean(remember.group('fact')))}."
        is_question = message.rstrip().endswith("?") or words[0] in _QUESTION_WORDS
        if not is_question and _FACT_START.match(message):
            return f"Noted: {_flip_person(_clean(message))}."
        evidence = self._evidence(request, message)
        if is_question:
            if evidence:
                return f"You told me: {evidence[0]}."
            return ("I don't know that yet: you haven't told me. Tell me and I'll remember "
                    "it, for example \"my favourite colour is teal\".")
        if evidence:
            return "Here is what I know that relates to that: " + "; ".join(evidence[:3]) + "."
        return ("I'm Sonia's built-in offline model, so I can't answer that on my own, and "
                "nothing you told me relates to it yet. Tell me facts to remember, or "
                "connect a language model (router.openai_base_url).")

    def _evidence(self, request: GenerationRequest, message: str) -> list[str]:
        """Recalled memories and earlier user statements sharing words with `message`,
        best overlap first; ties keep the memory service's order, then newest turn."""
        wanted = _content_words(message)
        if not wanted:
            return []
        candidates: list[str] = list(request.recalled)
        earlier = [m.content for m in request.messages if m.role == "user"][:-1]
        candidates += [t for t in reversed(earlier) if not t.rstrip().endswith("?")]
        scored: list[tuple[int, int, str]] = []
        seen: set[str] = set()
        for index, candidate in enumerate(candidates):
            remember = _REMEMBER.match(candidate)
            fact = _clean(remember.group("fact") if remember else candidate)
            overlap = len(wanted & _content_words(fact))
            if overlap and fact.lower() not in seen:
                seen.add(fact.lower())
                scored.append((-overlap, index, fact))
        return [fact for _, _, fact in sorted(scored)]

    def _usage(self, request: GenerationRequest, text: str) -> Usage:
        prompt = sum(count_words(m.content) for m in request.messages)
        prompt += sum(count_words(r) for r in request.recalled)
        return Usage(prompt_tokens=prompt, completion_tokens=count_words(text))

    async def generate(self, request: GenerationRequest) -> Generation:
        text = self.reply(request)
        return Generation(text=text, model=self.model, provider=self.name,
                          usage=self._usage(request, text))

    async def stream(self, request: GenerationRequest) -> AsyncIterator[str]:
        for piece in word_deltas(self.reply(request)):
            yield piece
            await asyncio.sleep(0)  # let other tasks (and cancellation) in between words

    async def health(self) -> bool:
        return True

    async def models(self) -> list[str]:
        return [self.model]


# --------------------------------------------------------------------------- OpenAI

class SSEDecoder:
    """Incremental decoder of a Server-Sent Events byte stream.

    `feed(chunk)` accepts bytes split anywhere (even inside a line or a CRLF) and
    returns the `data` of every event completed so far; multi-line data is joined
    with newlines, comments and other fields are ignored (the SSE specification).
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[str]:
        self._buffer += chunk
        events: list[str] = []
        while True:
            cut = self._line_end()
            if cut is None:
                return events
            end, skip = cut
            line = self._buffer[:end].decode("utf-8", errors="replace")
            self._buffer = self._buffer[end + skip:]
            if line == "":
                if self._data:
                    events.append("\n".join(self._data))
                    self._data = []
            elif line.startswith(":"):
                continue
            else:
                name, _, value = line.partition(":")
                if name == "data":
                    self._data.append(value[1:] if value.startswith(" ") else value)

    def _line_end(self) -> tuple[int, int] | None:
        for index, byte in enumerate(self._buffer):
            if byte == 0x0A:
                return index, 1
            if byte == 0x0D:
                if index + 1 == len(self._buffer):
                    return None  # a CR at the end may be half of a CRLF
                return index, 2 if self._buffer[index + 1] == 0x0A else 1
        return None

    def close(self) -> list[str]:
        """The last event, when the stream ended without its blank line."""
        events = self.feed(b"\n\n") if (self._buffer or self._data) else []
        return events


def chunk_delta(data: str) -> str:
    """The text of one streamed chat.completion.chunk (empty for role-only chunks)."""
    try:
        payload = json.loads(data)
        content = payload["choices"][0]["delta"].get("content")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise Unavailable(f"malformed stream chunk from model server: {data[:200]!r}") from exc
    return content if isinstance(content, str) else ""


def parse_chunk(data: str) -> dict[str, Any]:
    """One streamed `chat.completion.chunk`, checked to hold a choice with a delta."""
    try:
        chunk = json.loads(data)
        if not isinstance(chunk["choices"][0]["delta"], dict):
            raise TypeError("delta is not an object")
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise Unavailable(f"malformed stream chunk from model server: {data[:200]!r}") from exc
    return dict(chunk)


def completion_as_chunk(body: Any) -> dict[str, Any]:
    """A whole `chat.completion` as the one chunk that says the same (tool calls get the
    `index` a streamed delta carries)."""
    choice = body["choices"][0]
    message = choice["message"]
    if not isinstance(message, dict):
        raise TypeError("message is not an object")
    delta: dict[str, Any] = {"role": "assistant", "content": message.get("content")}
    calls = message.get("tool_calls")
    if isinstance(calls, list) and calls:
        delta["tool_calls"] = [{**call, "index": index} for index, call in enumerate(calls)
                               if isinstance(call, dict)]
    return {"model": body.get("model"), "usage": body.get("usage"),
            "choices": [{"index": 0, "delta": delta,
                         "finish_reason": choice.get("finish_reason")}]}


def system_with_memories(recalled: Sequence[str]) -> list[dict[str, str]]:
    if not recalled:
        return []
    lines = "\n".join(f"- {r}" for r in recalled)
    return [{"role": "system",
             "content": f"Things the user told you earlier (use them when relevant):\n{lines}"}]


class OpenAIProvider:
    """Any OpenAI-compatible chat server; `base_url` includes `/v1`."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout: float = 30.0,
        *,
        name: str = "openai",
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self.model = model
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            base_url=self.base_url, headers=headers, transport=transport,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)))

    async def aclose(self) -> None:
        await self._client.aclose()

    def _payload(self, request: GenerationRequest, *, stream: bool) -> dict[str, Any]:
        messages = system_with_memories(request.recalled)
        messages += [m.to_dict() for m in request.messages]
        return {"model": request.model or self.model, "messages": messages,
                "max_tokens": request.max_tokens, "temperature": request.temperature,
                "stream": stream}

    def _failure(self, exc: httpx.HTTPError) -> ApiError:
        if isinstance(exc, httpx.TimeoutException):
            return Timeout(f"model server {self.name} did not answer in time")
        return Unavailable(f"model server {self.name} unreachable: {type(exc).__name__}")

    def _check(self, response: httpx.Response, body: str) -> None:
        if response.status_code >= 300:
            raise Unavailable(
                f"model server {self.name} answered HTTP {response.status_code}: {body[:200]}")

    async def generate(self, request: GenerationRequest) -> Generation:
        try:
            response = await self._client.post(
                "/chat/completions", json=self._payload(request, stream=False))
        except httpx.HTTPError as exc:
            raise self._failure(exc) from exc
        self._check(response, response.text)
        try:
            body = response.json()
            choice = body["choices"][0]
            text = choice["message"]["content"] or ""
            usage = body.get("usage") or {}
            return Generation(
                text=text, model=str(body.get("model") or request.model or self.model),
                provider=self.name, finish_reason=str(choice.get("finish_reason") or "stop"),
                usage=Usage(int(usage.get("prompt_tokens", 0)),
                            int(usage.get("completion_tokens", count_words(text)))))
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise Unavailable(f"model server {self.name} answered a malformed body") from exc

    async def complete(self, payload: dict[str, Any]) -> dict[str, Any]:
        """One raw `POST /chat/completions` (tool calls and all): its JSON body, with at
        least one choice holding a message; used by `router.tools`. A 400 or 422 is
        InvalidArgument (the server refused this request), anything else Unavailable."""
        try:
            response = await self._client.post("/chat/completions", json=payload)
        except httpx.HTTPError as exc:
            raise self._failure(exc) from exc
        if response.status_code in (400, 422):
            # The server is up and says no to this request (a model without tool support,
            # say): the caller's to handle, not a failure to quarantine the server for.
            raise InvalidArgument(f"model server {self.name} refused the request: "
                                  f"{response.text[:300]}")
        self._check(response, response.text)
        try:
            body = response.json()
            if not isinstance(body["choices"][0]["message"], dict):
                raise TypeError("message is not an object")
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise Unavailable(f"model server {self.name} answered a malformed body") from exc
        return dict(body)

    async def complete_stream(self, payload: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """`POST /chat/completions` with `stream: true`: each `chat.completion.chunk` as
        the server sends it (tool call deltas and all); used by `router.tools`. A server
        that ignores `stream` answers one completion, which comes out as one chunk. A
        400 or 422 is InvalidArgument before any chunk, as in `complete`."""
        decoder = SSEDecoder()
        try:
            async with self._client.stream("POST", "/chat/completions",
                                           json={**payload, "stream": True}) as response:
                if response.status_code in (400, 422):
                    text = (await response.aread()).decode(errors="replace")
                    raise InvalidArgument(f"model server {self.name} refused the request: "
                                          f"{text[:300]}")
                if response.status_code >= 300:
                    self._check(response, (await response.aread()).decode(errors="replace"))
                if response.headers.get("content-type", "").startswith("application/json"):
                    yield completion_as_chunk(json.loads(await response.aread()))
                    return
                async for raw in response.aiter_bytes():
                    for data in decoder.feed(raw):
                        if data.strip() == "[DONE]":
                            return
                        yield parse_chunk(data)
                for data in decoder.close():
                    if data.strip() != "[DONE]":
                        yield parse_chunk(data)
        except httpx.HTTPError as exc:
            raise self._failure(exc) from exc
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise Unavailable(f"model server {self.name} answered a malformed body") from exc

    async def stream(self, request: GenerationRequest) -> AsyncIterator[str]:
        decoder = SSEDecoder()
        try:
            async with self._client.stream(
                    "POST", "/chat/completions",
                    json=self._payload(request, stream=True)) as response:
                if response.status_code >= 300:
                    self._check(response, (await response.aread()).decode(errors="replace"))
                if response.headers.get("content-type", "").startswith("application/json"):
                    # A server that ignores `stream: true` answers one completion.
                    body = json.loads(await response.aread())
                    text = body["choices"][0]["message"]["content"] or ""
                    if text:
                        yield text
                    return
                async for chunk in response.aiter_bytes():
                    for data in decoder.feed(chunk):
                        if data.strip() == "[DONE]":
                            return
                        delta = chunk_delta(data)
                        if delta:
                            yield delta
                for data in decoder.close():
                    if data.strip() != "[DONE]" and (delta := chunk_delta(data)):
                        yield delta
        except httpx.HTTPError as exc:
            raise self._failure(exc) from exc
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise Unavailable(f"model server {self.name} answered a malformed body") from exc

    async def health(self) -> bool:
        try:
            response = await self._client.get("/models")
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def models(self) -> list[str]:
        """The server's own model list (`GET /models`), in its order."""
        try:
            response = await self._client.get("/models")
        except httpx.HTTPError as exc:
            raise self._failure(exc) from exc
        self._check(response, response.text)
        try:
            return [str(entry["id"]) for entry in response.json()["data"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise Unavailable(f"model server {self.name} answered a malformed model list") \
                from exc


# --------------------------------------------------------------------------- llama.cpp

class LlamaCppProvider:
    """A GGUF model embedded in this process through llama-cpp-python (optional extra).

    The model is not thread-safe, so one call runs at a time; calls run in a worker
    thread so the event loop stays free. A cancelled stream stops at the next token.
    """

    def __init__(self, model_path: str | Path, *, name: str = "llamacpp",
                 n_ctx: int = 4096) -> None:
        try:
            llama_cpp = importlib.import_module("llama_cpp")
        except ImportError as exc:
            raise ConfigError(
                "the llamacpp provider needs the optional extra: "
                "pip install 'sonia-stack[local-llm]'",
                key="router.llamacpp_model_path") from exc
        path = Path(model_path)
        if not path.is_file():
            raise ConfigError(f"GGUF model {path} does not exist",
                              key="router.llamacpp_model_path")
        self.name = name
        self.model = path.stem
        self._llm: Any = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, verbose=False)
        self._lock = asyncio.Lock()

    def _messages(self, request: GenerationRequest) -> list[dict[str, str]]:
        return system_with_memories(request.recalled) + [m.to_dict() for m in request.messages]

    async def generate(self, request: GenerationRequest) -> Generation:
        async with self._lock:
            out: dict[str, Any] = await asyncio.to_thread(
                self._llm.create_chat_completion, messages=self._messages(request),
                max_tokens=request.max_tokens, temperature=request.temperature)
        text = out["choices"][0]["message"]["content"] or ""
        usage = out.get("usage") or {}
        return Generation(text=text, model=self.model, provider=self.name,
                          usage=Usage(int(usage.get("prompt_tokens", 0)),
                                      int(usage.get("completion_tokens", 0))))

    async def stream(self, request: GenerationRequest) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | BaseException | None] = asyncio.Queue()
        stop = threading.Event()

        def produce() -> None:
            try:
                chunks: Iterator[dict[str, Any]] = self._llm.create_chat_completion(
                    messages=self._messages(request), max_tokens=request.max_tokens,
                    temperature=request.temperature, stream=True)
                for chunk in chunks:
                    if stop.is_set():
                        break
                    text = chunk["choices"][0]["delta"].get("content") or ""
                    if text:
                        loop.call_soon_threadsafe(queue.put_nowait, text)
                loop.call_soon_threadsafe(queue.put_nowait, None)
            except BaseException as exc:  # handed to the awaiting task, not swallowed
                loop.call_soon_threadsafe(queue.put_nowait, exc)

        async with self._lock:
            worker = loop.run_in_executor(None, produce)
            try:
                while (item := await queue.get()) is not None:
                    if isinstance(item, BaseException):
                        raise Unavailable(f"llama.cpp failed: {item}") from item
                    yield item
            finally:
                stop.set()
                with contextlib.suppress(Exception):
                    await asyncio.shield(worker)

    async def health(self) -> bool:
        return True

    async def models(self) -> list[str]:
        return [self.model]


__all__ = [
    "BuiltinProvider", "Generation", "GenerationRequest", "LlamaCppProvider", "Message",
    "OpenAIProvider", "Provider", "SSEDecoder", "Usage", "chunk_delta", "count_words",
    "system_with_memories", "word_deltas",
]
