"""`sonia approve|deny ACTION_ID` and `sonia audit verify`.

Approving and denying go through the gateway like any client, with an approver
key (`--key` or `SONIA_API_KEY`): the CLI holds no special power. `audit
verify` reads EVA's database directly (read-only: its SQLite file, or its
schema on PostgreSQL when `[storage] url` names a server) and walks the hash
chain; it exits 1 when a record was edited, deleted or moved, saying which and why.
"""

from __future__ import annotations

import json
import os
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console

from sonia.actions import audit
from sonia.cli.options import HomeOption, gateway_of, resolve_home
from sonia.errors import ConfigError
from sonia.kit.portable import read_postgres

console = Console()
err_console = Console(stderr=True)

KeyOption = Annotated[str | None, typer.Option("--key", help="an approver API key "
                                               "(default: $SONIA_API_KEY)", show_default=False)]
UrlOption = Annotated[str | None, typer.Option("--url", help="the gateway (default: from the "
                                               "home's configuration)", show_default=False)]


def _decide(verb: str, action_id: str, home: HomeOption, key: str | None,
            url: str | None) -> dict[str, Any]:
    api_key = key or os.environ.get("SONIA_API_KEY")
    if not api_key:
        raise ConfigError("give an approver key with --key or SONIA_API_KEY", key="key")
    base, verify = gateway_of(home, url)
    try:
        response = httpx.post(f"{base.rstrip('/')}/v1/actions/{action_id}/{verb}",
                              headers={"Authorization": f"Bearer {api_key}"}, timeout=60,
                              trust_env=False, verify=verify)
    except httpx.HTTPError as exc:
        err_console.print(f"[red]cannot reach the gateway at {base}:[/red] {exc}")
        raise typer.Exit(1) from exc
    try:
        body: dict[str, Any] = response.json()
    except ValueError:
        body = {"detail": response.text[:500]}
    if response.status_code >= 400:
        err_console.print(f"[red]{verb} refused ({response.status_code} "
                          f"{body.get('code', '')}):[/red] {body.get('detail', '')}")
        raise typer.Exit(1)
    return body


def register(app: typer.Typer) -> None:
    audit_app = typer.Typer(help="the EVA audit chain", no_args_is_help=True)
    app.add_typer(audit_app, name="audit")

    @app.command()
    def approve(action_id: Annotated[str, typer.Argument(help="the action's id (act_...)")],
                home: HomeOption = None, key: KeyOption = None, url: UrlOption = None) -> None:
        """Approve a pending action: it runs once, and its result is printed."""
        print(json.dumps(_decide("approve", action_id, home, key, url), indent=1))

    @app.command()
    def deny(action_id: Annotated[str, typer.Argument(help="the action's id (act_...)")],
             home: HomeOption = None, key: KeyOption = None, url: UrlOption = None) -> None:
        """Deny a pending action: it never runs."""
        print(json.dumps(_decide("deny", action_id, home, key, url), indent=1))

    @audit_app.command("verify")
    def verify(
        home: HomeOption = None,
        expected_head: Annotated[str | None, typer.Option(
            help="the head hash recorded earlier (e.g. in a backup manifest)")] = None,
    ) -> None:
        """Walk EVA's audit chain; exit 1 if a record was edited, deleted or reordered."""
        h = resolve_home(home)
        settings = h.settings() if h.config_file.exists() else None
        if settings is not None and settings.storage.backend == "postgresql":
            result = read_postgres(h, settings, schema="eva", fn=lambda c: audit.verify(
                c, expected_head=expected_head))
        else:
            result = audit.verify(h.db_path("eva"), expected_head=expected_head)
        if result.ok:
            print(f"audit chain intact: {result.count} records, head {result.head_hash}")
            return
        where = f" at record {result.first_bad_seq}" if result.first_bad_seq else ""
        err_console.print(f"[red]audit chain broken{where}:[/red] {result.reason} "
                          f"({result.count} records verified before it)")
        raise typer.Exit(1)
