"""`sonia chat`: a conversation in the terminal with a running stack.

It starts a text session at the gateway (or continues one with `--session`),
opens the session's WebSocket stream and prints each reply as it streams in.
Ctrl-C while Sonia answers interrupts the reply (`control.interrupt`); Ctrl-C
at the prompt, Ctrl-D or `/quit` ends the conversation, and the session is
stopped on the way out. The key comes from `--key` or `SONIA_API_KEY`; the
gateway's address from `--url` or the home's configuration.

Lines read from a pipe work too, one message a line, so it can be scripted.

With `--tools` the model may use Sonia's tools: messages go through
`POST /v1/chat` and approvals are shown, and answered, in place (`chat_actions`).
"""

from __future__ import annotations

import json
import ssl
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, TextIO

import httpx
import typer
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from sonia.cli.chat_actions import ActingChat, problem_of
from sonia.cli.options import HomeOption, gateway_of
from sonia.errors import ConfigError

QUIT = {"/quit", "/exit", "/bye"}
END_WAIT_SECONDS = 2.0


class ChatError(Exception):
    """The conversation could not go on (refused key, unknown session, stack down)."""




class TerminalChat:
    def __init__(self, url: str, key: str, out: TextIO = sys.stdout,
                 verify: ssl.SSLContext | bool = True) -> None:
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {key}"}
        self.out = out
        self.verify = verify
        self.http = httpx.Client(base_url=self.url, headers=self.headers, timeout=30,
                                 trust_env=False, verify=verify)

    def start_session(self) -> str:
        try:
            response = self.http.post("/v1/sessions", json={"mode": "text"})
        except httpx.HTTPError as exc:
            raise ChatError(f"cannot reach the gateway at {self.url}: {exc}") from exc
        if response.status_code != 201:
            raise ChatError(f"cannot start a session: {problem_of(response)}")
        return str(response.json()["id"])

    def stop_session(self, session_id: str) -> None:
        try:
            self.http.post(f"/v1/sessions/{session_id}/stop")
        except httpx.HTTPError:
            pass  # best effort: an unstopped session expires when idle

    @contextmanager
    def open_stream(self, session_id: str) -> Iterator[ClientConnection]:
        ws_url = self.url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        try:
            tls = self.verify if isinstance(self.verify, ssl.SSLContext) else None
            ws = connect(f"{ws_url}/v1/sessions/{session_id}/stream",
                         additional_headers=self.headers, proxy=None, open_timeout=10,
                         ssl=tls if ws_url.startswith("wss://") else None)
        except InvalidStatus as exc:
            body = exc.response.body or b""
            try:
                detail = json.loads(body).get("detail", "")
            except ValueError:
                detail = ""
            raise ChatError(f"the stream was refused ({exc.response.status_code}): "
                            f"{detail}") from exc
        except OSError as exc:
            raise ChatError(f"cannot open the stream: {exc}") from exc
        with ws:
            ready = self._event(ws)
            if ready.get("type") != "session.ready":
                raise ChatError(f"unexpected first event {ready!r}")
            yield ws

    @staticmethod
    def _event(ws: ClientConnection, timeout: float | None = None) -> dict[str, Any]:
        while True:
            frame = ws.recv(timeout=timeout)
            if isinstance(frame, str):
                event: dict[str, Any] = json.loads(frame)
                return event
            # binary frames are audio; a text session has none, and they are not shown

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def exchange(self, ws: ClientConnection, message: str) -> None:
        """Send one message and print the reply as it streams; Ctrl-C interrupts it."""
        ws.send(json.dumps({"type": "input.text", "text": message}))
        self._write("sonia> ")
        interrupted = False
        while True:
            try:
                event = self._event(ws)
            except KeyboardInterrupt:
                if interrupted:
                    raise
                interrupted = True
                ws.send(json.dumps({"type": "control.interrupt"}))
                continue
            kind = event.get("type")
            if kind == "response.delta":
                self._write(str(event.get("text", "")))
            elif kind == "response.final":
                by = f"  [{event['provider']}]" if event.get("provider") else ""
                self._write(" [interrupted]\n" if event.get("interrupted") else f"{by}\n")
                if event.get("interrupted") or not interrupted:
                    return
            elif kind == "response.pending_approval":
                self._write(f"[waiting for an approver: {event.get('tool')} "
                            f"{json.dumps(event.get('args'))} (action {event.get('action_id')})] ")
            elif kind == "turn.resumed":
                self._write(f"[an earlier turn went on after it was {event.get('decision')}: "
                            f"{event.get('reply')}]\nsonia> ")
            elif kind == "error":
                self._write(f"\n[{event.get('code')}] {event.get('detail')}\n")
                return
            elif kind == "session.ended":
                raise ChatError(f"the session ended: {event.get('reason')}")

    def end(self, ws: ClientConnection) -> None:
        try:
            ws.send(json.dumps({"type": "control.end"}))
            deadline = time.monotonic() + END_WAIT_SECONDS
            while (left := deadline - time.monotonic()) > 0:
                if self._event(ws, timeout=left).get("type") == "session.ended":
                    break
        except (ConnectionClosed, TimeoutError):
            pass

    def _converse(self, ws: ClientConnection, session_id: str, lines: TextIO) -> None:
        interactive = lines.isatty()
        if interactive:
            self._write(f"session {session_id}; Ctrl-C interrupts a reply, "
                        "Ctrl-D or /quit ends\n")
        try:
            while True:
                if interactive:
                    self._write("you> ")
                try:
                    line = lines.readline()
                except KeyboardInterrupt:
                    break
                if not line or line.strip() in QUIT:
                    break
                if line.strip():
                    self.exchange(ws, line.rstrip("\n"))
        except ConnectionClosed as exc:
            raise ChatError(f"the stream closed: {exc}") from exc
        finally:
            self.end(ws)

    def act(self, session_id: str, lines: TextIO, approver_key: str | None) -> None:
        """The `--tools` conversation: whole replies, approvals in place."""
        acting = ActingChat(self.http, self.out, approver_key)
        if lines.isatty():
            self._write(f"session {session_id}; the model may use tools; "
                        "Ctrl-D or /quit ends\n")
        while True:
            if lines.isatty():
                self._write("you> ")
            try:
                line = lines.readline()
            except KeyboardInterrupt:
                return
            if not line or line.strip() in QUIT:
                return
            if line.strip():
                try:
                    acting.exchange(session_id, line.rstrip("\n"), lines)
                except httpx.HTTPError as exc:
                    raise ChatError(f"the gateway stopped answering: {exc}") from exc

    def run(self, session: str | None, lines: TextIO = sys.stdin, *, tools: bool = False,
            approver_key: str | None = None) -> None:
        session_id = session or self.start_session()
        try:
            if tools:
                self.act(session_id, lines, approver_key)
                return
            with self.open_stream(session_id) as ws:
                self._converse(ws, session_id, lines)
        finally:
            if session is None:
                self.stop_session(session_id)
            self.http.close()


