"""One `sonia run SERVICE` process, as a service manager starts it: a notify socket the
test binds (NOTIFY_SOCKET, in the abstract namespace as systemd's own is: no path
length limit, no file), stdout and stderr kept in files, SIGTERM to stop."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from sonia.home import Home


class ForegroundService:
    def __init__(self, service: str, home: Home, folder: Path) -> None:
        self.service = service
        self.home = home
        folder.mkdir(parents=True, exist_ok=True)
        self.stdout_path = folder / f"{service}.stdout"
        self.stderr_path = folder / f"{service}.stderr"
        self.address = f"@sonia-test-{service}-{os.getpid()}-{secrets.token_hex(4)}"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(b"\0" + self.address[1:].encode())
        self.messages: list[dict[str, str]] = []
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ForegroundService:
        env = dict(os.environ, NOTIFY_SOCKET=self.address)
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sonia", "run", self.service, "--home",
                 str(self.home.root)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
                start_new_session=True)
        return self

    def next_message(self, timeout: float) -> dict[str, str]:
        """The next datagram the service sent its manager, as {KEY: value}."""
        self.notify.settimeout(timeout)
        try:
            data = self.notify.recv(4096)
        except TimeoutError:
            raise AssertionError(f"{self.service} told its manager nothing within {timeout}s;"
                                 f" stderr: {self.stderr_path.read_text()[-2000:]}") from None
        message = dict(line.split("=", 1) for line in data.decode().split("\n") if line)
        self.messages.append(message)
        return message

    def wait_for(self, key: str, timeout: float) -> dict[str, str]:
        """Messages until one carries `key` (READY, STOPPING), which is returned."""
        deadline = time.monotonic() + timeout
        while True:
            message = self.next_message(max(0.01, deadline - time.monotonic()))
            if key in message:
                return message

    def stop(self, timeout: float = 30) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def log_lines(self) -> list[dict[str, Any]]:
        """Every stdout line, each of which must be a JSON object."""
        return [json.loads(line) for line in self.stdout_path.read_text().splitlines()]

    def __enter__(self) -> ForegroundService:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.notify.close()
