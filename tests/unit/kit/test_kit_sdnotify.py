"""The sd_notify datagrams, read from a real socket the test binds (as systemd would)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from sonia.kit.sdnotify import NOTIFY_SOCKET_ENV, Notifier


@pytest.fixture()
def manager(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A socket bound where a service manager would listen: (socket, NOTIFY_SOCKET value)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        path = tmp_path / "notify"
        sock.bind(str(path))
        sock.settimeout(10)
        yield sock, str(path)


def received(sock: socket.socket) -> dict[str, str]:
    lines = sock.recv(4096).decode().split("\n")
    return dict(line.split("=", 1) for line in lines)


def test_ready_status_and_stopping_reach_the_manager(manager: tuple[socket.socket, str]) -> None:
    sock, address = manager
    notifier = Notifier(address)
    assert notifier.enabled
    assert notifier.status("waiting for eva")
    assert received(sock) == {"STATUS": "waiting for eva"}
    assert notifier.ready("ready on 127.0.0.1:7000")
    assert received(sock) == {"READY": "1", "STATUS": "ready on 127.0.0.1:7000"}
    assert notifier.stopping()
    assert received(sock)["STOPPING"] == "1"


def test_an_address_starting_with_at_is_in_the_abstract_namespace() -> None:
    name = f"sonia-test-notify-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(10)
        assert Notifier(f"@{name}").ready()
        assert received(sock) == {"READY": "1"}


def test_the_variable_is_taken_out_of_the_environment(
        manager: tuple[socket.socket, str]) -> None:
    """So a command the service starts cannot speak for the service."""
    _, address = manager
    environ = {NOTIFY_SOCKET_ENV: address, "PATH": "/usr/bin"}
    notifier = Notifier.from_environment(environ)
    assert notifier.address == address
    assert environ == {"PATH": "/usr/bin"}


def test_without_a_manager_every_call_does_nothing() -> None:
    notifier = Notifier.from_environment({})
    assert not notifier.enabled
    assert not notifier.ready() and not notifier.stopping()


def test_a_manager_that_went_away_does_not_take_the_service_down(tmp_path: Path) -> None:
    assert not Notifier(str(tmp_path / "gone")).ready()
    assert not Notifier("vsock:2:1234").ready(), "forms other than a path are not spoken"
