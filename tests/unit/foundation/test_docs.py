"""The reference docs are generated from the code and must match it."""

from __future__ import annotations

import re
from pathlib import Path

from sonia.cli import reference

ROOT = Path(__file__).resolve().parents[3]


def test_cli_reference_is_up_to_date() -> None:
    assert reference.CLI_DOC.read_text() == reference.cli_markdown(), (
        "run `python -m sonia.cli.reference` and commit docs/cli.md"
    )


def test_configuration_reference_is_up_to_date() -> None:
    assert reference.CONFIG_DOC.read_text() == reference.config_markdown(), (
        "run `python -m sonia.cli.reference` and commit docs/configuration.md"
    )


def test_every_setting_has_a_description() -> None:
    rows = [line for line in reference.config_markdown().splitlines()
            if line.startswith("| `")]
    undocumented = [row.split("|")[1].strip() for row in rows if row.rstrip().endswith("|  |")]
    assert not undocumented, f"settings without a description: {undocumented}"


def test_readme_names_every_top_level_command() -> None:
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"^## `sonia (\S+)`$", reference.cli_markdown(), re.M)
    missing = sorted({c for c in commands if f"sonia {c}" not in readme})
    assert not missing, f"README does not mention: {missing}"
