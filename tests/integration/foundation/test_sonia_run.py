"""`sonia run SERVICE`: one service in the foreground, the way a service manager runs it.

Real processes and a real notify socket: READY=1 comes once the service's
/readyz answers 200 (its dependencies included), STOPPING=1 on SIGTERM, which
drains the service and exits 0; every line on stdout is a JSON log line.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from foreground import ForegroundService

from sonia.home import Home
from sonia.supervisor import control
from sonia.testing import free_stack_port

pytestmark = pytest.mark.integration

START_S = 60.0


@pytest.fixture()
def home(tmp_path: Path) -> Home:
    home = Home.at(tmp_path / "home")
    home.init(base_port=free_stack_port())
    return home


def readyz(home: Home, service: str) -> int:
    return httpx.get(home.settings().url_of(service) + "/readyz", timeout=5).status_code


def test_ready_is_told_once_readyz_answers_and_stopping_on_sigterm(
        home: Home, tmp_path: Path) -> None:
    with ForegroundService("eva", home, tmp_path / "run") as eva:
        ready = eva.wait_for("READY", START_S)
        assert ready["READY"] == "1"
        assert readyz(home, "eva") == 200
        assert eva.stop() == 0, "SIGTERM drains the service; a drained stop is a clean exit"
        assert eva.wait_for("STOPPING", 5)["STOPPING"] == "1"
    lines = eva.log_lines()
    assert {line["service"] for line in lines} == {"eva"}
    assert any(line["msg"] == "stopped" for line in lines)
    assert not home.log_file("eva").exists(), "in the foreground the log is stdout"
    assert control.port_free("127.0.0.1", home.settings().port_of("eva"))


def test_a_service_is_not_ready_until_the_services_it_needs_are(
        home: Home, tmp_path: Path) -> None:
    """OpenClaw needs EVA: it says what it waits for, and READY=1 only after EVA is up."""
    with ForegroundService("openclaw", home, tmp_path / "run") as openclaw:
        waiting = openclaw.wait_for("STATUS", START_S)
        assert "READY" not in waiting and "eva" in waiting["STATUS"]
        assert readyz(home, "openclaw") == 503
        with ForegroundService("eva", home, tmp_path / "run") as eva:
            eva.wait_for("READY", START_S)
            openclaw.wait_for("READY", START_S)
            assert readyz(home, "openclaw") == 200
            assert openclaw.stop() == 0
            assert eva.stop() == 0


def run(*args: str, home: Home) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sonia", *args, "--home", str(home.root)],
                          capture_output=True, text=True, timeout=120)


def test_an_unknown_service_exits_2(home: Home) -> None:
    done = run("run", "nosuch", home=home)
    assert done.returncode == 2 and "nosuch" in done.stderr


def test_a_missing_home_exits_2_saying_how_to_make_one(tmp_path: Path) -> None:
    done = run("run", "eva", home=Home.at(tmp_path / "nothing-here"))
    assert done.returncode == 2 and "sonia init" in done.stderr
