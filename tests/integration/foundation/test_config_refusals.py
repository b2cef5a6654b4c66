"""Each unsafe or broken configuration refuses to start: exit 2, naming what to fix."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from sonia.home import Home

pytestmark = pytest.mark.integration


def up(home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sonia", "up", "--home", str(home)],
                          capture_output=True, text=True, timeout=60)


def append_config(text: str) -> Callable[[Home], None]:
    def apply(home: Home) -> None:
        with open(home.config_file, "a") as f:
            f.write("\n" + text + "\n")
    return apply


def replace_config(old: str, new: str) -> Callable[[Home], None]:
    def apply(home: Home) -> None:
        home.config_file.write_text(home.config_file.read_text().replace(old, new))
    return apply


def chmod(rel: str, mode: int) -> Callable[[Home], None]:
    return lambda home: os.chmod(home.root / rel, mode)


def write_token(service: str, value: str) -> Callable[[Home], None]:
    def apply(home: Home) -> None:
        home.token_file(service).write_text(value)
    return apply


def remove_token(service: str) -> Callable[[Home], None]:
    return lambda home: home.token_file(service).unlink()


def share_token(home: Home) -> None:
    home.token_file("memory").write_text(home.token_file("router").read_text())


CASES: dict[str, tuple[Callable[[Home], None], str]] = {
    "unknown key": (append_config("colour = 'blue'"), "colour"),
    "unknown key in a section": (append_config("[router]\nspeed = 3"), "router.speed"),
    "wrong type": (replace_config("max_sessions = 64", "max_sessions = 'many'"),
                   "gateway.max_sessions"),
    "non-loopback bind": (replace_config('bind = "127.0.0.1"', 'bind = "0.0.0.0"'), "bind"),
    "secrets folder open to others": (chmod("secrets", 0o755), "secrets"),
    "token file readable by others": (chmod("secrets/tokens/eva", 0o644), "tokens.eva"),
    "missing token": (remove_token("voice"), "tokens.voice"),
    "short token": (write_token("router", "short"), "tokens.router"),
    "two services share a token": (share_token, "share a token"),
    "two services on one port": (append_config("[ports]\neva = 7000\ngateway = 7000"), "port"),
    "not TOML": (append_config("this is = = not toml"), "TOML"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_configuration_exits_2_with_a_clear_message(tmp_path: Path, case: str) -> None:
    home = Home.at(tmp_path / "home")
    home.init()
    break_it, expected = CASES[case]
    break_it(home)
    result = up(home.root)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "configuration error" in result.stderr
    assert expected in result.stderr.replace("\n", " ")
    assert not (home.run / "supervisor.pid").exists(), "nothing may start"
