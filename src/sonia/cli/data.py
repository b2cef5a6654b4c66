"""`sonia backup`, `sonia backup list|prune` and `sonia restore`: the home's data, kept safe.

A backup is online and consistent (`sonia.backup`): it may be taken while the
stack runs. A restore needs the stack stopped and checks the backup completely
before it touches anything; a damaged backup is refused (exit 1) and the home is
left exactly as it was. docs/operations.md is the runbook that uses these.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from sonia.backup import (
    BackupInfo,
    create_backup,
    home_backup_key,
    install_backup_key,
    list_backups,
    prune_backups,
    read_backup_key,
    require_stack_stopped,
    restore_backup,
    verify_backup,
)
from sonia.cli.options import HomeOption, resolve_home
from sonia.errors import BackupError, ConfigError
from sonia.home import Home
from sonia.supervisor import control

console = Console()


def _require_home(home: Home) -> None:
    if not home.exists:
        raise ConfigError(f"no Sonia home at {home.root}: run `sonia init` (or pass --home)",
                          key="home")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def _state(info: BackupInfo) -> str:
    if info.ok is None:
        return "not checked"
    return "[green]verified[/green]" if info.ok else f"[red]BAD[/red] {info.problem}"


def stack_stopped(home: Home) -> None:
    """Refuse a restore while this home's supervisor or any of its services runs."""
    pid = control.supervisor_pid(home)
    if pid is not None:
        raise BackupError(f"the stack of {home.root} is running (supervisor pid {pid}): "
                          "run `sonia down` first; a restore replaces the databases")
    require_stack_stopped(home)


def resolve_backup(home: Home, name: str) -> Path:
    """A backup folder from a path, a name in the home's backups/, or `latest`.

    `latest` is the newest backup that verifies: a damaged newer one is skipped
    (and named), never chosen.
    """
    if name == "latest":
        for info in list_backups(home, verify=True):
            if info.ok:
                return info.path
            console.print(f"[yellow]skipping damaged backup[/yellow] {info.path.name}: "
                          f"{info.problem}")
        raise BackupError(f"no verified backup in {home.backups}")
    path = Path(name).expanduser()
    if path.is_dir():
        return path.resolve()
    candidate = home.backups / name
    if candidate.is_dir():
        return candidate
    raise BackupError(f"no backup at {path} nor {candidate}")


def register(app: typer.Typer) -> None:
    backup_app = typer.Typer(
                             invoke_without_command=True, no_args_is_help=False)
    app.add_typer(backup_app, name="backup")

    @backup_app.callback()
    def backup(
        ctx: typer.Context,
        home: HomeOption = None,
        dest: Annotated[Path | None, typer.Option(
            help="folder to write the backup in (default: the home's backups/); keep "
                 "copies off the home's disk")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    ) -> None:
        """Take an online, consistent backup now (safe while the stack runs)."""
        if ctx.invoked_subcommand is not None:
            return
        h = resolve_home(home)
        _require_home(h)
        path = create_backup(h, dest)
        report = verify_backup(path, home_backup_key(h))
        if as_json:
            print(json.dumps(report.to_dict() | {"backup": str(path)}, indent=1))
        else:
            databases = sorted((report.manifest or {}).get("databases", {}))
            console.print(f"backup {path}")
            console.print(f"  {report.files_checked} files, databases: {', '.join(databases)}; "
                          f"{'verified' if report.ok else 'NOT verified'}")
        if not report.ok:
            raise BackupError(f"the new backup does not verify: {report.problems[:3]}")

    @backup_app.command("list")
    def backup_list(
        home: HomeOption = None,
        verify: Annotated[bool, typer.Option(help="check every file of every backup")] = True,
        as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    ) -> None:
        """Backups in the home, newest first, with age, size and verification state."""
        h = resolve_home(home)
        _require_home(h)
        infos = list_backups(h, verify=verify)
        if as_json:
            print(json.dumps([i.to_dict() for i in infos], indent=1))
        else:
            table = Table("backup", "created", "age", "size", "state",
                          title=f"backups in {h.backups}")
            for info in infos:
                table.add_row(info.path.name,
                              info.created_at.isoformat() if info.created_at else "?",
                              _age(info.age_seconds), _size(info.size), _state(info))
            console.print(table)
        if verify and any(i.ok is False for i in infos):
            raise typer.Exit(1)

    @backup_app.command("prune")
    def backup_prune(
        keep: Annotated[int, typer.Option(help="how many of the newest backups to keep")],
        home: HomeOption = None,
    ) -> None:
        """Delete all but the newest KEEP backups (frees disk space)."""
        h = resolve_home(home)
        _require_home(h)
        removed = prune_backups(h, keep)
        console.print(f"removed {len(removed)} backup(s); kept the newest {keep}")

    @app.command()
    def restore(
        backup: Annotated[str, typer.Argument(
            help="a backup folder, a name in the home's backups/, or 'latest'")],
        home: HomeOption = None,
        backup_key: Annotated[Path | None, typer.Option(
            help="the secrets/backup.key of the home that made the backup (default: this "
                 "home's own; required for a new home)")] = None,
    ) -> None:
        """Replace the home's data, config and policies with a verified backup.

        The stack must be stopped. The backup is checked in full first; a truncated
        or altered one is refused and nothing changes. Secrets are never in a
        backup: a new home keeps its own (create API keys with `sonia keys create`).
        """
        h = resolve_home(home)
        fresh = not h.exists
        path = resolve_backup(h, backup)
        key = read_backup_key(backup_key) if backup_key is not None else None
        if fresh:  # check before creating anything, so a bad backup leaves no home behind
            if key is None:
                raise BackupError("a new home has no backup key: pass --backup-key with the "
                                  "secrets/backup.key of the home that made the backup")
            report = verify_backup(path, key)
            if not report.ok:
                raise BackupError(f"backup {path} is not usable, nothing was restored: "
                                  f"{'; '.join(report.problems[:3])}")
            h.init()
            install_backup_key(h, key)
        result = restore_backup(h, path, require_stopped=lambda: stack_stopped(h), key=key)
        h.check()
        console.print(f"restored {path.name} into {h.root}: {result.files} files, databases "
                      f"{', '.join(result.databases)} in {result.duration_s:.2f}s")
        if fresh:
            console.print("this home is new: its API keys are not in the backup; create them "
                          "with `sonia keys create --role user`")
        console.print("start the stack with `sonia up`")
