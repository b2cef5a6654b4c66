"""What the CLI and the gates do with a home's stack: up, down, status.

`up` starts the background supervisor and returns when every service answers
/readyz (or raises at the deadline, with the tail of the failing service's log).
`down` asks the supervisor to stop and returns only when every process of the
home is gone and every port is free; anything it had to kill is reported.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from sonia import SERVICES
from sonia.config import Settings
from sonia.errors import SupervisorError
from sonia.home import Home
from sonia.kit.process_memory import tree_uss
from sonia.kit.tls import client_context
from sonia.supervisor.process import RUN_MARKER_ENV, roll_over_when_full
from sonia.supervisor.state import read_json, state_file, stop_report_file, supervisor_pid_file

_spawned: dict[Path, subprocess.Popen[bytes]] = {}
"""Supervisors this process started, kept so their exit status is collected (no zombie)."""


@dataclass
class ServiceStatus:
    name: str
    pid: int | None
    port: int
    ready: bool
    uptime_s: float | None
    uss_bytes: int | None
    restarts: int
    not_ready_because: str | None = None
    sandbox: dict[str, str] = field(default_factory=dict)
    """OpenClaw only: the sandbox its commands run in, from its /readyz."""


@dataclass
class DownReport:
    was_running: bool
    seconds: float
    escalations: list[str] = field(default_factory=list)
    leftovers_killed: list[int] = field(default_factory=list)
    ports_bound: list[int] = field(default_factory=list)
    services: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def supervisor_pid(home: Home) -> int | None:
    """The live supervisor's pid, or None (a stale pid file is ignored)."""
    try:
        pid = int(supervisor_pid_file(home).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        cmdline = " ".join(proc.cmdline())
    except psutil.Error:
        return None
    if "sonia.supervisor" not in cmdline or str(home.root) not in cmdline:
        return None
    return pid


def is_ready(settings: Settings, service: str, timeout: float = 1.0,
             home: Home | None = None) -> bool:
    return readiness(settings, service, timeout, home)[0]


@dataclass(frozen=True)
class Readyz:
    """One answer of a service's /readyz: whether it is ready, why not, and its checks."""

    ready: bool
    why_not: str | None
    checks: dict[str, Any] = field(default_factory=dict)

    def sandbox(self) -> dict[str, str]:
        """OpenClaw's `sandbox` check (level, network, uid of commands, reason)."""
        check = self.checks.get("sandbox")
        if not isinstance(check, dict):
            return {}
        return {key: str(value) for key, value in check.items()
                if key in ("level", "network", "runs_as_uid", "reason")}


def ask_readyz(settings: Settings, service: str, timeout: float = 1.0,
               home: Home | None = None) -> Readyz:
    """Ask `service`'s /readyz once; the reason is its first failing check. Over TLS the
    certificate is verified as the services verify it (the CA of `home`'s settings)."""
    verify: Any = True
    if settings.tls.enabled and home is not None:
        verify = client_context(home, settings)
    try:
        r = httpx.get(settings.url_of(service) + "/readyz", timeout=timeout, verify=verify)
    except httpx.HTTPError as exc:
        return Readyz(False, f"/readyz did not answer ({type(exc).__name__}: "
                             f"{str(exc)[:200]})")
    try:
        body = r.json()
        checks = dict(body.get("checks") or {}) if isinstance(body, dict) else {}
    except ValueError:
        checks = {}
    if r.status_code == 200:
        return Readyz(True, None, checks)
    failing = [f"{name}: {check.get('output', 'fail')}" for name, check in checks.items()
               if isinstance(check, dict) and check.get("status") != "pass"]
    return Readyz(False, "; ".join(failing) or f"/readyz answered {r.status_code} (draining?)",
                  checks)


def readiness(settings: Settings, service: str, timeout: float = 1.0,
              home: Home | None = None) -> tuple[bool, str | None]:
    """(ready, why not) of `service` (see `ask_readyz`)."""
    answer = ask_readyz(settings, service, timeout, home)
    return answer.ready, answer.why_not


def wait_ready(home: Home, settings: Settings, deadline_s: float,
               services: tuple[str, ...] = SERVICES) -> dict[str, float]:
    """Poll /readyz of every service until all answer 200; seconds to ready per service."""
    start = time.monotonic()
    deadline = start + deadline_s
    ready_after: dict[str, float] = {}
    why_not: dict[str, str | None] = {}
    while time.monotonic() < deadline:
        for name in services:
            if name not in ready_after:
                ready, why_not[name] = readiness(settings, name, timeout=2.5, home=home)
                if ready:
                    ready_after[name] = time.monotonic() - start
        if len(ready_after) == len(services):
            return ready_after
        if supervisor_pid(home) is None:
            raise SupervisorError("the supervisor exited during start-up; see "
                                  f"{home.logs / 'supervisor.log'}")
        time.sleep(0.05)
    waiting = [s for s in services if s not in ready_after]
    reasons = "\n".join(f"  {s}: {why_not.get(s) or 'no answer yet'}" for s in waiting)
    tails = "\n".join(f"--- {s}.out ---\n{_tail(home, s)}" for s in waiting)
    raise SupervisorError(f"not ready after {deadline_s:.0f}s: {', '.join(waiting)}\n"
                          f"{reasons}\n{tails}")


def _tail(home: Home, service: str, lines: int = 15) -> str:
    try:
        return "\n".join((home.logs / f"{service}.out").read_text().splitlines()[-lines:])
    except FileNotFoundError:
        return "(no output)"


def up(home: Home, *, wait: bool = True) -> dict[str, float]:
    """Start the stack of `home` (creating the home if missing); seconds to ready per service."""
    if not home.exists:
        home.init()
    settings = home.check()
    check_policies(home)
    if supervisor_pid(home) is not None:
        return wait_ready(home, settings, settings.supervisor.ready_timeout_seconds) if wait else {}
    busy = [settings.port_of(s) for s in SERVICES
            if not port_free(settings.bind_of(s), settings.port_of(s))]
    if busy:
        raise SupervisorError(f"ports already in use: {busy}; is another stack on this base port?")
    stop_report_file(home).unlink(missing_ok=True)
    home.logs.mkdir(mode=0o700, exist_ok=True)
    roll_over_when_full(home.logs / "supervisor.out", settings.logs)
    out_fd = os.open(home.logs / "supervisor.out", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with open(out_fd, "ab") as out:
        _spawned[home.root] = subprocess.Popen(
            [sys.executable, "-m", "sonia.supervisor", "--home", str(home.root)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True, env=dict(os.environ),
        )
    deadline = time.monotonic() + 10
    while supervisor_pid(home) is None:
        if time.monotonic() > deadline:
            raise SupervisorError(
                f"the supervisor did not start; see {home.logs / 'supervisor.out'}")
        time.sleep(0.02)
    if not wait:
        return {}
    return wait_ready(home, settings, settings.supervisor.ready_timeout_seconds)


def check_policies(home: Home) -> None:
    """Load the policy files as EVA and OpenClaw will, so a bad one fails here with exit 2
    instead of as a service that keeps exiting until `up` times out."""
    from sonia.actions.policy import load_policy

    load_policy(home.policies, forbidden_roots=[home.root, home.workspace])


def port_free(host: str, port: int) -> bool:
    """True when nothing listens on host:port (bound the way uvicorn binds: SO_REUSEADDR)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def processes_with_marker(marker: str) -> list[psutil.Process]:
    """Every live process whose environment carries this run marker."""
    found = []
    for proc in psutil.process_iter(["pid", "status"]):
        if proc.pid == os.getpid():
            continue
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if proc.environ().get(RUN_MARKER_ENV) == marker:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def down(home: Home, *, timeout: float | None = None) -> DownReport:
    """Stop the stack; return only when no process of it is left and its ports are free."""
    start = time.monotonic()
    settings = home.check()
    state = read_json(state_file(home)) or {}
    marker = state.get("marker")
    pid = supervisor_pid(home)
    report = DownReport(was_running=pid is not None, seconds=0.0)
    grace = settings.supervisor.stop_grace_seconds
    limit = timeout if timeout is not None else grace * len(SERVICES) + 10
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + limit
        while psutil.pid_exists(pid) and _alive(pid):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                report.escalations.append("supervisor")
                break
            time.sleep(0.02)
        spawned = _spawned.pop(home.root, None)
        if spawned is not None:  # this process started it: collect its exit status
            spawned.wait(timeout=10)
        stop = read_json(stop_report_file(home)) or {}
        report.escalations.extend(stop.get("escalations", []))
        report.services = stop.get("services", [])
    else:
        spawned = _spawned.pop(home.root, None)
        if spawned is not None:  # it died (a crash, a SIGKILL): collect its exit status
            try:  # wait, not poll: just after a SIGKILL it may not be a zombie yet
                spawned.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
    if marker:
        for proc in processes_with_marker(marker):
            try:
                proc.kill()
                report.leftovers_killed.append(proc.pid)
            except psutil.Error:
                pass
    deadline = time.monotonic() + 10
    while True:
        report.ports_bound = [settings.port_of(s) for s in SERVICES
                              if not port_free(settings.bind_of(s), settings.port_of(s))]
        if not report.ports_bound or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for name in SERVICES:
        (home.run / f"{name}.pid").unlink(missing_ok=True)
    report.seconds = time.monotonic() - start
    return report


def _alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def status(home: Home) -> list[ServiceStatus]:
    settings = home.check()
    state = read_json(state_file(home)) or {}
    running = supervisor_pid(home) is not None
    rows = []
    for name in SERVICES:
        info = (state.get("services") or {}).get(name, {}) if running else {}
        pid = info.get("pid")
        started = info.get("started_at")
        answer = (ask_readyz(settings, name, timeout=2.5, home=home) if running
                  else Readyz(False, None))
        rows.append(ServiceStatus(
            name=name,
            pid=pid,
            port=settings.port_of(name),
            ready=answer.ready,
            not_ready_because=answer.why_not,
            uptime_s=(time.time() - started) if (pid and started) else None,
            uss_bytes=tree_uss(pid) if pid else None,
            restarts=int(info.get("restarts", 0)),
            sandbox=answer.sandbox() if name == "openclaw" else {},
        ))
    return rows
