"""Which gates exist, in the order `gate all` runs them, and what a gate module provides.

A gate module (or a family's `gate` module) satisfies `Gate`: its profiles, the
evidence files it leaves in its run directory (declared there, once), `run` and
the pure `judge`. Modules are imported on first use: the gates' tools (scipy,
schemathesis...) cost seconds, and most commands never need them.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, cast

from sonia.errors import ConfigError
from sonia.gates.common.evidence import Verdict
from sonia.gates.common.progress import GateProgress

__all__ = ["GATES", "GATE_TOOLS", "Gate", "available", "load", "tools_named"]

GATE_TOOLS: frozenset[str] = frozenset({
    "hdrh", "scipy", "numpy", "matplotlib", "schemathesis", "hypothesis", "requests"})
"""Top-level modules of the `gates` extra (`pip install 'sonia-stack[gates]'`)."""

GATES: dict[str, str] = {
    "go-no-go": "sonia.gates.gonogo",
    "security": "sonia.gates.security.gate",
    "soak": "sonia.gates.soak.gate",
    "durability": "sonia.gates.durability",
    "determinism": "sonia.gates.determinism",
    "chaos": "sonia.gates.chaos.gate",
}
"""Every gate, in the order `gate all` runs them: name -> the module that is the gate."""


class Gate(Protocol):
    """What the registry and the release step need of a gate module (read-only members,
    so a module's own dict of profiles satisfies it; tests/unit/gates/test_gate_catalog.py
    assigns each gate module to it, so mypy checks every one)."""

    @property
    def PROFILES(self) -> Mapping[str, Any]: ...  # noqa: N802 (a module constant)

    @property
    def EVIDENCE_FILES(self) -> tuple[str, ...]: ...  # noqa: N802 (a module constant)

    def run(self, run_dir: Path, profile: Any, progress: GateProgress) -> Verdict: ...

    def judge(self, run_dir: Path) -> Verdict: ...


@contextmanager
def tools_named() -> Iterator[None]:
    """Turn a missing gate tool into a ConfigError (exit 2) that says what to install."""
    try:
        yield
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] not in GATE_TOOLS:
            raise
        raise ConfigError(f"the gates need the 'gates' extra ({exc.name} is not installed): "
                          "pip install 'sonia-stack[gates]'", key="gates") from exc


def load(gate: str) -> Gate:
    """The module of `gate` (ConfigError, exit 2, for a name that is no gate, or when
    the gates' tools are not installed)."""
    if gate not in GATES:
        raise ConfigError(f"unknown gate {gate!r}; gates are {', '.join(GATES)}", key="gate")
    with tools_named():
        return cast(Gate, importlib.import_module(GATES[gate]))


def available() -> list[str]:
    """The gates whose module exists in this build (found without importing them)."""
    return [name for name, module in GATES.items() if importlib.util.find_spec(module)]
