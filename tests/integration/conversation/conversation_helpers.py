"""What the conversation tests share: a slow OpenAI-compatible model server, socket helpers.

`SlowModelServer` is a real HTTP server on a free loopback port that speaks the
OpenAI chat API and streams its reply one word every `delay` seconds, so a
reply is reliably still in flight when a test interrupts it; it counts the
streams whose client went away, which is how the tests see a cancellation
travel all the way to the model server.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from sonia.testing import FreshStack


class SlowModelServer:
    def __init__(self, words: int = 400, delay: float = 0.05) -> None:
        self.words = words
        self.delay = delay
        self.abandoned = 0
        self.completed = 0
        self.requests = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _json(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/v1/models":
                    self._json(200, {"object": "list", "data": [{"id": "slow", "object": "model"}]})
                else:
                    self._json(404, {"error": {"message": "no such route"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                request = json.loads(self.rfile.read(length) or b"{}")
                with server._lock:
                    server.requests += 1
                if not request.get("stream"):
                    self._json(200, {"id": "slow-1", "object": "chat.completion", "model": "slow",
                                     "choices": [{"index": 0, "finish_reason": "stop",
                                                  "message": {"role": "assistant",
                                                              "content": "slow reply"}}],
                                     "usage": {"prompt_tokens": 1, "completion_tokens": 2}})
                    return
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.end_headers()
                try:
                    for n in range(server.words):
                        chunk = {"id": "slow-1", "object": "chat.completion.chunk",
                                 "model": "slow",
                                 "choices": [{"index": 0, "delta": {"content": f"word{n} "}}]}
                        self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                        self.wfile.flush()
                        time.sleep(server.delay)
                    self.wfile.write(b"data: [DONE]\n\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    with server._lock:
                        server.abandoned += 1
                    return
                with server._lock:
                    server.completed += 1

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    def __enter__(self) -> SlowModelServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(timeout=10)


def ws_url(stack: FreshStack, session_id: str) -> str:
    return stack.url("gateway").replace("http://", "ws://") + f"/v1/sessions/{session_id}/stream"


@contextmanager
def open_stream(stack: FreshStack, session_id: str,
                key: str | None = None) -> Iterator[ClientConnection]:
    """The session's WebSocket at the gateway, after its `session.ready` event."""
    headers = {"Authorization": f"Bearer {key or stack.user_key}"}
    with connect(ws_url(stack, session_id), additional_headers=headers, proxy=None,
                 open_timeout=10) as ws:
        ready = next_event(ws)
        assert ready["type"] == "session.ready", ready
        yield ws


def refused_status(url: str, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """The HTTP status and problem body of a WebSocket handshake that must be refused."""
    try:
        with connect(url, additional_headers=headers, proxy=None, open_timeout=10):
            pass
    except InvalidStatus as refused:
        body = refused.response.body or b"{}"
        return refused.response.status_code, json.loads(body)
    raise AssertionError(f"the handshake to {url} was accepted")


def next_event(ws: ClientConnection, timeout: float = 10.0,
               audio: list[bytes] | None = None) -> dict[str, Any]:
    """The next JSON event; binary audio frames on the way are collected in `audio`."""
    deadline = time.monotonic() + timeout
    while True:
        frame = ws.recv(timeout=max(0.0, deadline - time.monotonic()))
        if isinstance(frame, bytes):
            if audio is not None:
                audio.append(frame)
            continue
        event: dict[str, Any] = json.loads(frame)
        return event


def events_until(ws: ClientConnection, kind: str, timeout: float = 10.0,
                 audio: list[bytes] | None = None) -> list[dict[str, Any]]:
    """Every event up to and including the first of type `kind`."""
    deadline = time.monotonic() + timeout
    seen: list[dict[str, Any]] = []
    while True:
        event = next_event(ws, max(0.0, deadline - time.monotonic()), audio)
        seen.append(event)
        if event["type"] == kind:
            return seen


def log_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
