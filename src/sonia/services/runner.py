"""Running one service process: load the home, configure logs, serve with uvicorn.

`python -m sonia.services NAME --home HOME` ends here. A bad home or bad
configuration exits 2 with a message that says what to fix. On SIGTERM the
service first reports not-ready (so a balancer or the supervisor stops sending
work), then drains its connections and runs its shutdown hooks, which
checkpoint and close its databases.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import uvicorn
from fastapi import FastAPI

from sonia import SERVICES
from sonia.errors import ConfigError
from sonia.home import PRIVATE_UMASK, Home
from sonia.kit.app import ServiceContext
from sonia.kit.logs import configure_logging
from sonia.redact import Redactor

EXIT_CONFIG = 2
KEEP_ALIVE_S = 75
TICK_S = 0.1


class DrainingServer(uvicorn.Server):
    """uvicorn that flips readiness to 503 the moment it is told to stop, and starts
    stopping at once.

    uvicorn's main loop looks at its exit flag every 0.1 s; a full stop goes through
    three waves of services (supervisor STOP_WAVES), so that poll cost up to 0.3 s of
    every stop. Here the signal also wakes the loop; the loop still ticks every 0.1 s
    for uvicorn's periodic work (its Date header, request limits)."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self._app = app
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None

    async def main_loop(self) -> None:
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 1) % 864000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), TICK_S)
            should_exit = await self.on_tick(counter)

    def handle_exit(self, sig: int, frame: Any) -> None:
        self._app.state.readiness.draining = True
        super().handle_exit(sig, frame)
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)


def _eva(ctx: ServiceContext) -> FastAPI:
    from sonia.services.eva.app import create
    return create(ctx)


def _memory(ctx: ServiceContext) -> FastAPI:
    from sonia.services.memory.app import create
    return create(ctx)


def _router(ctx: ServiceContext) -> FastAPI:
    from sonia.services.router.app import create
    return create(ctx)


def _openclaw(ctx: ServiceContext) -> FastAPI:
    from sonia.services.openclaw.app import create
    return create(ctx)


def _voice(ctx: ServiceContext) -> FastAPI:
    from sonia.services.voice.app import create
    return create(ctx)


def _gateway(ctx: ServiceContext) -> FastAPI:
    from sonia.services.gateway.app import create
    return create(ctx)


APPS: dict[str, Callable[[ServiceContext], FastAPI]] = {
    "eva": _eva, "memory": _memory, "router": _router,
    "openclaw": _openclaw, "voice": _voice, "gateway": _gateway,
}
"""Each service's app factory. A process imports only its own service's code (the
imports are inside the functions), so no service pays for the others' imports."""


def build_app(name: str, home: Home) -> tuple[FastAPI, ServiceContext]:
    settings = home.check()
    tokens = home.all_tokens()
    ctx = ServiceContext(name=name, home=home, settings=settings, tokens=tokens)
    return APPS[name](ctx), ctx


def serve(name: str, home_root: str) -> int:
    if name not in SERVICES:
        print(f"unknown service {name!r}; services are {', '.join(SERVICES)}", file=sys.stderr)
        return EXIT_CONFIG
    os.umask(PRIVATE_UMASK)  # databases (+ -wal, -shm) and logs are created 0600
    home = Home.at(home_root)
    try:
        app, ctx = build_app(name, home)
    except ConfigError as exc:
        print(f"sonia-{name}: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    redactor = Redactor(ctx.tokens.values())
    log = configure_logging(name, home.log_file(name), level=ctx.settings.log_level,
                            redact=redactor.redact)
    config = uvicorn.Config(
        app,
        host=ctx.settings.bind,
        port=ctx.settings.port_of(name),
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=max(1, int(ctx.settings.supervisor.stop_grace_seconds) - 2),
        # Longer than any client keeps an idle connection (httpx: 5 s), so the client
        # always closes first: a request can never race the server closing its connection.
        timeout_keep_alive=KEEP_ALIVE_S,
        ws="websockets-sansio",
    )
    server = DrainingServer(config, app)
    log.info("starting on %s:%d", ctx.settings.bind, ctx.settings.port_of(name))
    server.run()
    log.info("stopped")
    logging.shutdown()
    return 0 if server.started else 1
