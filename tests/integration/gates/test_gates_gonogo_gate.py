"""The go-no-go gate end to end, shortened: a service SIGKILLed between two health probes and
restarted by the supervisor answers ready again, yet the gate says NO-GO naming the restart."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from rich.progress import TaskID

from sonia.gates.common.progress import GateProgress
from sonia.gates.gonogo import EVIDENCE, GoNoGoProfile, judge, run
from sonia.home import Home
from sonia.supervisor.control import is_ready
from sonia.supervisor.state import read_json, state_file

pytestmark = [pytest.mark.integration, pytest.mark.slow]

VICTIM = "voice"


class KillAfterFirstProbe(GateProgress):
    """Progress that, after the first health probe, SIGKILLs one service and waits until
    the supervisor has restarted it and it is ready again, so that every probe passes."""

    def __init__(self, home: Home) -> None:
        super().__init__(enabled=False)
        self.home = home
        self.health: TaskID | None = None
        self.killed: int | None = None

    def task(self, description: str, total: float) -> TaskID:
        task = super().task(description, total)
        if description == "health checks":
            self.health = task
        return task

    def advance(self, task: TaskID, amount: float = 1.0) -> None:
        super().advance(task, amount)
        if task != self.health or self.killed is not None:
            return
        state = read_json(state_file(self.home))
        assert state is not None, "the supervisor's state file exists while the stack runs"
        self.killed = int(state["services"][VICTIM]["pid"])
        os.kill(self.killed, signal.SIGKILL)
        settings = self.home.check()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            info = (read_json(state_file(self.home)) or {}).get("services", {}).get(VICTIM, {})
            if info.get("pid") not in (None, self.killed) and is_ready(settings, VICTIM):
                return
            time.sleep(0.2)
        raise AssertionError(f"{VICTIM} was not restarted within 60 s")


def test_a_restart_between_probes_fails_the_gate(tmp_path: Path) -> None:
    progress = KillAfterFirstProbe(Home.at(tmp_path / "stack-home"))
    verdict = run(tmp_path, GoNoGoProfile(cycles=1, health_minutes=3 / 60, health_interval=1.0),
                  progress)

    assert progress.killed is not None
    assert verdict.status == "NO-GO", verdict.to_dict()
    restarts = next(c for c in verdict.checks if c.name == "restarts_during_health")
    assert not restarts.passed
    assert restarts.detail.startswith(f"{VICTIM} at probe 1: pid {progress.killed} -> ")
    assert judge(tmp_path) == verdict, "the gate and the release step use one judge"
    probes = json.loads((tmp_path / EVIDENCE).read_text())["health"]["probes"]
    assert [p["services"][VICTIM]["restarts"] for p in probes] == [0, 1, 1]
