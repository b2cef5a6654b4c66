"""Commands that run the stack: init, up, down, status, logs, keys (create, list, revoke)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sonia import SERVICES
from sonia.cli.options import HomeOption, resolve_home
from sonia.errors import ConfigError
from sonia.home import Home
from sonia.kit import logfiles
from sonia.kit.logfiles import Follower
from sonia.replica import make_replica
from sonia.supervisor import control

console = Console()


def _when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _mib(n: int | None) -> str:
    return f"{n / 1048576:.1f} MiB" if n else "-"


def register(app: typer.Typer) -> None:
    keys = typer.Typer(help="user API keys", no_args_is_help=True)
    app.add_typer(keys, name="keys")

    @app.command()
    def init(home: HomeOption = None,
             base_port: Annotated[int | None, typer.Option(
                 help="gateway port; others follow (default 7000, or the source's "
                      "with --replica-of)")] = None,
             replica_of: Annotated[Path | None, typer.Option(
                 "--replica-of", help="make this home a replica of that one: the same "
                 "PostgreSQL storage, tokens, grant key, user keys and policies, its own "
                 "ports, logs, pid files and workspace; run again to copy keys made since")
             ] = None) -> None:
        """Create the home: configuration, secrets, folders, default policies."""
        h = resolve_home(home)
        if replica_of is not None:
            make_replica(Home.at(replica_of), h, base_port=base_port)
            console.print(f"replica of {Home.at(replica_of).root} ready at {h.root}")
            return
        h.init(base_port=base_port or 7000)
        h.check()
        console.print(f"home ready at {h.root}")

    @app.command()
    def up(home: HomeOption = None) -> None:
        """Start the stack in the background and wait until every service is ready."""
        h = resolve_home(home)
        ready = control.up(h)
        table = Table("service", "port", "ready after")
        settings = h.settings()
        for name in SERVICES:
            after = ready.get(name)
            table.add_row(name, str(settings.port_of(name)),
                          f"{after:.2f}s" if after is not None else "-")
        console.print(table)

    @app.command()
    def down(home: HomeOption = None) -> None:
        """Stop the stack; returns when every process is gone and every port is free."""
        h = resolve_home(home)
        report = control.down(h)
        if not report.was_running:
            console.print("the stack was not running")
        else:
            console.print(f"stopped in {report.seconds:.2f}s")
        if report.escalations:
            console.print(f"[yellow]SIGKILL escalations:[/yellow] {', '.join(report.escalations)}")
        if report.leftovers_killed:
            console.print(f"[yellow]leftover processes killed:[/yellow] {report.leftovers_killed}")
        if report.ports_bound:
            console.print(f"[red]ports still bound:[/red] {report.ports_bound}")
            raise typer.Exit(1)

    @app.command()
    def status(home: HomeOption = None,
               as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False
               ) -> None:
        """Per service: pid, port, ready, uptime, memory (USS), restarts; the sandbox in force."""
        h = resolve_home(home)
        rows = control.status(h)
        if as_json:
            print(json.dumps([r.__dict__ for r in rows], indent=1))
            if not all(r.ready for r in rows):
                raise typer.Exit(1)
            return
        table = Table("service", "pid", "port", "ready", "uptime", "memory (USS)", "restarts")
        for r in rows:
            table.add_row(r.name, str(r.pid or "-"), str(r.port),
                          "[green]yes[/green]" if r.ready else "[red]no[/red]",
                          f"{r.uptime_s:.0f}s" if r.uptime_s else "-", _mib(r.uss_bytes),
                          str(r.restarts))
        console.print(table)
        for r in rows:
            if r.not_ready_because:
                console.print(f"[red]{r.name} not ready[/red]: {escape(r.not_ready_because)}",
                              highlight=False)
            if r.sandbox:
                console.print(f"{r.name} sandbox: {r.sandbox.get('level')} (network "
                              f"{r.sandbox.get('network')}, commands as uid "
                              f"{r.sandbox.get('runs_as_uid')}): {r.sandbox.get('reason')}",
                              markup=False)
        if not all(r.ready for r in rows):
            raise typer.Exit(1)

    @app.command()
    def logs(service: Annotated[str | None, typer.Argument(help="one service")] = None,
             home: HomeOption = None,
             follow: Annotated[bool, typer.Option("-f", "--follow")] = False,
             lines: Annotated[int, typer.Option("-n", "--lines")] = 50) -> None:
        """Show the JSON log lines of one service or of all of them (across roll-overs)."""
        h = resolve_home(home)
        if service is not None and service not in SERVICES:
            raise ConfigError(f"unknown service {service!r}; services are {', '.join(SERVICES)}",
                              key="service")
        names = [service] if service else list(SERVICES)
        files = {n: h.log_file(n) for n in names}
        followers = {n: Follower(p) for n, p in files.items()} if follow else {}
        for name, path in files.items():
            for line in logfiles.tail(path, lines):
                print(line if service else f"{name}: {line}")
        if not follow:
            return
        try:
            while True:
                for name, follower in followers.items():
                    for line in follower.poll():
                        print(line if service else f"{name}: {line}", flush=True)
                time.sleep(0.25)
        except KeyboardInterrupt:
            return

    @keys.command("create")
    def keys_create(role: Annotated[str, typer.Option(help="user or approver")] = "user",
                    key_id: Annotated[str | None, typer.Option(
                        "--id", help="re-issue a lost key under its old id (12 hex digits), "
                                     "so its owner keeps their memories and sessions")] = None,
                    home: HomeOption = None) -> None:
        """Create a user API key; prints only the key, so scripts can capture it."""
        h = resolve_home(home)
        if not h.exists:
            h.init()
        print(h.create_api_key(role, key_id))

    @keys.command("list")
    def keys_list(home: HomeOption = None,
                  as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False
                  ) -> None:
        """List the home's API keys: id, role, created, revoked (never a key or its hash)."""
        found = resolve_home(home).api_keys()
        if as_json:
            print(json.dumps([k.to_dict() for k in found], indent=1))
            return
        table = Table("id", "role", "created", "state")
        for k in found:
            table.add_row(k.id, k.role, _when(k.created_at),
                          f"revoked {_when(k.revoked_at)}" if k.revoked_at else "active")
        console.print(table)

    @keys.command("revoke")
    def keys_revoke(key_id: Annotated[str, typer.Argument(help="the key's id (12 hex digits)")],
                    home: HomeOption = None) -> None:
        """Revoke a key at once: the gateway refuses it from its next request, and the
        console sessions made with it end. Its id can be re-issued (`keys create --id`)."""
        revoked = resolve_home(home).revoke_api_key(key_id)
        if revoked is None:
            raise ConfigError(f"no key {key_id!r} in this home (see `sonia keys list`)",
                              key="id")
        console.print(f"key {revoked.id} ({revoked.role}) revoked at {_when(revoked.revoked_at)}")
