"""The chaos gate's TCP proxy, with real sockets on loopback: pass, drop, delay, switching."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from sonia.gates.chaos.tcp_proxy import TcpProxy


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        try:
            while data := self.request.recv(65536):
                self.request.sendall(data)
        except ConnectionResetError:  # the proxy cut the client off: what some tests do
            pass


class _EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False


@pytest.fixture()
def echo_port() -> Iterator[int]:
    server = _EchoServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture()
def proxy(echo_port: int) -> Iterator[TcpProxy]:
    with TcpProxy(echo_port) as p:
        yield p


def connect(proxy: TcpProxy, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=timeout)


def round_trip(sock: socket.socket, data: bytes) -> bytes:
    sock.sendall(data)
    received = b""
    while len(received) < len(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    return received


def is_cut(sock: socket.socket) -> bool:
    """True when the peer reset or closed the connection (what a caller sees as 'gone')."""
    try:
        sock.sendall(b"ping")
        return sock.recv(16) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True


def test_pass_forwards_both_ways(proxy: TcpProxy) -> None:
    with connect(proxy) as sock:
        assert round_trip(sock, b"hello through the proxy") == b"hello through the proxy"
    assert proxy.mode == "pass"
    assert proxy.stats().bytes_to_target >= len(b"hello through the proxy")


def new_connection_is_cut(proxy: TcpProxy) -> bool:
    """A reset can reach the client while it connects or at its first exchange."""
    try:
        sock = connect(proxy)
    except ConnectionResetError:
        return True
    with sock:
        return is_cut(sock)


def test_drop_resets_new_connections(proxy: TcpProxy) -> None:
    proxy.drop()
    assert new_connection_is_cut(proxy)
    assert proxy.stats().reset >= 1


def test_switching_to_drop_resets_existing_connections(proxy: TcpProxy) -> None:
    with connect(proxy) as sock:
        assert round_trip(sock, b"before") == b"before"
        proxy.drop()
        assert is_cut(sock)


def test_back_to_pass_serves_again(proxy: TcpProxy) -> None:
    proxy.drop()
    proxy.pass_through()
    with connect(proxy) as sock:
        assert round_trip(sock, b"again") == b"again"


def test_delay_holds_every_chunk(proxy: TcpProxy) -> None:
    proxy.delay(0.4)
    with connect(proxy) as sock:
        start = time.monotonic()
        assert round_trip(sock, b"slow") == b"slow"
        elapsed = time.monotonic() - start
    assert elapsed >= 0.75  # held on the way in and on the way out


def test_leaving_delay_releases_held_chunks_at_once(proxy: TcpProxy) -> None:
    proxy.delay(30.0)
    with connect(proxy, timeout=10.0) as sock:
        sock.sendall(b"held")
        deadline = time.monotonic() + 5
        while proxy.stats().accepted < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        start = time.monotonic()
        proxy.pass_through()
        assert sock.recv(16) == b"held"
        assert time.monotonic() - start < 5.0


def test_unreachable_target_resets_the_client(echo_port: int) -> None:
    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    with TcpProxy(dead_port) as proxy:
        assert new_connection_is_cut(proxy)
        deadline = time.monotonic() + 5
        while proxy.stats().upstream_failures < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proxy.stats().upstream_failures == 1


def test_bad_modes_are_refused(proxy: TcpProxy) -> None:
    with pytest.raises(ValueError):
        proxy.set_mode("sever")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        proxy.set_mode("delay", 0.0)


def test_stop_closes_the_listener(echo_port: int) -> None:
    proxy = TcpProxy(echo_port)
    port = proxy.start()
    proxy.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
