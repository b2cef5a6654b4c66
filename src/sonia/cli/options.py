"""Options every command shares."""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Annotated

import typer

from sonia.errors import ConfigError
from sonia.home import Home
from sonia.kit.tls import client_context

DEFAULT_HOME = "~/.sonia"

HomeOption = Annotated[
    Path | None,
    typer.Option("--home", help="the home directory (default: $SONIA_HOME or ~/.sonia)",
                 show_default=False),
]


def resolve_home(home: Path | None) -> Home:
    return Home.at(home or os.environ.get("SONIA_HOME") or DEFAULT_HOME)


def gateway_of(home: Path | None, url: str | None) -> tuple[str, ssl.SSLContext]:
    """The gateway to call (`url`, else the home's) and how to verify it over https: the
    home's `[tls] ca_file` when the home has one, else the system's store."""
    h = resolve_home(home)
    try:
        settings = h.settings()
    except ConfigError:
        if url is None:
            raise
        return url, ssl.create_default_context()  # a URL needs no home
    return url or settings.url_of("gateway"), client_context(h, settings)
