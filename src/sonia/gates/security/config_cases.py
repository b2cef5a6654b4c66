"""Unsafe or broken configurations, each of which must refuse to start (exit 2).

One table, used by the configuration tests and by the security gate alike. A
case breaks a copy of a fresh home, then runs either `sonia up` on it (settings
and secrets are checked before anything starts) or one service directly
(`python -m sonia.services eva|openclaw`: the policy files are loaded inside
the service's `create`, before it binds a port). Passing means exit code 2, a
message that says "configuration error" and names what to fix, and, for `up`,
no supervisor left behind.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from sonia.home import Home
from sonia.supervisor import control

__all__ = ["CONFIG_CASES", "ConfigCase", "ConfigOutcome", "run_config_case"]

Breaker = Callable[[Home], None]
SAFETY_DEADLINE_S = 300.0
"""Only a safety net. A case ends when its command exits or what it starts is up (the
service listens on a port, or a supervisor runs), so a loaded machine makes a case
slower, never wrong: a refusal that took 31 s under six parallel cases was once
judged a failure by a 30 s timeout."""
POLL_S = 0.05


def append_config(text: str) -> Breaker:
    def apply(home: Home) -> None:
        with open(home.config_file, "a") as f:
            f.write("\n" + text + "\n")
    return apply


def replace_config(old: str, new: str) -> Breaker:
    def apply(home: Home) -> None:
        home.config_file.write_text(home.config_file.read_text().replace(old, new))
    return apply


def chmod(rel: str, mode: int) -> Breaker:
    return lambda home: os.chmod(home.root / rel, mode)


def write_token(service: str, value: str) -> Breaker:
    def apply(home: Home) -> None:
        home.token_file(service).write_text(value)
    return apply


def remove_token(service: str) -> Breaker:
    return lambda home: home.token_file(service).unlink()


def share_token(home: Home) -> None:
    home.token_file("memory").write_text(home.token_file("router").read_text())


def append_policy(name: str, text: str) -> Breaker:
    def apply(home: Home) -> None:
        with open(home.policies / name, "a") as f:
            f.write("\n" + text + "\n")
    return apply


def replace_policy(name: str, old: str, new: str) -> Breaker:
    def apply(home: Home) -> None:
        path = home.policies / name
        text = path.read_text()
        if old not in text:
            raise AssertionError(f"{old!r} is not in {path}: the case no longer applies")
        path.write_text(text.replace(old, new, 1))
    return apply


def remove_policy(name: str) -> Breaker:
    return lambda home: (home.policies / name).unlink()


def binary_inside_home(home: Home) -> None:
    """A copy of `ls` inside the home, which tools could replace."""
    target = home.root / "bin" / "lsx"
    target.parent.mkdir(exist_ok=True)
    shutil.copy2("/bin/ls" if os.path.exists("/bin/ls") else "/usr/bin/ls", target)
    os.chmod(target, 0o755)
    append_policy("allowlist.toml", f'[commands.lsx]\nbinary = "{target}"\ntier = 1')(home)


def writable_binary(home: Home) -> None:
    """A binary anyone could replace: mode 777, outside the home."""
    target = home.root.parent / f"{home.root.name}-bin" / "lsw"
    target.parent.mkdir(exist_ok=True)
    shutil.copy2("/bin/ls" if os.path.exists("/bin/ls") else "/usr/bin/ls", target)
    os.chmod(target, 0o777)
    append_policy("allowlist.toml", f'[commands.lsw]\nbinary = "{target}"\ntier = 1')(home)


@dataclass(frozen=True)
class ConfigCase:
    """One broken home: how to break it, what the message must name, what to run."""

    name: str
    breaks: Breaker
    expected: str
    command: str = "up"
    """`up`, or the name of a service to run directly."""


def _cases(*cases: ConfigCase) -> dict[str, ConfigCase]:
    return {case.name: case for case in cases}


CONFIG_CASES: dict[str, ConfigCase] = _cases(
    # settings and secrets, refused by `sonia up` before anything starts
    ConfigCase("unknown key", append_config("colour = 'blue'"), "colour"),
    ConfigCase("unknown key in a section", append_config("[router]\nspeed = 3"),
               "router.speed"),
    ConfigCase("wrong type", replace_config("max_sessions = 64", "max_sessions = 'many'"),
               "gateway.max_sessions"),
    ConfigCase("non-loopback bind", replace_config('bind = "127.0.0.1"', 'bind = "0.0.0.0"'),
               "bind"),
    ConfigCase("one service beyond loopback without TLS",
               append_config('[binds]\ngateway = "0.0.0.0"'), "binds.gateway"),
    ConfigCase("a TLS certificate without its key",
               append_config('[tls]\ncert_file = "secrets/server.pem"'), "tls.key_file"),
    ConfigCase("an upstream on another host in clear text",
               append_config('[upstreams]\nmemory = "http://10.0.0.7:7020"'), "upstreams"),
    ConfigCase("secrets folder open to others", chmod("secrets", 0o755), "secrets"),
    ConfigCase("token file readable by others", chmod("secrets/tokens/eva", 0o644),
               "tokens.eva"),
    ConfigCase("grant key readable by others", chmod("secrets/eva_grant_key.pem", 0o644),
               "eva_grant_key.pem"),
    ConfigCase("missing token", remove_token("voice"), "tokens.voice"),
    ConfigCase("short token", write_token("router", "short"), "tokens.router"),
    ConfigCase("two services share a token", share_token, "share a token"),
    ConfigCase("two services on one port",
               append_config("[ports]\neva = 7000\ngateway = 7000"), "port"),
    ConfigCase("not TOML", append_config("this is = = not toml"), "TOML"),
    ConfigCase("unknown sandbox level", append_config('[openclaw]\nsandbox = "none"'),
               "openclaw.sandbox"),
    ConfigCase("grant lifetime too long", append_config("[eva]\ngrant_ttl_seconds = 3600"),
               "eva.grant_ttl_seconds"),
    # policies, refused by the services that load them (EVA and OpenClaw)
    ConfigCase("policy: unknown key", append_policy("tools.toml", "colour = 'blue'"),
               "unknown key", "eva"),
    ConfigCase("policy: tier out of range",
               replace_policy("tools.toml", "tier = 0", "tier = 7"), "tools.toml", "eva"),
    ConfigCase("policy: missing tools file", remove_policy("tools.toml"), "missing", "eva"),
    ConfigCase("policy: not TOML", append_policy("allowlist.toml", "x = = y"),
               "not valid TOML", "eva"),
    ConfigCase("policy: a shell in the allowlist",
               append_policy("allowlist.toml", '[commands.bash]\nbinary = "/bin/bash"\n'
                                               "tier = 1"), "shell", "eva"),
    ConfigCase("policy: an interpreter under another name",
               append_policy("allowlist.toml", '[commands.py]\nbinary = "/usr/bin/python3"\n'
                                               "tier = 1"), "command py", "eva"),
    ConfigCase("policy: a relative binary",
               append_policy("allowlist.toml", '[commands.foo]\nbinary = "bin/foo"\ntier = 1'),
               "relative", "eva"),
    ConfigCase("policy: a binary inside the home", binary_inside_home, "inside", "eva"),
    ConfigCase("policy: a binary others can write", writable_binary,
               "writable by group or others", "eva"),
    ConfigCase("policy: find -exec allowed",
               replace_policy("allowlist.toml", 'flags = ["-print",',
                              'flags = ["-exec", "-print",'),
               "may never be allowed", "eva"),
    ConfigCase("policy: OpenClaw refuses a shell too",
               append_policy("allowlist.toml", '[commands.sh]\nbinary = "/bin/sh"\ntier = 1'),
               "shell", "openclaw"),
)
"""Every case, by name."""


@dataclass(frozen=True)
class ConfigOutcome:
    case: str
    command: list[str]
    exit_code: int | None
    stderr: str
    started: bool
    passed: bool
    why: str


def _listening(pid: int) -> bool:
    """The process listens on a socket: the service started despite its configuration."""
    try:
        return any(c.status == psutil.CONN_LISTEN
                   for c in psutil.Process(pid).net_connections(kind="inet"))
    except psutil.Error:
        return False


def _refused_or_started(argv: list[str], home: Home, *, up: bool
                        ) -> tuple[int | None, str, bool]:
    """Run `argv` until it exits or starts: (exit code or None, stderr, started)."""
    with tempfile.TemporaryFile() as err:  # a file, not a pipe: nothing to drain meanwhile
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=err)
        deadline = time.monotonic() + SAFETY_DEADLINE_S
        started = False
        try:
            while proc.poll() is None and time.monotonic() < deadline:
                started = (control.supervisor_pid(home) is not None if up
                           else _listening(proc.pid))
                if started:
                    break
                time.sleep(POLL_S)
        finally:
            if proc.poll() is None:
                proc.kill()
            code = proc.wait()
        if up:
            started = started or control.supervisor_pid(home) is not None
        err.seek(0)
        stderr = err.read().decode("utf-8", "replace")
    return (None if started or code < 0 else code), stderr, started


def run_config_case(case: ConfigCase, template: Home, workdir: Path) -> ConfigOutcome:
    """Break a copy of `template` (an initialised home) under `workdir` and try to start it."""
    slug = "".join(c if c.isalnum() else "-" for c in case.name).strip("-")
    copy = Home.at(workdir / slug)
    if copy.root.exists():
        shutil.rmtree(copy.root)
    shutil.copytree(template.root, copy.root, symlinks=True)
    case.breaks(copy)
    if case.command == "up":
        argv = [sys.executable, "-m", "sonia", "up", "--home", str(copy.root)]
    else:
        argv = [sys.executable, "-m", "sonia.services", case.command, "--home", str(copy.root)]
    code, stderr, started = _refused_or_started(argv, copy, up=case.command == "up")
    if started and case.command == "up":
        try:
            control.down(copy)
        except Exception:  # the broken home may not even load; the verdict is failed anyway
            pass
    flat = stderr.replace("\n", " ")
    why = ""
    if started:
        why = ("a supervisor was started" if case.command == "up"
               else f"sonia-{case.command} started and listened despite the configuration")
    elif code != 2:
        why = f"exit code {code}, not 2"
    elif "configuration error" not in stderr:
        why = "the message does not say 'configuration error'"
    elif case.expected not in flat:
        why = f"the message does not name {case.expected!r}"
    shown = [part.replace(str(workdir), "<workdir>") for part in argv]
    return ConfigOutcome(case.name, shown, code, stderr[-2000:], started, not why, why)
