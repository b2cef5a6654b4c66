"""A scripted OpenAI-compatible model server: real HTTP, replies decided by a function.

`ScriptedModelServer(script)` listens on a free loopback port and answers
`GET /v1/models` and `POST /v1/chat/completions` (non-streaming; a streaming
request gets the same step as chunks, tool calls streamed as OpenAI does: id and
name first, the arguments in pieces). Each completion's reply is
`script(request)`: the assistant message to send, e.g. `{"content": "hi"}` or
`{"tool_calls": [...]}`, or `{"http_status": 400, "error": "..."}` to refuse it.
Every request is kept in `requests`, so a test or a gate can see exactly what
the model was shown (tools offered, tool results).

It exists so that tool calling, approvals and the injection suite run against a
real server speaking the real protocol, with a model whose behaviour is fixed:
no network, no weights, no mocks inside Sonia.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Script = Callable[[dict[str, Any]], dict[str, Any]]

MODEL_ID = "scripted"


def tool_call(call_id: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """One OpenAI tool call, as a model server sends it."""
    return {"id": call_id, "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments)}}


def _streamed_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tool calls as OpenAI streams them: a first delta with the index, id and name, then
    the arguments in two pieces (so a reader must put them back together)."""
    deltas: list[dict[str, Any]] = []
    for index, call in enumerate(calls):
        function = call.get("function") or {}
        arguments = str(function.get("arguments") or "")
        half = len(arguments) // 2
        deltas.append({"tool_calls": [{"index": index, "id": call.get("id"), "type": "function",
                                       "function": {"name": function.get("name"),
                                                    "arguments": ""}}]})
        for piece in (arguments[:half], arguments[half:]):
            deltas.append({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
    return deltas


class ScriptedModelServer:
    def __init__(self, script: Script, model: str = MODEL_ID) -> None:
        self.script = script
        self.model = model
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _send(self, status: int, body: bytes, kind: str) -> None:
                self.send_response(status)
                self.send_header("content-type", kind)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _json(self, status: int, body: dict[str, Any]) -> None:
                self._send(status, json.dumps(body).encode(), "application/json")

            def do_GET(self) -> None:
                if self.path == "/v1/models":
                    self._json(200, {"object": "list",
                                     "data": [{"id": server.model, "object": "model"}]})
                else:
                    self._json(404, {"error": {"message": "no such route"}})

            def do_POST(self) -> None:
                if self.path != "/v1/chat/completions":
                    self._json(404, {"error": {"message": "no such route"}})
                    return
                length = int(self.headers.get("content-length", "0"))
                request = json.loads(self.rfile.read(length) or b"{}")
                with server._lock:
                    server.requests.append(request)
                try:
                    reply = server.script(request)
                except Exception as exc:  # the script's bug is the test's to see
                    self._json(500, {"error": {"message": f"script failed: {exc!r}"}})
                    return
                if "http_status" in reply:  # the script refuses this request
                    self._json(int(reply["http_status"]),
                               {"error": {"message": str(reply.get("error", "refused"))}})
                    return
                message = {"role": "assistant", "content": reply.get("content"),
                           **({"tool_calls": reply["tool_calls"]}
                              if reply.get("tool_calls") else {})}
                finish = "tool_calls" if reply.get("tool_calls") else "stop"
                if not request.get("stream"):
                    self._json(200, {"id": "scripted-1", "object": "chat.completion",
                                     "model": server.model,
                                     "choices": [{"index": 0, "finish_reason": finish,
                                                  "message": message}],
                                     "usage": {"prompt_tokens": 1, "completion_tokens": 1}})
                    return
                chunks = [{"role": "assistant", "content": message["content"] or ""},
                          *_streamed_calls(reply.get("tool_calls") or []), {}]
                body = "".join(
                    "data: " + json.dumps({
                        "id": "scripted-1", "object": "chat.completion.chunk",
                        "model": server.model,
                        "choices": [{"index": 0, "delta": delta,
                                     "finish_reason": None if delta else finish}]}) + "\n\n"
                    for delta in chunks) + "data: [DONE]\n\n"
                self._send(200, body.encode(), "text/event-stream")

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    def __enter__(self) -> ScriptedModelServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(timeout=10)


__all__ = ["MODEL_ID", "Script", "ScriptedModelServer", "tool_call"]
