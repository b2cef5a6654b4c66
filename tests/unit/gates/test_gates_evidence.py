"""Evidence: run folders, atomic JSON, the environment, and the verdict vocabulary."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from sonia.gates.evidence import (
    VALIDITY,
    Check,
    Verdict,
    capture_environment,
    new_run_dir,
    write_json,
)


def test_run_dirs_are_fresh_and_name_their_gate(tmp_path: Path) -> None:
    first = new_run_dir(tmp_path / "artifacts", "soak")
    second = new_run_dir(tmp_path / "artifacts", "soak")
    assert first != second and first.is_dir() and second.is_dir()
    assert re.fullmatch(r"\d{8}T\d{6}Z-soak-[0-9a-f]{6}", first.name)


def test_write_json_is_sorted_pretty_and_refuses_nan(tmp_path: Path) -> None:
    path = write_json(tmp_path / "x.json", {"b": 1, "a": [Path("p")]})
    assert path.read_text() == '{\n  "a": [\n    "p"\n  ],\n  "b": 1\n}\n'
    with pytest.raises(ValueError):
        write_json(tmp_path / "y.json", {"x": math.nan})
    assert not (tmp_path / "y.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]  # no temp file left


def test_environment_names_interpreter_sqlite_and_packages() -> None:
    env = capture_environment(packages=("numpy", "surely-not-installed-pkg"))
    assert env["python"] and env["sqlite"]
    assert env["packages"]["numpy"] and env["packages"]["surely-not-installed-pkg"] is None
    json.dumps(env)


def test_verdict_status_comes_from_checks() -> None:
    good = Check("errors", 0, 0, True)
    bad = Check("errors", 0, 3, False)
    invalid = Check("enough data", 30, 2, False, kind=VALIDITY)
    assert Verdict.of("g", [good]).status == "GO"
    assert Verdict.of("g", [good, bad]).status == "NO-GO"
    assert Verdict.of("g", [bad, invalid]).status == "INVALID"
    assert Verdict.of("g", []).status == "INVALID"


def test_verdict_round_trips_and_refuses_a_contradicting_status() -> None:
    verdict = Verdict.of("g", [Check("x", 1, 2, False)], {"x": 1})
    data = json.loads(json.dumps(verdict.to_dict()))
    assert Verdict.from_dict(data) == verdict
    data["status"] = "GO"
    with pytest.raises(ValueError):
        Verdict.from_dict(data)
