"""A loopback TCP proxy whose behaviour is switched at run time: the chaos gate's scissors.

The chaos gate puts one in front of a service (through `[upstreams]` in the
fresh home's configuration, so every internal caller goes through it) and then
makes that dependency misbehave without touching the service itself:

    pass    bytes flow both ways, unchanged
    drop    every connection, new and existing, is reset (RST): the dependency
            is unreachable, and callers see it at once
    delay   every chunk, in both directions, is held `delay_s` before it is
            forwarded: the dependency is reachable but slower than its callers'
            timeouts

A switch takes effect at once for existing connections too: switching to drop
resets them, and switching away from delay releases the chunks being held (a
real network delivers bytes already in flight, so held bytes are forwarded,
not discarded, unless the new mode is drop).

The proxy runs its own asyncio loop in a background thread, so the gate's
traffic loop and its fault schedule never share a loop with it:

    with TcpProxy() as proxy:              # listens on a free loopback port
        proxy.set_target(settings.port_of("memory"))
        proxy.drop(); ...; proxy.delay(12.0); ...; proxy.pass_through()
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

__all__ = ["MODES", "Mode", "ProxyStats", "TcpProxy"]

Mode = Literal["pass", "drop", "delay"]
MODES: tuple[Mode, ...] = ("pass", "drop", "delay")
CHUNK = 65_536
CONNECT_TIMEOUT_S = 5.0
START_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class ProxyStats:
    """Counters since the proxy started (a snapshot)."""

    accepted: int
    reset: int
    upstream_failures: int
    bytes_to_target: int
    bytes_from_target: int
    open_connections: int


class _Pair:
    """One client connection and its upstream connection."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None

    def reset(self) -> None:
        for writer in (self.client, self.upstream):
            if writer is not None:
                _reset(writer)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0), the way a dead host or a firewall answers."""
    transport = writer.transport
    if transport.is_closing():
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class TcpProxy:
    """Forward `listen_host:port` to a target, in one of `MODES`, switchable from any thread."""

    def __init__(self, target_port: int | None = None, *, target_host: str = "127.0.0.1",
                 listen_host: str = "127.0.0.1", listen_port: int = 0) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.listen_host = listen_host
        self._listen_port = listen_port
        self._mode: Mode = "pass"
        self._delay_s = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._changed: asyncio.Event | None = None
        self._pairs: set[_Pair] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._accepted = 0
        self._reset_count = 0
        self._upstream_failures = 0
        self._to_target = 0
        self._from_target = 0

    # -- control (any thread) -------------------------------------------------------
    @property
    def port(self) -> int:
        """The port the proxy listens on (known once started)."""
        if not self._ready.is_set():
            raise RuntimeError("the proxy is not started")
        return self._listen_port

    @property
    def url(self) -> str:
        return f"http://{self.listen_host}:{self.port}"

    @property
    def mode(self) -> Mode:
        return self._mode

    @property
    def delay_s(self) -> float:
        return self._delay_s

    def start(self) -> int:
        """Bind and serve in a background thread; returns the listening port."""
        if self._thread is not None:
            raise RuntimeError("the proxy is already started")
        self._thread = threading.Thread(target=self._run, name="chaos-tcp-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S):
            raise RuntimeError("the proxy did not start in time")
        if self._error is not None:
            raise RuntimeError(f"the proxy could not start: {self._error}") from self._error
        return self._listen_port

    def set_target(self, port: int, host: str | None = None) -> None:
        """Where new connections go (existing ones keep their upstream)."""
        self.target_port = port
        if host is not None:
            self.target_host = host

    def set_mode(self, mode: Mode, delay_s: float = 0.0) -> None:
        """Switch the behaviour for new and existing connections; returns once applied."""
        if mode not in MODES:
            raise ValueError(f"unknown proxy mode {mode!r}; modes are {', '.join(MODES)}")
        if mode == "delay" and not delay_s > 0:
            raise ValueError("delay mode needs delay_s > 0")
        loop = self._loop
        if loop is None or not self._ready.is_set():
            self._mode, self._delay_s = mode, delay_s if mode == "delay" else 0.0
            return
        done = threading.Event()

        def apply() -> None:
            self._apply(mode, delay_s)
            done.set()

        loop.call_soon_threadsafe(apply)
        if not done.wait(START_TIMEOUT_S):
            raise RuntimeError("the proxy loop did not apply the mode change")

    def pass_through(self) -> None:
        self.set_mode("pass")

    def drop(self) -> None:
        self.set_mode("drop")

    def delay(self, seconds: float) -> None:
        self.set_mode("delay", seconds)

    def stats(self) -> ProxyStats:
        return ProxyStats(accepted=self._accepted, reset=self._reset_count,
                          upstream_failures=self._upstream_failures,
                          bytes_to_target=self._to_target, bytes_from_target=self._from_target,
                          open_connections=len(self._pairs))

    def stop(self) -> None:
        """Close the listener and every connection, end the loop and join the thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if loop.is_running():
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(START_TIMEOUT_S)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(START_TIMEOUT_S)
        self._thread = None

    def __enter__(self) -> TcpProxy:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- the loop (proxy thread) ----------------------------------------------------
    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            try:
                loop.run_until_complete(self._listen())
            except OSError as exc:
                self._error = exc
                self._ready.set()
                return
            self._ready.set()
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _listen(self) -> None:
        self._changed = asyncio.Event()
        self._server = await asyncio.start_server(self._handle, self.listen_host,
                                                  self._listen_port, reuse_address=True)
        self._listen_port = int(self._server.sockets[0].getsockname()[1])

    def _apply(self, mode: Mode, delay_s: float) -> None:
        self._mode = mode
        self._delay_s = delay_s if mode == "delay" else 0.0
        if self._changed is not None:  # wake every held chunk: it re-reads the mode
            self._changed.set()
            self._changed = asyncio.Event()
        if mode == "drop":
            for pair in list(self._pairs):
                self._reset_count += 1
                pair.reset()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for pair in list(self._pairs):
            pair.reset()
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._accepted += 1
        pair = _Pair(writer)
        try:
            if self._mode == "drop" or self.target_port is None:
                self._reset_count += 1
                pair.reset()
                return
            try:
                up_reader, up_writer = await asyncio.wait_for(
                    asyncio.open_connection(self.target_host, self.target_port),
                    CONNECT_TIMEOUT_S)
            except (OSError, TimeoutError):
                self._upstream_failures += 1
                self._reset_count += 1
                pair.reset()
                return
            pair.upstream = up_writer
            self._pairs.add(pair)
            try:
                await asyncio.gather(self._pump(reader, up_writer, pair, to_target=True),
                                     self._pump(up_reader, writer, pair, to_target=False))
            finally:
                self._pairs.discard(pair)
                for w in (writer, up_writer):
                    w.close()
        except asyncio.CancelledError:
            pair.reset()
        finally:
            if task is not None:
                self._tasks.discard(task)

    async def _hold(self) -> None:
        """Wait while the mode is delay: `delay_s` at most, less when the mode changes."""
        while self._mode == "delay" and self._changed is not None:
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), self._delay_s)
            except TimeoutError:
                return

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter,
                    pair: _Pair, *, to_target: bool) -> None:
        try:
            while True:
                data = await source.read(CHUNK)
                if not data:
                    if sink.can_write_eof() and not sink.transport.is_closing():
                        sink.write_eof()
                    return
                if self._mode == "delay":
                    await self._hold()
                if self._mode == "drop":
                    pair.reset()
                    return
                if sink.transport.is_closing():
                    return
                sink.write(data)
                await sink.drain()
                if to_target:
                    self._to_target += len(data)
                else:
                    self._from_target += len(data)
        except (ConnectionError, OSError):
            pair.reset()
