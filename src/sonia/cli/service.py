"""Running Sonia the way operators run services: `sonia run SERVICE`, `sonia systemd install`.

`sonia up` is one command for one machine: a supervisor of its own in the
background, file logs, restarts. A service manager (systemd, an orchestrator)
wants the opposite: one service per unit, in the foreground, logs on stdout,
readiness told to it. `sonia run` is that, built from the very same app
factory and logging as the supervisor's services (services/runner.py).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from sonia import SERVICES
from sonia import systemd as units
from sonia.cli.options import HomeOption, resolve_home
from sonia.errors import ConfigError
from sonia.kit.sdnotify import Notifier

console = Console()


def _this_sonia() -> str | None:
    """The `sonia` executable of this installation (beside its Python, or on PATH)."""
    beside = Path(sys.executable).parent / "sonia"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside.absolute())
    found = shutil.which("sonia")
    return str(Path(found).absolute()) if found else None


def register(app: typer.Typer) -> None:
    systemd_app = typer.Typer(help="systemd units for the stack's services",
                              no_args_is_help=True)
    app.add_typer(systemd_app, name="systemd")

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

    @systemd_app.command("install")
    def install(
        dest: Annotated[Path, typer.Option(help="where to write the units")] = Path(
            "/etc/systemd/system"),
        sonia: Annotated[str | None, typer.Option(
            help="the sonia executable the units run (default: this installation's)",
            show_default=False)] = None,
        user: Annotated[str, typer.Option(help="the account the services run as")] =
            units.SHIPPED_USER,
        group: Annotated[str, typer.Option(help="its group")] = units.SHIPPED_GROUP,
    ) -> None:
        """Write the unit templates (a service per unit, the stack's target, the backup
        timer) for this installation; prints how to enable a stack."""
        executable = sonia or _this_sonia()
        if executable is None:
            raise ConfigError("cannot find the sonia executable: pass --sonia PATH",
                              key="sonia")
        try:
            written = units.install(dest, sonia=executable, user=user, group=group)
        except ValueError as exc:
            raise ConfigError(str(exc), key="sonia") from exc
        for path in written:
            print(path)
        names = " ".join(f"sonia-{s}@NAME.service" for s in SERVICES)
        console.print(
            "\nnext, for a stack NAME with its home in /var/lib/sonia/NAME:\n"
            f"  sudo -u {user} sonia init --home /var/lib/sonia/NAME\n"
            f"  systemctl daemon-reload\n"
            f"  systemctl enable --now {names} sonia@NAME.target sonia-backup@NAME.timer",
            markup=False, highlight=False, soft_wrap=True)
