"""The shipped systemd units: valid for systemd itself, ordered as readiness needs,
hardened, and written for an installation by `sonia systemd install`."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sonia import SERVICES
from sonia import systemd as units
from sonia.home import Home
from sonia.services.runner import build_app

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None,
    reason="systemd-analyze is not installed (Debian package systemd): the units are "
           "checked here only by their text")

CONFINED = ("PrivateUsers=yes", "RestrictNamespaces=yes", "ProtectKernelTunables=yes",
            "ProtectKernelLogs=yes", "ProtectProc=invisible", "SystemCallFilter=@system-service")
"""What every service unit but OpenClaw's has, and bubblewrap cannot work under."""

HARDENING = ("NoNewPrivileges=yes", "CapabilityBoundingSet=", "ProtectSystem=strict",
             "ProtectHome=yes", "PrivateTmp=yes", "PrivateDevices=yes", "PrivateMounts=yes",
             "ProtectKernelModules=yes", "ProtectControlGroups=yes", "RestrictSUIDSGID=yes",
             "LockPersonality=yes", "UMask=0077", "SystemCallArchitectures=native")
"""What every service unit has, OpenClaw's included."""


def directives(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith(("#", "["))]


def values(text: str, key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in directives(text) if line.startswith(f"{key}=")]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The units as `sonia systemd install` writes them for this virtualenv."""
    dest = tmp_path_factory.mktemp("units")
    done = subprocess.run([sys.executable, "-m", "sonia", "systemd", "install", "--dest",
                           str(dest), "--sonia", str(Path(sys.executable).parent / "sonia"),
                           "--user", "sonia-test", "--group", "sonia-test"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "systemctl enable" in done.stdout
    return dest


def test_every_service_has_a_template_and_the_stack_a_target() -> None:
    assert sorted(units.units()) == sorted(
        [f"sonia-{s}@.service" for s in SERVICES]
        + ["sonia@.target", "sonia-backup@.service", "sonia-backup@.timer"])


@needs_systemd_analyze
def test_systemd_finds_nothing_wrong_with_the_installed_units(installed: Path) -> None:
    """`systemd-analyze verify` on one instance of each template; any remark fails."""
    names = [f"{name.replace('@.', '@prod.')}" for name in sorted(units.units())]
    done = subprocess.run([str(SYSTEMD_ANALYZE), "verify", "--man=no", *names],
                          cwd=installed, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr, done.stdout) == (0, "", "")


@needs_systemd_analyze
def test_systemd_reports_a_broken_unit(installed: Path, tmp_path: Path) -> None:
    """The check above can fail: a misspelt option and a missing executable are both seen."""
    text = (installed / "sonia-eva@.service").read_text()
    broken = text.replace("PrivateTmp=yes", "PrivateTmpp=yes")
    broken = re.sub(r"^ExecStart=\S+", "ExecStart=/nonexistent/sonia", broken, flags=re.M)
    (tmp_path / "sonia-eva@.service").write_text(broken)
    done = subprocess.run([str(SYSTEMD_ANALYZE), "verify", "--man=no", "sonia-eva@prod.service"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert "PrivateTmpp" in done.stderr and "/nonexistent/sonia" in done.stderr


def test_install_changes_only_the_executable_and_the_account(installed: Path) -> None:
    sonia = str(Path(sys.executable).parent / "sonia")
    for name, shipped in units.units().items():
        written = (installed / name).read_text()
        expected = shipped.replace(units.SHIPPED_SONIA, sonia)
        expected = re.sub(r"^User=sonia$", "User=sonia-test", expected, flags=re.M)
        expected = re.sub(r"^Group=sonia$", "Group=sonia-test", expected, flags=re.M)
        assert written == expected, name
        assert (installed / name).stat().st_mode & 0o444 == 0o444, "systemd reads it"


def test_install_refuses_what_a_unit_file_cannot_hold() -> None:
    text = units.units()["sonia-eva@.service"]
    for bad in ({"sonia": "sonia"}, {"user": "two words"}, {"group": "%n"}):
        options = {"sonia": "/opt/sonia/bin/sonia", "user": "sonia", "group": "sonia"} | bad
        with pytest.raises(ValueError):
            units.render(text, **options)


def test_each_service_runs_in_the_foreground_and_tells_systemd_when_it_is_ready() -> None:
    for service in SERVICES:
        text = units.units()[f"sonia-{service}@.service"]
        assert values(text, "ExecStart") == [f"{units.SHIPPED_SONIA} run {service}"]
        assert values(text, "Type") == ["notify"]
        assert values(text, "Environment") == ["SONIA_HOME=%S/sonia/%i"]
        assert values(text, "StateDirectory") == ["sonia/%i"]
        assert values(text, "RestartPreventExitStatus") == ["2"], "a config error stays down"
        assert values(text, "WantedBy") == ["sonia@%i.target"]
        assert values(text, "PartOf") == ["sonia@%i.target"]


def test_a_service_starts_after_the_services_its_readiness_waits_for(tmp_path: Path) -> None:
    """`After=` is read against the real apps' readiness checks, so the two cannot drift."""
    home = Home.at(tmp_path / "home")
    home.init()
    for service in SERVICES:
        app, _ = build_app(service, home)
        needs = sorted(set(app.state.readiness.checks) & set(SERVICES))
        after = values(units.units()[f"sonia-{service}@.service"], "After")[0].split()
        assert sorted(a.removeprefix("sonia-").removesuffix("@%i.service")
                      for a in after if a.startswith("sonia-")) == needs, service


def test_every_service_runs_as_an_ordinary_user_without_privileges() -> None:
    for service in SERVICES:
        lines = directives(units.units()[f"sonia-{service}@.service"])
        assert "User=sonia" in lines and "Group=sonia" in lines
        missing = [option for option in HARDENING if option not in lines]
        assert not missing, f"{service}: {missing}"


def test_only_openclaw_leaves_out_what_bubblewrap_cannot_work_under() -> None:
    for service in SERVICES:
        text = units.units()[f"sonia-{service}@.service"]
        present = [option for option in CONFINED if option in directives(text)]
        if service == "openclaw":
            assert present == []
            for option in ("RestrictNamespaces", "PrivateUsers", "ProtectKernelTunables",
                           "ProtectProc"):
                assert option in text, f"the unit says why {option} is left out"
            assert values(text, "SystemCallFilter") == ["@system-service @mount"]
        else:
            assert present == list(CONFINED), service


@needs_systemd_analyze
def test_systemd_rates_the_services_well_exposed_to_little(installed: Path) -> None:
    """`systemd-analyze security` (0 safest, 10 most exposed) on the unit files alone."""
    scores = {}
    for service in (*SERVICES, "backup"):
        done = subprocess.run(
            [str(SYSTEMD_ANALYZE), "security", "--offline=true", "--no-pager",
             f"sonia-{service}@prod.service"],
            cwd=installed, capture_output=True, text=True, timeout=60)
        if "--offline" in done.stderr:
            pytest.skip("this systemd-analyze cannot rate unit files offline (systemd < 250)")
        found = re.search(r"Overall exposure level for \S+: ([\d.]+)", done.stdout)
        assert found is not None, done.stdout[-2000:] + done.stderr
        scores[service] = float(found.group(1))
    assert scores.pop("openclaw") <= 3.5, "bubblewrap's needs cost a little"
    assert max(scores.values()) <= 2.0, scores
