"""A real, tiny gate for CLI tests: it follows the gate interface (PROFILES, run, judge)
and takes a fraction of a second, so `sonia gate all` can be run whole in a test."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from sonia.gates.common.evidence import Check, Verdict, capture_environment, write_json
from sonia.gates.common.progress import GateProgress


@dataclass(frozen=True)
class TinyProfile:
    samples: int


PROFILES = {"quick": TinyProfile(samples=3), "release": TinyProfile(samples=30)}
EVIDENCE_FILES = ("tiny.json",)
FAIL_ENV = "TINY_GATE_FAILS"


def run(run_dir: Path, profile: TinyProfile, progress: GateProgress) -> Verdict:
    failing = os.environ.get(FAIL_ENV) == "1"
    write_json(run_dir / "tiny.json", {
        "gate": "tiny", "profile": {"samples": profile.samples},
        "samples": [{"n": n, "ok": not (failing and n == 0)} for n in range(profile.samples)],
        "environment": capture_environment(),
    })
    return judge(run_dir)


def judge(run_dir: Path) -> Verdict:
    data = json.loads((run_dir / "tiny.json").read_text())
    bad = [s["n"] for s in data["samples"] if not s["ok"]]
    return Verdict.of("tiny", [
        Check("samples", data["profile"]["samples"], len(data["samples"]),
              len(data["samples"]) == data["profile"]["samples"] > 0, kind="validity"),
        Check("failed samples", 0, len(bad), not bad),
    ])
