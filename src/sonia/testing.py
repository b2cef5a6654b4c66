"""Running Sonia for tests, gates and benchmarks: a whole stack, or one service in-process.

`FreshStack` is a stack in a fresh home on free ports: what every gate, the
integration tests and the benchmarks run against.

    with FreshStack(root) as stack:
        stack.up()
        httpx.get(stack.url("gateway") + "/v1/whoami", headers=stack.user_headers())

It creates the home, a user key and an approver key, and always stops the stack
on the way out, even when the body failed.

`in_process(name, home)` builds one service exactly as `python -m sonia.services
NAME` builds it (same factory, same middleware, same caller table) and drives it
through Starlette's `TestClient`, so its start and stop hooks run; nothing
listens on a port. It is for one service's own behaviour; flows that cross
services, the supervisor and the gates run on a `FreshStack`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from starlette.testclient import TestClient

from sonia.config import Settings
from sonia.home import Home
from sonia.replica import make_replica
from sonia.services.runner import build_app
from sonia.supervisor import control
from sonia.supervisor.ports import free_base_port

__all__ = ["FreshStack", "free_stack_port", "in_process", "worker_share"]


@contextmanager
def in_process(service: str, home: Home) -> Iterator[TestClient]:
    """A `TestClient` for `service` of `home`, started and stopped around the block."""
    app, _ = build_app(service, home)
    # raise_server_exceptions=False: a bug must reach the client as the 500
    # problem+json a real caller would see, not as an exception in the test.
    with TestClient(app, base_url="http://127.0.0.1",
                    raise_server_exceptions=False) as client:
        yield client

def worker_share() -> tuple[int, int]:
    """This process's share of the port range when test workers run side by side
    (pytest-xdist sets PYTEST_XDIST_WORKER=gwN and PYTEST_XDIST_WORKER_COUNT), else all."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if worker.startswith("gw") and worker[2:].isdigit() and count.isdigit():
        index, total = int(worker[2:]), int(count)
        if 0 <= index < total:
            return index, total
    return 0, 1


def free_stack_port() -> int:
    """A free base port in this process's share of the range (see `worker_share`)."""
    return free_base_port(share=worker_share())


class FreshStack:
    def __init__(self, root: Path | None = None, *, keep: bool = True,
                 config: Mapping[str, Mapping[str, Any]] | None = None,
                 replica_of: FreshStack | None = None) -> None:
        """A new home under `root` (a temporary folder when None) on free ports, with a
        user and an approver key; `config` sets keys of its sonia.toml, {table: {key:
        value}}, through `Home.configure`. With `replica_of`, the home is a replica of
        that stack's (`sonia init --replica-of`: its storage, secrets and keys) on ports
        of its own."""
        self._tmp = None if root is not None else tempfile.mkdtemp(prefix="sonia-stack-")
        self.root = Path(root) if root is not None else Path(self._tmp or "")
        self.keep = keep
        self.home = Home.at(self.root)
        self.base_port = free_stack_port()
        if replica_of is not None:
            make_replica(replica_of.home, self.home, base_port=self.base_port)
            self.settings: Settings = self.home.configure(config or {})
            self.user_key: str = replica_of.user_key
            self.approver_key: str = replica_of.approver_key
        else:
            self.home.init(base_port=self.base_port)
            self.settings = self.home.configure(config or {})
            self.user_key = self.home.create_api_key("user")
            self.approver_key = self.home.create_api_key("approver")
        self.running = False

    def url(self, service: str = "gateway") -> str:
        return self.settings.url_of(service)

    def token(self, service: str) -> str:
        return self.home.read_token(service)

    def user_headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.user_key}", **extra}

    def approver_headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.approver_key}", **extra}

    def service_headers(self, caller: str, **extra: str) -> dict[str, str]:
        return {"X-Service-Token": self.token(caller), **extra}

    def up(self) -> dict[str, float]:
        ready = control.up(self.home)
        self.running = True
        return ready

    def down(self) -> control.DownReport:
        report = control.down(self.home)
        self.running = False
        return report

    def __enter__(self) -> FreshStack:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> Any:
        if self.running or control.supervisor_pid(self.home) is not None:
            self.down()
        if self._tmp is not None and not self.keep:
            shutil.rmtree(self._tmp, ignore_errors=True)
        return None
