"""Running Sonia the way operators run services: `sonia run SERVICE`.

`sonia up` is one command for one machine: a supervisor of its own in the
background, file logs, restarts. A service manager (systemd, an orchestrator)
wants the opposite: one service per unit, in the foreground, logs on stdout,
readiness told to it. `sonia run` is that, built from the very same app
factory and logging as the supervisor's services (services/runner.py).
"""

from __future__ import annotations

from typing import Annotated

import typer

from sonia import SERVICES
from sonia.cli.options import HomeOption, resolve_home
from sonia.errors import ConfigError
from sonia.kit.sdnotify import Notifier


def register(app: typer.Typer) -> None:
    @app.command()
    def run(service: Annotated[str, typer.Argument(help=f"one of {', '.join(SERVICES)}")],
            home: HomeOption = None) -> None:
        """Run one service in the foreground, for a service manager: JSON logs on stdout,
        READY=1 and STOPPING=1 to $NOTIFY_SOCKET when set, SIGTERM drains and stops it."""
        if service not in SERVICES:
            raise ConfigError(f"unknown service {service!r}; services are {', '.join(SERVICES)}",
                              key="service")
        from sonia.services.runner import serve  # the web stack only where it runs

        code = serve(service, str(resolve_home(home).root), foreground=True,
                     notifier=Notifier.from_environment())
        raise typer.Exit(code)
