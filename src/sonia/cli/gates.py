"""`sonia gate NAME|all`: run release gates against a fresh stack and print the verdict."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from sonia.cli.options import HomeOption, resolve_home
from sonia.errors import ConfigError, ReleaseError
from sonia.gates import registry
from sonia.home import Home

console = Console()


def verdict_table(runs: list[registry.GateRun]) -> Table:
    table = Table("gate", "profile", "verdict", "seconds", "failed checks", "evidence",
                  title="Gate verdicts")
    colours = {"GO": "green", "NO-GO": "red", "INVALID": "yellow"}
    for run in runs:
        status = run.verdict.status
        failed = ", ".join(f"{c.name} (want {c.threshold}, got {c.observed})"
                           for c in run.verdict.failures) or "-"
        table.add_row(run.gate, run.profile, f"[{colours[status]}]{status}[/]",
                      f"{run.seconds:.1f}", failed, str(run.run_dir))
    return table


def register(app: typer.Typer) -> None:
    @app.command()
    def gate(
        name: Annotated[str, typer.Argument(help="a gate name, or 'all'")],
        home: HomeOption = None,
        profile: Annotated[str, typer.Option(help="quick or release")] = "quick",
        cycles: Annotated[int | None, typer.Option(help="go-no-go: start/stop cycles")] = None,
        health_minutes: Annotated[float | None, typer.Option(help="go-no-go: minutes")] = None,
        health_interval: Annotated[float | None, typer.Option(help="go-no-go: seconds")] = None,
        duration: Annotated[str | None, typer.Option(help="soak: e.g. 90s, 10m, 48h")] = None,
        release_tag: Annotated[str, typer.Option("--tag", help="gate all: release tag")] = "",
    ) -> None:
        """Run one gate (or all, then the release step) in a fresh home; exit 1 on NO-GO."""
        h = resolve_home(home)
        if not h.exists:
            h.init()
        overrides = {"cycles": cycles, "health_minutes": health_minutes,
                     "health_interval": health_interval,
                     "duration_s": parse_duration(duration) if duration else None}
        names = registry.available() if name == "all" else [name]
        runs = []
        for gate_name in names:
            console.rule(f"gate {gate_name} ({profile})")
            runs.append(registry.run_gate(gate_name, profile, h.artifacts, overrides))
            console.print(verdict_table(runs[-1:]))
        if name == "all":
            console.print(verdict_table(runs))
        passed = all(r.verdict.passed for r in runs)
        if name == "all":
            release_step(h, runs, release_tag, passed)
        if not passed:
            raise typer.Exit(1)


def release_step(home: Home, runs: list[registry.GateRun], tag: str, passed: bool) -> None:
    """After `gate all`: release only when every gate passed.

    With an explicit --tag the release is what the user asked for, so any refusal
    (a dirty tree, an existing tag, ...) exits 1. Without one, the step tries a
    candidate tag `rc-<commit>` and a refusal is a note, not a failure: the gates'
    verdicts are the result of the run, and a developer's tree is often dirty.
    """
    from sonia.cli.release import default_tag, release_from_runs, source_repo

    if not passed:
        console.print("release step not run: not every gate passed")
        return
    try:
        chosen = tag or default_tag(source_repo())
        release_from_runs(home, runs, chosen)
    except (ReleaseError, ConfigError) as exc:
        if tag:
            console.print(f"[red]release step refused[/red]: {exc}")
            raise typer.Exit(1) from None
        console.print(f"[yellow]note: release step skipped[/yellow]: {exc}")
        console.print("every gate passed; commit your changes and run `sonia release --tag "
                      "TAG` (or `sonia gate all --tag TAG`) to make a signed bundle")


def parse_duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    text = text.strip().lower()
    try:
        if text[-1] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except (ValueError, IndexError):
        raise typer.BadParameter(f"{text!r} is not a duration like 90s, 10m or 48h") from None
