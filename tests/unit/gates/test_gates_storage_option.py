"""`--storage`: which gates take it, what is refused before anything runs, and a gate
asked for PostgreSQL where none is installed says so (exit 2) instead of answering on
SQLite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sonia.errors import ConfigError
from sonia.gates import registry
from sonia.gates.common.storage import gate_storage
from sonia.gates.waivers import below_minimum
from sonia.kit import pg


def sonia(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sonia", *args], capture_output=True,
                          text=True, timeout=120)


def test_only_the_chaos_and_durability_gates_take_a_storage_backend() -> None:
    assert registry.storage_gates() == ["durability", "chaos"]
    for gate in ("chaos", "durability"):
        chosen = registry.profile_for(gate, "quick", {"storage": "postgresql"})
        assert chosen.storage == "postgresql"
        assert registry.profile_for(gate, "quick", {}).storage == "sqlite"


def test_storage_elsewhere_or_unknown_exits_2_before_anything_runs(tmp_path: Path) -> None:
    home = tmp_path / "home"
    proc = sonia("gate", "go-no-go", "--storage", "postgresql", "--home", str(home))
    assert proc.returncode == 2, proc.stderr
    assert "runs on SQLite only" in proc.stderr and "durability, chaos" in proc.stderr
    proc = sonia("gate", "chaos", "--storage", "oracle", "--home", str(home))
    assert proc.returncode == 2 and "unknown storage 'oracle'" in proc.stderr
    assert not list((home / "artifacts").glob("*-*"))  # nothing ran


def test_a_release_run_may_choose_either_backend() -> None:
    for gate in ("chaos", "durability"):
        release = registry.profile_for(gate, "release", {"storage": "postgresql"})
        problems, _used = below_minimum(gate, vars(release))
        assert problems == []


def test_postgresql_that_is_not_installed_is_a_clear_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    nowhere = tmp_path / "no-postgres"
    nowhere.mkdir()
    monkeypatch.setenv(pg.BINDIR_ENV, str(nowhere))
    monkeypatch.setenv("PATH", str(nowhere))
    monkeypatch.setattr(pg, "INSTALL_ROOT", nowhere)
    with pytest.raises(ConfigError, match="--storage postgresql needs PostgreSQL server"):
        with gate_storage("postgresql"):
            pytest.fail("no server can have started")
    with pytest.raises(ConfigError, match="--storage postgresql needs"):
        registry.run_gate("durability", "quick", tmp_path / "artifacts",
                          {"storage": "postgresql"}, show_progress=False)
    assert not list((tmp_path / "artifacts").rglob("restore-drill.json"))
