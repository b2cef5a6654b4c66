"""`sonia gate NAME|all`: run release gates against a fresh stack and print the verdicts.

Running gates never makes a release (no bundle, no tag), whatever the profile:
`sonia release` is the separate step that re-judges the evidence and signs it.
"""

from __future__ import annotations

import dataclasses
import signal
from types import FrameType
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from sonia.cli.options import HomeOption, resolve_home
from sonia.errors import ConfigError
from sonia.gates import catalog, registry, waivers
from sonia.gates.waivers import waivers_of

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


DETAIL_CHARS = 600
"""How much of a failed check's detail is printed (the evidence holds all of it)."""


def failure_details(runs: list[registry.GateRun]) -> list[str]:
    """`gate: check: detail` for every failed check that says why: a red CI log then shows
    what failed (which scenario, which file), not only which check."""
    lines = []
    for run in runs:
        for check in run.verdict.failures:
            if check.detail:
                text = " ".join(str(check.detail).split())
                cut = "..." if len(text) > DETAIL_CHARS else ""
                lines.append(f"{run.gate}: {check.name}: {text[:DETAIL_CHARS]}{cut}")
    return lines


def stop_on_sigterm() -> None:
    """Make SIGTERM unwind the gate like Ctrl-C, so it stops what it started.

    Python's default for SIGTERM ends the process on the spot: a gate stopped by a
    CI timeout or `kill` left its stack (the supervisor, in a session of its own,
    and six services) running, to disturb whatever ran next.
    """
    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


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
        storage: Annotated[str | None, typer.Option(
            help="chaos, durability: sqlite or postgresql (a PostgreSQL server the gate "
                 "starts for the run)")] = None,
        waive: Annotated[list[str] | None, typer.Option(
            help='GATE.PARAMETER="VALUE: REASON": allow a duration or count below the '
                 "release profile (repeatable)")] = None,
    ) -> None:
        """Run one gate (or all) in a fresh home and print the verdicts; exit 1 unless GO.

        This never releases: `sonia release` is the separate, deliberate step. With
        `--profile release`, an override below the release profile exits 2 unless a
        --waive covers it."""
        stop_on_sigterm()
        h = resolve_home(home)
        if not h.exists:
            h.init()
        overrides = {"cycles": cycles, "health_minutes": health_minutes,
                     "health_interval": health_interval,
                     "duration_s": parse_duration(duration) if duration else None,
                     "storage": storage}
        waivers = waivers_of(waive or [])
        names = catalog.available() if name == "all" else [name]
        for gate_name in names:  # refuse bad parameters before anything runs
            chosen = registry.profile_for(gate_name, profile, overrides)
            registry.check_release_parameters(gate_name, profile, dataclasses.asdict(chosen),
                                              waivers)
        runs = []
        for gate_name in names:
            console.rule(f"gate {gate_name} ({profile})")
            runs.append(registry.run_gate(gate_name, profile, h.artifacts, overrides,
                                          waivers=waivers))
            console.print(verdict_table(runs[-1:]))
            for line in failure_details(runs[-1:]):
                console.print(line, markup=False, highlight=False, soft_wrap=True)
        if name == "all":
            console.print(verdict_table(runs))
            console.print("no release made: `sonia release` bundles the newest release-profile "
                          "runs when you decide to")
        if not all(r.verdict.passed for r in runs):
            raise typer.Exit(1)


def parse_duration(text: str) -> float:
    try:
        return waivers.parse_duration(text)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None