def register(app: typer.Typer) -> None:
    @app.command()
    def chat(
        home: HomeOption = None,
        key: Annotated[str | None, typer.Option(
            "--key", envvar="SONIA_API_KEY", show_default=False,
            help="your API key (default: $SONIA_API_KEY)")] = None,
        url: Annotated[str | None, typer.Option(
            help="the gateway's URL (default: from the home's configuration)")] = None,
        session: Annotated[str | None, typer.Option(
            help="continue this session instead of starting one")] = None,
        tools: Annotated[bool, typer.Option(
            "--tools", help="let the model use Sonia's tools (whole replies; approvals "
                            "shown inline)")] = False,
        approver_key: Annotated[str | None, typer.Option(
            "--approver-key", envvar="SONIA_APPROVER_KEY", show_default=False,
            help="with --tools: an approver key, to approve or deny in place")] = None,
    ) -> None:
        """Talk with Sonia in the terminal; replies stream in as they are made."""
        if not key:
            raise ConfigError("no API key: pass --key or set SONIA_API_KEY "
                              "(create one with `sonia keys create`)", key="key")
        url, verify = gateway_of(home, url)
        try:
            TerminalChat(url, key, verify=verify).run(session, tools=tools,
                                                      approver_key=approver_key)
        except ChatError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise typer.Exit(1) from exc
