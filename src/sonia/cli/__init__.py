"""The `sonia` command: thin; it parses, then calls the packages that do the work.

Exit codes: 0 success, 1 a gate said NO-GO or a check failed, 2 bad usage or
bad configuration (the message says what to fix).
"""

from __future__ import annotations

import sys

import typer

from sonia.errors import ConfigError, SoniaError

app = typer.Typer(
    name="sonia",
    help="Sonia: a local-first AI assistant stack and the release gates that prove it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    from sonia.cli import actions, chat, data, gates, model, release, service, stack

    stack.register(app)
    service.register(app)
    chat.register(app)
    model.register(app)
    gates.register(app)
    actions.register(app)
    data.register(app)
    release.register(app)


_register()


def main() -> None:
    try:
        app()
    except ConfigError as exc:
        where = f" [{exc.key}]" if exc.key else ""
        print(f"configuration error{where}: {exc}", file=sys.stderr)
        sys.exit(2)
    except SoniaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
