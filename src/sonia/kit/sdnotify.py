"""Telling a service manager how the service is doing: systemd's `sd_notify` protocol.

The protocol is one datagram of `KEY=VALUE` lines sent to the Unix socket named
by `NOTIFY_SOCKET` (a path, or an abstract name when it starts with `@`). A
unit of `Type=notify` waits for `READY=1` before units ordered after it start,
and shows `STATUS=` in `systemctl status`; `STOPPING=1` says a stop has begun.
It is a few lines of the standard library, so there is no dependency on
libsystemd; without `NOTIFY_SOCKET` (or on a socket we cannot use) every call
does nothing, so the same code runs under any manager or none.

`from_environment` takes the variable out of the environment, as
`sd_notify(unset_environment=1)` does, so the processes the service starts (a
tool's command) cannot speak for it.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import MutableMapping

__all__ = ["NOTIFY_SOCKET_ENV", "Notifier"]

NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"

log = logging.getLogger("sonia.sdnotify")


class Notifier:
    """Sends state changes to one notify socket; does nothing without one."""

    def __init__(self, address: str | None) -> None:
        self.address = address or None

    @classmethod
    def from_environment(cls, environ: MutableMapping[str, str] | None = None) -> Notifier:
        """The notifier for `NOTIFY_SOCKET`, removed from `environ` (default: os.environ)."""
        env = os.environ if environ is None else environ
        return cls(env.pop(NOTIFY_SOCKET_ENV, None))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def _target(self) -> str | bytes | None:
        address = self.address
        if address is None:
            return None
        if address.startswith("@"):  # abstract namespace: a leading NUL byte, no file
            return b"\0" + address[1:].encode()
        if address.startswith("/"):
            return address
        return None  # vsock:... and other forms are not spoken here

    def notify(self, **fields: str | int) -> bool:
        """Send `KEY=value` lines (`notify(READY=1, STATUS="...")`); True when sent."""
        target = self._target()
        if target is None:
            return False
        message = "\n".join(f"{key}={value}" for key, value in fields.items())
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(message.encode(), target)
        except OSError as exc:  # a manager that went away must not take the service down
            log.warning("could not notify the service manager: %s", type(exc).__name__)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        fields: dict[str, str | int] = {"READY": 1}
        if status:
            fields["STATUS"] = status
        return self.notify(**fields)

    def status(self, text: str) -> bool:
        return self.notify(STATUS=text)

    def stopping(self) -> bool:
        return self.notify(STOPPING=1, STATUS="stopping: draining requests")
