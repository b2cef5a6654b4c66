"""The soak gate against a real stack with a real fault injected mid-run.

The gate runs in this thread; a helper thread waits, with a deadline, until the
gate has written a few rows, then does the harm on the real stack: SIGKILL one
service (its supervisor restarts it), or make one service's memory unreadable
(its pid file no longer names a process). The verdict must say NO-GO naming the
restart, or INVALID naming the service, and the CSV on disk must show why.

The runs are shortened (see `shortened`); everything else is the quick
profile's code and numbers.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sonia.gates import registry
from sonia.gates.soak.gate import PROFILES
from sonia.kit.deadline import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.gate]

VICTIM = "memory"


def rows_of(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "soak-metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


class Harm(threading.Thread):
    """Waits for `rows` rows of the running gate's CSV, then calls `act(stack_home)`."""

    def __init__(self, artifacts: Path, rows: int, act: Callable[[Path], Any]) -> None:
        super().__init__(daemon=True)
        self.artifacts, self.rows, self.act = artifacts, rows, act
        self.done: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            def ready() -> Path | None:
                for csv_path in self.artifacts.glob("*/soak-metrics.csv"):
                    if len(rows_of(csv_path.parent)) >= self.rows:
                        return csv_path.parent
                return None

            run_dir = wait_until(ready, timeout=180, interval=0.2, what="soak rows written")
            self.done = self.act(run_dir / "stack-home")
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.error = exc


def shortened(duration_s: float) -> dict[str, Any]:
    """The quick profile with 2-second windows, trends judged on 10 of them, and a
    generator allowed to lag in half the windows: these tests are about restarts
    and memory readings, and a loaded test machine must not turn their answer
    into "the generator fell behind" (that check has its own unit tests)."""
    quick = PROFILES["quick"]
    return {"duration_s": duration_s, "window_seconds": 2.0,
            "verdict": dataclasses.replace(quick.verdict, min_windows=10,
                                           max_behind_window_fraction=0.5)}


def run_with(tmp_path: Path, duration_s: float, harm: Harm) -> registry.GateRun:
    harm.start()
    run = registry.run_gate("soak", "quick", tmp_path, shortened(duration_s),
                            show_progress=False)
    harm.join(timeout=30)
    assert not harm.is_alive()
    if harm.error is not None:
        raise harm.error
    return run


def sigkill_victim(home: Path) -> int:
    state = json.loads((home / "run" / "state.json").read_text())
    pid = int(state["services"][VICTIM]["pid"])
    os.kill(pid, signal.SIGKILL)
    return pid


def test_a_service_killed_once_is_no_go_naming_the_restart(tmp_path: Path) -> None:
    harm = Harm(tmp_path, 4, sigkill_victim)
    run = run_with(tmp_path, 60.0, harm)
    killed = harm.done

    failures = {c.name: c for c in run.verdict.failures}
    assert run.verdict.status == "NO-GO", failures
    assert f"restarts ({VICTIM})" in failures
    assert failures[f"restarts ({VICTIM})"].observed["restarts"] == 1
    assert not [c for c in run.verdict.failures if c.kind == "validity"], failures
    assert [n for n in failures if n.startswith("restarts")] == [f"restarts ({VICTIM})"]

    rows = rows_of(run.run_dir)  # the evidence on disk says it too
    assert rows[0][f"restarts.{VICTIM}"] == "0" and rows[-1][f"restarts.{VICTIM}"] == "1"
    assert all(r["restarts.gateway"] == "0" for r in rows)
    state = json.loads((run.run_dir / "stack-home" / "run" / "state.json").read_text())
    assert state["services"][VICTIM]["restarts"] == 1
    assert killed != state["services"][VICTIM]["pid"]
    summary = json.loads((run.run_dir / "soak-summary.json").read_text())
    assert summary["verdict"]["status"] == "NO-GO"


def break_victim_pid_file(home: Path) -> Path:
    pid_file = home / "run" / f"{VICTIM}.pid"
    pid_file.write_text("unreadable\n")
    return pid_file


def test_a_service_whose_memory_cannot_be_read_is_invalid(tmp_path: Path) -> None:
    harm = Harm(tmp_path, 2, break_victim_pid_file)
    run = run_with(tmp_path, 24.0, harm)

    failures = {c.name: c for c in run.verdict.failures}
    assert run.verdict.status == "INVALID", failures
    assert f"memory sampled ({VICTIM})" in failures
    assert failures[f"memory sampled ({VICTIM})"].observed["fraction"] < 0.95
    assert not any(n.startswith("memory sampled") and n != f"memory sampled ({VICTIM})"
                   for n in failures)
    assert not any(n.startswith("restarts") for n in failures), "nothing was restarted"

    rows = rows_of(run.run_dir)
    assert rows[0][f"uss.{VICTIM}"] and rows[-1][f"uss.{VICTIM}"] == "", "empty, never 0"
    assert all(r[f"uptime_s.{VICTIM}"] for r in rows), "the service ran all along"
    assert not any(r[f"uss.{VICTIM}"] == "0" for r in rows)
