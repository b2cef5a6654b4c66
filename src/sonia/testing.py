"""One service in-process, for tests of that service's own behaviour.

    with in_process("memory", home) as client:
        client.get("/v1/memories", headers=...)

The app is built exactly as `python -m sonia.services NAME` builds it (same
factory, same middleware, same caller table) and driven through Starlette's
`TestClient`, so its start and stop hooks run; nothing listens on a port.
Flows that cross services, the supervisor and the gates still run on a real
stack (`sonia.gates.fresh_stack.FreshStack`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from starlette.testclient import TestClient

from sonia.home import Home
from sonia.services.runner import build_app

__all__ = ["in_process"]


@contextmanager
def in_process(service: str, home: Home) -> Iterator[TestClient]:
    """A `TestClient` for `service` of `home`, started and stopped around the block."""
    app, _ = build_app(service, home)
    # raise_server_exceptions=False: a bug must reach the client as the 500
    # problem+json a real caller would see, not as an exception in the test.
    with TestClient(app, base_url="http://127.0.0.1",
                    raise_server_exceptions=False) as client:
        yield client
