"""A home's artifacts as the console reads them: finished gate runs and a release bundle.

Gate runs are the shared good runs (`gate_runs`), with `provenance.json` and
`verdict.json` written as `registry.run_gate` writes them and the verdict derived by
the registry's judge; the soak run carries a real report with plots. The bundle is
built and signed off with throwaway keys (so `sonia verify` finds it intact but not
signed by the pinned release key), with one waiver.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gate_runs

from sonia.gates import registry
from sonia.gates.common.evidence import new_run_id, write_json
from sonia.gates.soak.gate import PROFILES as SOAK_PROFILES
from sonia.gates.soak.gate import read_rows
from sonia.gates.soak.report import write_report
from sonia.release.manifest import build_bundle
from sonia.release.signing import keygen
from sonia.release.signoff import sign_off

COMMIT = "0123456789abcdef0123456789abcdef01234567"
ORIGIN: dict[str, Any] = {"source_sha256": "0" * 64, "packages_sha256": "1" * 64,
                          "git": {"commit": COMMIT, "dirty": False, "repo": "sonia"}}
WAIVER = {"gate": "soak", "parameter": "duration_s", "value": "60",
          "reason": "no 48 h machine for a console test"}


@dataclass(frozen=True)
class Artifacts:
    go: Path
    no_go: Path
    soak: Path
    bundle: Path


def _finish(run_dir: Path, gate: str, profile: str, parameters: dict[str, Any]) -> Path:
    write_json(run_dir / "provenance.json", {"start": ORIGIN, "end": ORIGIN})
    verdict = registry.judge(gate, run_dir).to_dict()
    write_json(run_dir / "verdict.json", {
        "gate": gate, "profile": profile, "parameters": parameters, "waivers": [],
        "seconds": 12.5, "verdict": verdict, "evidence": []})
    return run_dir


def _run_dir(artifacts: Path, gate: str, minute: int) -> Path:
    moment = dt.datetime(2030, 1, 1, 12, minute, tzinfo=dt.UTC)
    path = artifacts / new_run_id(gate, now=moment)
    path.mkdir(parents=True)
    return path


def write_artifacts(artifacts: Path, keys: Path) -> Artifacts:
    """Three runs (go-no-go GO, go-no-go NO-GO, soak with plots) and one bundle."""
    profile = dict(gate_runs.GO_NO_GO_PROFILE)
    go = _finish(gate_runs.go_no_go(_run_dir(artifacts, "go-no-go", 1), profile),
                 "go-no-go", "quick", profile)

    def zombie(summary: dict[str, Any]) -> None:
        summary["cycles"][0] = gate_runs.cycle(1, zombies=[4242])

    no_go = _finish(gate_runs.go_no_go(_run_dir(artifacts, "go-no-go", 2), profile, zombie),
                    "go-no-go", "quick", profile)
    soak_profile = json.loads(json.dumps(dataclasses.asdict(SOAK_PROFILES["quick"])))
    soak_dir = gate_runs.soak(_run_dir(artifacts, "soak", 3), soak_profile,
                              gate_runs.synthetic_rows(windows=20))
    soak = _finish(soak_dir, "soak", "quick", soak_profile)
    summary = json.loads((soak / "soak-summary.json").read_text())
    summary["verdict"] = json.loads((soak / "verdict.json").read_text())["verdict"]
    write_report(read_rows(soak / "soak-metrics.csv"), summary, soak / "soak-report.html")
    bundle = _bundle(artifacts / "release" / "release-candidate-1", go, keys)
    return Artifacts(go, no_go, soak, bundle)


def _bundle(out: Path, run: Path, keys: Path) -> Path:
    release_key, _ = keygen(keys / "release.pem")
    verdict = json.loads((run / "verdict.json").read_text())["verdict"]
    build_bundle(out, {"go-no-go/go-no-go-summary.json": run / "go-no-go-summary.json"},
                 commit=COMMIT, tag="release-candidate-1", verdicts=[verdict],
                 environment={"python": "3.11"}, signing_key=release_key, waivers=[WAIVER])
    qa_key, _ = keygen(keys / "qa.pem")
    sign_off(out, "qa", qa_key, signer="Quinn QA")
    return out
