"""Release minimums and waivers: how weak a release run's parameters may be.

Each gate's `PROFILES["release"]` is the minimum a release accepts. Every
parameter has a direction (`BOUNDS`; unlisted ones must equal the release value):

    ">="   more is stronger (cycles, minutes of health checks, soak duration)
    "<="   less is stronger (seconds between checks, a corpus stride, a target)
    "any"  neither (a seed, a timeout, the storage backend: each is a release run)

A *waiver* lets one parameter fall below its minimum, on purpose and in writing:
`--waive soak.duration="1h: this machine cannot hold a 48 h soak"`. Only
parameters listed in `WAIVABLE` (durations and counts of repetitions) can be
waived; a threshold, a corpus, a sample size or anything else that decides
whether a security or correctness check holds never can. A waiver's value is
the weakest value it accepts, in the parameter's unit (durations as 90s, 10m or
48h for a `_s` or `_minutes` parameter). Waivers are recorded in the gate's
`verdict.json`, in MANIFEST.json and at the top of the checklist, and
`sonia verify --strict` fails on any.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sonia.errors import ConfigError
from sonia.gates import catalog

__all__ = ["BOUNDS", "WAIVABLE", "Waiver", "below_minimum", "check_waivable", "parse_duration",
           "parse_waiver", "release_minimums", "waivers_of"]

BOUNDS: dict[str, dict[str, str]] = {
    "go-no-go": {"cycles": ">=", "health_minutes": ">=", "health_interval": "<="},
    "security": {"corpus_stride": "<=", "concurrency": "any", "min_cases": ">=",
                 "config_workers": "any", "fuzz_examples": ">="},
    "soak": {"duration_s": ">="},
    "durability": {"canary_per_s": ">=", "write_before_backup_s": ">=",
                   "write_after_backup_s": ">=", "rto_target_s": "<=", "rpo_target_s": "<=",
                   "search_sample": ">=", "storage": "any"},
    "determinism": {"runs": ">=", "seed": "any", "timeout_s": "any"},
    "chaos": {"kills_per_service": ">=", "pg_down_seconds": ">=", "storage": "any"},
}
"""gate -> parameter -> direction; a parameter not listed must equal the release value."""

WAIVABLE: dict[str, frozenset[str]] = {
    "go-no-go": frozenset({"cycles", "health_minutes"}),
    "security": frozenset(),
    "soak": frozenset({"duration_s"}),
    "durability": frozenset({"write_before_backup_s", "write_after_backup_s"}),
    "determinism": frozenset(),
    "chaos": frozenset({"kills_per_service"}),
}
"""The parameters a waiver may lower: durations and repetition counts, nothing else."""

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str, *, unit: str = "s") -> float:
    """'90s', '10m', '48h' or a bare number in `unit`; the result is in `unit` too."""
    cleaned = text.strip().lower()
    try:
        if cleaned and cleaned[-1] in _UNITS:
            seconds = float(cleaned[:-1]) * _UNITS[cleaned[-1]]
        else:
            seconds = float(cleaned) * _UNITS[unit]
    except ValueError:
        raise ConfigError(f"{text!r} is not a duration like 90s, 10m or 48h",
                          key="duration") from None
    if seconds < 0:
        raise ConfigError(f"{text!r}: a duration cannot be negative", key="duration")
    return seconds / _UNITS[unit]


@dataclass(frozen=True)
class Waiver:
    """One parameter allowed below its release minimum, down to `value`, because `reason`."""

    gate: str
    parameter: str
    value: float
    reason: str

    @property
    def key(self) -> str:
        return f"{self.gate}.{self.parameter}"

    def to_dict(self) -> dict[str, Any]:
        return {"gate": self.gate, "parameter": self.parameter, "value": self.value,
                "reason": self.reason}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Waiver:
        return check_waivable(cls(str(data["gate"]), str(data["parameter"]),
                                  float(data["value"]), str(data["reason"])))


def release_minimums(gate: str) -> dict[str, Any]:
    """The release profile of `gate` as plain JSON values (tuples become lists)."""
    profile = catalog.load(gate).PROFILES["release"]
    minimums: dict[str, Any] = json.loads(json.dumps(dataclasses.asdict(profile)))
    return minimums


def _resolve(gate: str, name: str) -> str:
    fields = release_minimums(gate)
    for candidate in (name, f"{name}_s", name.replace("-", "_")):
        if candidate in fields:
            return candidate
    raise ConfigError(f"{gate} has no parameter {name!r}; its parameters are "
                      f"{', '.join(sorted(fields))}", key="waive")


def check_waivable(waiver: Waiver) -> Waiver:
    if waiver.parameter not in WAIVABLE.get(waiver.gate, frozenset()):
        allowed = ", ".join(f"{waiver.gate}.{p}" for p in sorted(WAIVABLE.get(waiver.gate, ())))
        raise ConfigError(
            f"{waiver.key} cannot be waived: a waiver lowers only a duration or a count, "
            f"never a security or correctness check (waivable here: {allowed or 'nothing'})",
            key="waive")
    if not waiver.reason.strip():
        raise ConfigError(f"the waiver of {waiver.key} needs a reason", key="waive")
    return waiver


def parse_waiver(text: str) -> Waiver:
    """`gate.param=value: reason` (e.g. `soak.duration=1h: no 48 h machine`) -> Waiver."""
    target, sep, rest = text.partition("=")
    gate, dot, name = target.strip().partition(".")
    value_text, colon, reason = rest.partition(":")
    if not (sep and dot and colon and gate and name and value_text.strip()):
        raise ConfigError(f"--waive takes GATE.PARAMETER=\"VALUE: REASON\", got {text!r}",
                          key="waive")
    parameter = _resolve(gate, name.strip())
    if parameter.endswith("_s"):
        value = parse_duration(value_text)
    elif parameter.endswith("_minutes"):
        value = parse_duration(value_text, unit="m")
    else:
        try:
            value = float(value_text)
        except ValueError:
            raise ConfigError(f"--waive {target}: {value_text.strip()!r} is not a number",
                              key="waive") from None
    return check_waivable(Waiver(gate, parameter, value, reason.strip()))


def _weaker(direction: str, actual: Any, limit: Any) -> bool:
    if direction == "any":
        return False
    if direction in (">=", "<=") and isinstance(actual, int | float) \
            and not isinstance(actual, bool):
        return bool(actual < limit) if direction == ">=" else bool(actual > limit)
    return bool(actual != limit)


def below_minimum(gate: str, parameters: Mapping[str, Any], waivers: Iterable[Waiver] = (),
                  ) -> tuple[list[str], list[Waiver]]:
    """(problems, waivers used): every parameter weaker than the release profile.

    A parameter below its minimum is fine only when a waiver of this gate covers it
    and the value is no weaker than the waiver's.
    """
    minimums = release_minimums(gate)
    given = json.loads(json.dumps(dict(parameters), default=str))
    by_key = {w.parameter: w for w in waivers if w.gate == gate}
    problems: list[str] = []
    used: list[Waiver] = []
    for name, limit in minimums.items():
        direction = BOUNDS.get(gate, {}).get(name, "==")
        if name not in given:
            problems.append(f"{gate}: parameter {name} is not recorded")
            continue
        actual = given[name]
        if not _weaker(direction, actual, limit):
            continue
        waiver = by_key.get(name)
        if waiver is not None and not _weaker(direction, actual, waiver.value):
            used.append(waiver)
            continue
        want = {">=": "at least", "<=": "at most"}.get(direction, "exactly")
        hint = (f"; waive it with --waive {gate}.{name}=\"VALUE: REASON\""
                if name in WAIVABLE.get(gate, ()) else "; it cannot be waived")
        covered = f" (the waiver allows {waiver.value})" if waiver else ""
        problems.append(f"{gate}.{name}={actual!r} is below the release minimum: "
                        f"{want} {limit!r}{covered}{hint}")
    return problems, used


def waivers_of(values: Sequence[str]) -> list[Waiver]:
    """Parse every --waive flag; one waiver per parameter."""
    found: dict[str, Waiver] = {}
    for text in values:
        waiver = parse_waiver(text)
        if waiver.key in found:
            raise ConfigError(f"{waiver.key} is waived twice", key="waive")
        found[waiver.key] = waiver
    return list(found.values())
