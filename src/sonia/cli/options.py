"""Options every command shares."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from sonia.home import Home

DEFAULT_HOME = "~/.sonia"

HomeOption = Annotated[
    Path | None,
    typer.Option("--home", help="the home directory (default: $SONIA_HOME or ~/.sonia)",
                 show_default=False),
]


def resolve_home(home: Path | None) -> Home:
    return Home.at(home or os.environ.get("SONIA_HOME") or DEFAULT_HOME)
