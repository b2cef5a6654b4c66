"""Running one service process: load the home, configure logs, serve with uvicorn.

`python -m sonia.services NAME --home HOME` (what the supervisor of `sonia up`
starts, logging to `logs/NAME.log`) and `sonia run NAME` (the foreground form a
service manager starts, logging to stdout) both end here. A bad home or bad
configuration exits 2 with a message that says what to fix. On SIGTERM the
service first reports not-ready (so a balancer or the supervisor stops sending
work), then drains its connections and runs its shutdown hooks, which
checkpoint and close its databases.

Given a service manager's notify socket (kit/sdnotify.py), the service says
READY=1 once its own /readyz would answer 200 (it is listening and every check,
its dependencies included, passes), with STATUS= naming what it waits for until
then, and STOPPING=1 the moment it is told to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
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
from sonia.kit.sdnotify import Notifier
from sonia.kit.tls import server_options
from sonia.redact import Redactor

EXIT_CONFIG = 2
KEEP_ALIVE_S = 75
READY_POLL_S = 0.25
"""How often a service waiting to tell its manager READY=1 asks its own readiness."""
TICK_S = 0.1

log = logging.getLogger("sonia.runner")


class DrainingServer(uvicorn.Server):
    """uvicorn that flips readiness to 503 the moment it is told to stop, starts
    stopping at once, and tells a service manager (if any) when it is ready and when
    it is stopping.

    uvicorn's main loop looks at its exit flag every 0.1 s; a full stop goes through
    three waves of services (supervisor STOP_WAVES), so that poll cost up to 0.3 s of
    every stop. Here the signal also wakes the loop; the loop still ticks every 0.1 s
    for uvicorn's periodic work (its Date header, request limits)."""

    def __init__(self, config: uvicorn.Config, app: FastAPI,
                 notifier: Notifier | None = None) -> None:
        super().__init__(config)
        self._app = app
        self._notifier = notifier or Notifier(None)
        self._announcer: asyncio.Task[None] | None = None
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
        self._notifier.stopping()
        super().handle_exit(sig, frame)
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        if self.started and self._notifier.enabled:
            self._announcer = asyncio.create_task(self._announce_ready())

    async def shutdown(self, sockets: Any = None) -> None:
        if self._announcer is not None:
            self._announcer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._announcer
        await super().shutdown(sockets)

    async def _announce_ready(self) -> None:
        """READY=1 once the checks of /readyz pass; until then STATUS= says which fail."""
        readiness = self._app.state.readiness
        waiting_for: str | None = None
        while not self.should_exit:
            ok, body = await readiness.report()
            if ok:
                self._notifier.ready(f"ready on {self.config.host}:{self.config.port}")
                log.info("ready; told the service manager")
                return
            failing = ", ".join(sorted(name for name, check in body["checks"].items()
                                       if check.get("status") != "pass")) or "draining"
            if failing != waiting_for:
                waiting_for = failing
                self._notifier.status(f"waiting for {failing}")
            await asyncio.sleep(READY_POLL_S)


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


def _stopped(signum: int, frame: Any) -> None:
    """The signal handler uvicorn hands a stop signal back to after draining: nothing
    is left to do, the process returns from `serve` and exits 0."""


def build_app(name: str, home: Home) -> tuple[FastAPI, ServiceContext]:
    settings = home.check()
    tokens = home.all_tokens()
    ctx = ServiceContext(name=name, home=home, settings=settings, tokens=tokens)
    return APPS[name](ctx), ctx


def serve(name: str, home_root: str, *, foreground: bool = False,
          notifier: Notifier | None = None) -> int:
    """Run service `name` of the home until SIGTERM; its exit code. `foreground` logs to
    stdout instead of `logs/NAME.log`; `notifier` talks to a service manager."""
    if name not in SERVICES:
        print(f"unknown service {name!r}; services are {', '.join(SERVICES)}", file=sys.stderr)
        return EXIT_CONFIG
    os.umask(PRIVATE_UMASK)  # databases (+ -wal, -shm) and logs are created 0600
    home = Home.at(home_root)
    try:
        if foreground:
            home.make_private()  # the supervisor does this for `sonia up`
        app, ctx = build_app(name, home)
    except ConfigError as exc:
        print(f"sonia-{name}: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    redactor = Redactor(ctx.tokens.values())
    log = configure_logging(name, None if foreground else home.log_file(name),
                            level=ctx.settings.log_level, redact=redactor.redact,
                            rotation=ctx.settings.logs)
    host, port = ctx.settings.bind_of(name), ctx.settings.port_of(name)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=max(1, int(ctx.settings.supervisor.stop_grace_seconds) - 2),
        # Longer than any client keeps an idle connection (httpx: 5 s), so the client
        # always closes first: a request can never race the server closing its connection.
        timeout_keep_alive=KEEP_ALIVE_S,
        ws="websockets-sansio",
        # No permessage-deflate: on a local stack it buys nothing, costs CPU, and its
        # zlib state per connection outlived the connection (the voice service's
        # memory rose 2 MiB/h in a release soak's session churn). It also keeps
        # secret-bearing frames out of compression side channels.
        ws_per_message_deflate=False,
        **server_options(home, ctx.settings),
    )
    server = DrainingServer(config, app, notifier)
    log.info("starting on %s:%d (%s)", host, port, ctx.settings.scheme)
    if foreground:
        # uvicorn raises the stop signal again once it has drained, under the handler
        # it found; in the foreground that is this one, so a drained stop exits 0.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, _stopped)
    server.run()
    log.info("stopped")
    logging.shutdown()
    return 0 if server.started else 1
