"""Evidence: the files a gate leaves behind, and the vocabulary of its verdict.

Every gate writes into its own run directory, `artifacts/<run id>/`, so runs never
overwrite each other and a bundle can point at exactly the run it used. JSON
evidence is written atomically (temp file, fsync, rename), so a reader never sees
half a file even when the gate is interrupted.

A verdict is one of three words, shared by every gate and the release step:

    GO        every criterion was measured and met
    NO-GO     a criterion was measured and missed
    INVALID   the run cannot support a verdict (too little data, the load
              generator fell behind, ...); treated like NO-GO by `sonia gate`,
              but it says "run it again", not "the product is broken"

Each verdict lists its checks as `{name, threshold, observed, passed, kind}`;
`kind` is "validity" for checks on the measurement itself (failing one makes the
verdict INVALID) and "criterion" for checks on the product (failing one makes it
NO-GO). Validity wins: a broken measurement cannot prove a failure either.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import secrets
import sqlite3
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from sonia import __version__, files
from sonia.errors import GateError
from sonia.gates.common import provenance

__all__ = [
    "CRITERION",
    "KEY_PACKAGES",
    "STATUSES",
    "VALIDITY",
    "Check",
    "Status",
    "Verdict",
    "capture_environment",
    "new_run_dir",
    "new_run_id",
    "read_evidence",
    "write_json",
]

Status = Literal["GO", "NO-GO", "INVALID"]
STATUSES: tuple[Status, ...] = ("GO", "NO-GO", "INVALID")
VALIDITY = "validity"
CRITERION = "criterion"

KEY_PACKAGES: tuple[str, ...] = (
    "sonia", "fastapi", "starlette", "uvicorn", "httpx", "pydantic", "cryptography",
    "hdrhistogram", "scipy", "numpy", "matplotlib", "rfc8785", "psutil", "websockets",
)
"""Packages whose versions every gate records: a result holds for these versions."""


def new_run_id(gate: str, *, now: dt.datetime | None = None) -> str:
    """`<UTC timestamp>-<gate>-<6 hex>`: sortable by time, unique, and says what ran."""
    moment = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    safe_gate = "".join(c if c.isalnum() or c == "-" else "-" for c in gate) or "gate"
    return f"{moment.strftime('%Y%m%dT%H%M%SZ')}-{safe_gate}-{secrets.token_hex(3)}"


def new_run_dir(artifacts_root: Path, gate: str) -> Path:
    """Create and return a fresh `artifacts_root/<run id>/` for one run of `gate`."""
    artifacts_root.mkdir(parents=True, exist_ok=True)
    while True:
        path = artifacts_root / new_run_id(gate)
        try:
            path.mkdir()
        except FileExistsError:  # the same second and the same 24 random bits: draw again
            continue
        return path


def _json_default(value: object) -> object:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def write_json(path: Path, obj: object) -> Path:
    """Write `obj` as pretty JSON (sorted keys, 2-space indent, final newline), atomically.

    Non-finite floats are refused (`allow_nan=False`): evidence must be valid JSON
    that any tool can read, so a gate reports a missing number as null instead.
    """
    text = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False,
                      default=_json_default) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    return files.write_atomic(path, text.encode("utf-8"))


def capture_environment(*, packages: Iterable[str] = KEY_PACKAGES) -> dict[str, Any]:
    """What a result depends on: interpreter, SQLite, platform, package versions, and
    the provenance of the code that ran (`provenance.capture`).

    `git` and `source_sha256` describe the imported `sonia` package and the checkout
    that tracks it, never the caller's working directory; `git` is null when the
    package is not a tracked checkout or git is missing. `packages` keeps the key
    packages by name for readers; `provenance.packages` is the full resolved set.
    """
    versions: dict[str, str | None] = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    origin = provenance.capture()
    return {
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "executable": os.path.basename(sys.executable),  # no machine path in evidence
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "sonia": __version__,
        "packages": versions,
        "git": origin["git"],
        "source_sha256": origin["source_sha256"],
        "provenance": origin,
        "captured_at": dt.datetime.now(dt.UTC).isoformat(),
    }


@dataclass(frozen=True)
class Check:
    """One line of a verdict: what was required, what was seen, and whether it held."""

    name: str
    threshold: Any
    observed: Any
    passed: bool
    kind: str = CRITERION
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "threshold": self.threshold, "observed": self.observed,
                "passed": self.passed, "kind": self.kind, "detail": self.detail}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Check:
        return cls(name=str(data["name"]), threshold=data.get("threshold"),
                   observed=data.get("observed"), passed=bool(data["passed"]),
                   kind=str(data.get("kind", CRITERION)), detail=str(data.get("detail", "")))


@dataclass(frozen=True)
class Verdict:
    """The outcome of one gate run: a status derived from its checks, never set by hand."""

    gate: str
    checks: tuple[Check, ...]
    thresholds: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, gate: str, checks: Sequence[Check],
           thresholds: Mapping[str, Any] | None = None) -> Verdict:
        return cls(gate=gate, checks=tuple(checks), thresholds=dict(thresholds or {}))

    @property
    def status(self) -> Status:
        """INVALID if a validity check failed (or nothing was checked), else NO-GO if a
        criterion failed, else GO."""
        if not self.checks or any(not c.passed and c.kind == VALIDITY for c in self.checks):
            return "INVALID"
        if any(not c.passed for c in self.checks):
            return "NO-GO"
        return "GO"

    @property
    def passed(self) -> bool:
        return self.status == "GO"

    @property
    def failures(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.passed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "gate": self.gate,
            "status": self.status,
            "thresholds": dict(self.thresholds),
            "checks": [c.to_dict() for c in self.checks],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Verdict:
        verdict = cls.of(str(data["gate"]), [Check.from_dict(c) for c in data["checks"]],
                         data.get("thresholds"))
        stated = data.get("status")
        if stated is not None and stated != verdict.status:
            raise ValueError(
                f"verdict of gate {verdict.gate} says {stated} but its checks say "
                f"{verdict.status}"
            )
        return verdict


def read_evidence(run_dir: Path, name: str) -> dict[str, Any]:
    """A gate's JSON evidence file as an object; GateError naming the file when it is
    missing, not JSON or not an object (a judge never guesses at a broken run)."""
    path = run_dir / name
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GateError(f"{name} is missing from the run directory") from None
    except (OSError, ValueError) as exc:
        raise GateError(f"{name} is not readable JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise GateError(f"{name} holds no JSON object")
    return data
