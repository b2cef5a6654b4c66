"""A gate stopped with SIGTERM stops the stack it started.

CI timeouts and `kill` send SIGTERM. The stack's supervisor runs in a session of
its own (so a terminal's Ctrl-C reaches only the gate, which stops it in order);
a gate that died on the spot left the supervisor and six services behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from sonia.kit.deadline import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def processes_of(home: Path) -> dict[psutil.Process, str]:
    """Every live process whose command line names `home` (the stack runs under it)."""
    found = {}
    for proc in psutil.process_iter(["cmdline"]):
        command = " ".join(proc.info["cmdline"] or ())
        if str(home) in command and proc.pid != os.getpid():
            found[proc] = command
    return found


def services_running(home: Path) -> bool:
    return sum("sonia.services" in c for c in processes_of(home).values()) == 6


def test_sigterm_to_a_running_gate_stops_its_stack(tmp_path: Path) -> None:
    home = tmp_path / "home"
    gate = subprocess.Popen(
        [sys.executable, "-m", "sonia", "gate", "soak", "--home", str(home),
         "--duration", "10m"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: services_running(home), timeout=90, interval=0.5,
                   what="the gate's stack is up")
        gate.send_signal(signal.SIGTERM)
        assert gate.wait(timeout=60) != 0
        wait_until(lambda: not processes_of(home), timeout=30, interval=0.5,
                   what="no process of the gate's stack is left")
    finally:
        if gate.poll() is None:
            gate.kill()
        for proc in processes_of(home):
            try:
                proc.kill()
            except psutil.Error:
                pass
