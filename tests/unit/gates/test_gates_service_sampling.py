"""What the soak reads of each service, against real processes and real state files.

A reading that fails is None (an empty cell), never zero: a pid file that names
no process, a state file that is missing, a service the supervisor lists as
restarting.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sonia.gates.common.processes import sample_services
from sonia.home import Home
from sonia.kit.process_memory import tree_uss
from sonia.supervisor.state import state_file, write_json_atomic

PARENT = ("import subprocess, sys; child = subprocess.Popen([sys.executable, '-c', "
          "'import sys; sys.stdin.read()'], stdin=sys.stdin); print('up', flush=True); "
          "sys.stdin.read(); child.wait()")


@pytest.fixture()
def service() -> Iterator[subprocess.Popen[bytes]]:
    """A real process with a real child, both waiting on stdin; ended in `finally`."""
    proc = subprocess.Popen([sys.executable, "-c", PARENT], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"up\n"
        yield proc
    finally:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def make_home(tmp_path: Path, pid: int, *, state: str = "running", restarts: int = 2) -> Home:
    home = Home.at(tmp_path / "home")
    home.run.mkdir(parents=True)
    (home.run / "svc.pid").write_text(f"{pid}\n")
    write_json_atomic(state_file(home), {"services": {"svc": {
        "pid": pid if state == "running" else None, "started_at": time.time() - 30.0,
        "restarts": restarts, "state": state}}})
    return home


def test_a_running_service_is_read_whole(tmp_path: Path,
                                         service: subprocess.Popen[bytes]) -> None:
    sample = sample_services(make_home(tmp_path, service.pid), ["svc"])["svc"]
    assert sample.uss_bytes is not None and sample.uss_bytes > 1024 * 1024
    assert sample.uptime_s is not None and 29.0 <= sample.uptime_s < 600
    assert sample.restarts == 2


def test_the_tree_includes_the_child(service: subprocess.Popen[bytes]) -> None:
    import psutil

    root_only = psutil.Process(service.pid).memory_full_info().uss
    whole = tree_uss(service.pid)
    assert whole is not None and whole > root_only


def test_a_pid_file_naming_no_process_is_a_missing_reading(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert tree_uss(gone.pid) is None
    sample = sample_services(make_home(tmp_path, gone.pid), ["svc"])["svc"]
    assert sample.uss_bytes is None, "a failed read is None, never 0"
    assert sample.restarts == 2


def test_an_unreadable_pid_file_is_a_missing_reading(tmp_path: Path,
                                                     service: subprocess.Popen[bytes]) -> None:
    home = make_home(tmp_path, service.pid)
    (home.run / "svc.pid").write_text("not a pid\n")
    sample = sample_services(home, ["svc"])["svc"]
    assert sample.uss_bytes is None and sample.uptime_s is not None


def test_without_the_supervisor_state_uptime_and_restarts_are_unknown(
        tmp_path: Path, service: subprocess.Popen[bytes]) -> None:
    home = make_home(tmp_path, service.pid)
    state_file(home).unlink()
    sample = sample_services(home, ["svc", "other"])
    assert sample["svc"].uss_bytes is not None
    assert sample["svc"].uptime_s is None and sample["svc"].restarts is None
    assert sample["other"].uss_bytes is None, "a service without a pid file is not zero"


def test_a_restarting_service_has_no_uptime(tmp_path: Path,
                                            service: subprocess.Popen[bytes]) -> None:
    sample = sample_services(make_home(tmp_path, service.pid, state="restarting",
                                       restarts=1), ["svc"])["svc"]
    assert sample.uptime_s is None and sample.restarts == 1
