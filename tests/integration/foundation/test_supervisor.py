"""The supervisor restarts what dies, and `down` leaves nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from sonia import SERVICES
from sonia.kit.deadline import wait_until
from sonia.supervisor import control
from sonia.supervisor.state import read_json, state_file
from sonia.testing import FreshStack

pytestmark = pytest.mark.integration


def service_pid(stack: FreshStack, name: str) -> int:
    return int((stack.home.run / f"{name}.pid").read_text())


def test_a_killed_service_is_restarted_and_serves_again(own_stack: FreshStack) -> None:
    before = service_pid(own_stack, "eva")
    os.kill(before, signal.SIGKILL)

    def restarted() -> bool:
        state = read_json(state_file(own_stack.home)) or {}
        info = state.get("services", {}).get("eva", {})
        return bool(info.get("restarts") == 1 and info.get("pid") not in (None, before))

    wait_until(restarted, timeout=20, what="eva restarted")
    wait_until(lambda: control.is_ready(own_stack.settings, "eva"), timeout=30,
               what="eva ready again")
    key = httpx.get(own_stack.url("eva") + "/v1/grant-key",
                    headers=own_stack.service_headers("openclaw"), timeout=10)
    assert key.status_code == 200
    rows = {r.name: r for r in control.status(own_stack.home)}
    assert rows["eva"].restarts == 1 and rows["eva"].ready


def test_down_leaves_no_process_and_no_bound_port(own_stack: FreshStack) -> None:
    marker = (read_json(state_file(own_stack.home)) or {})["marker"]
    assert len(control.processes_with_marker(marker)) == len(SERVICES)
    report = own_stack.down()
    assert report.was_running
    assert report.escalations == [] and report.leftovers_killed == []
    assert control.processes_with_marker(marker) == []
    for name in SERVICES:
        assert control.port_free("127.0.0.1", own_stack.settings.port_of(name))
    assert not list(own_stack.home.run.glob("*.pid"))


def test_down_reaps_a_supervisor_killed_under_it(own_stack: FreshStack) -> None:
    """A power cut (the durability drill): the supervisor SIGKILLed, then `down` at once.
    The supervisor this process started is waited for, not polled once (just after the
    kill it may not be a zombie yet): no zombie, no unreaped Popen left behind."""
    pid = control.supervisor_pid(own_stack.home)
    assert pid is not None
    spawned = control._spawned[own_stack.home.root]
    os.kill(pid, signal.SIGKILL)
    own_stack.down()
    assert spawned.returncode == -signal.SIGKILL
    assert own_stack.home.root not in control._spawned


def test_two_homes_run_side_by_side(tmp_path: Path) -> None:
    with FreshStack(tmp_path / "a") as a, FreshStack(tmp_path / "b") as b:
        a.up()
        b.up()
        assert a.base_port != b.base_port
        a.down()
        assert all(r.ready for r in control.status(b.home)), "stopping A must not touch B"
        whoami = httpx.get(b.url() + "/v1/whoami", headers=b.user_headers(), timeout=10)
        assert whoami.status_code == 200
        assert httpx.get(b.url() + "/v1/whoami", headers=a.user_headers()).status_code == 401


def sonia(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sonia", *args, "--home", str(home)],
                          capture_output=True, text=True, timeout=120)


def test_cli_up_status_down_round_trip(tmp_path: Path) -> None:
    home = FreshStack(tmp_path / "cli").home.root
    try:
        up = sonia("up", home=home)
        assert up.returncode == 0, up.stderr
        status = sonia("status", "--json", home=home)
        assert status.returncode == 0, status.stderr
        assert '"ready": true' in status.stdout
    finally:
        down = sonia("down", home=home)
    assert down.returncode == 0, down.stderr
    assert "stopped" in down.stdout
