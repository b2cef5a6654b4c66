"""The file logs of `sonia up` roll over by size (`[logs] max_bytes`, `keep`): a busy
service's log and a restarted service's captured output, nothing lost, all private."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator

import httpx
import pytest

from sonia.kit.deadline import wait_until
from sonia.kit.logfiles import read_lines, rolled, siblings
from sonia.supervisor import control
from sonia.supervisor.state import read_json, state_file
from sonia.testing import FreshStack

pytestmark = pytest.mark.integration

MAX_BYTES = 8192
REQUESTS = 120


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FreshStack]:
    with FreshStack(tmp_path_factory.mktemp("rotation") / "home",
                    config={"logs": {"max_bytes": MAX_BYTES, "keep": 500}}) as s:
        s.up()
        yield s


@pytest.fixture(scope="module")
def requests(stack: FreshStack) -> list[str]:
    """Correlation IDs of requests the gateway answered, each logged by now."""
    ids = [f"rotation-{n:04d}-{uuid.uuid4().hex[:8]}" for n in range(REQUESTS)]
    with httpx.Client(base_url=stack.url(), headers=stack.user_headers(), timeout=30) as gateway:
        for cid in ids:
            assert gateway.get("/v1/whoami", headers={"X-Correlation-ID": cid}).status_code == 200
    log = stack.home.log_file("gateway")
    wait_until(lambda: sum('"rotation-' in line for line in read_lines(log)) >= REQUESTS,
               timeout=30, what="every request in the gateway's log")
    return ids


def test_a_busy_service_log_rolls_over_and_keeps_every_request(
        stack: FreshStack, requests: list[str]) -> None:
    log = stack.home.log_file("gateway")
    lines = list(read_lines(log))
    assert [cid for cid in requests if sum(cid in line for line in lines) != 1] == []
    assert rolled(log, 1).exists(), "the log rolled over at least once"
    for path in siblings(log):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_sonia_logs_reads_across_the_roll_over(stack: FreshStack, requests: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", "sonia", "logs", "gateway", "-n", "100000",
                           "--home", str(stack.home.root)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert all(cid in done.stdout for cid in requests)


def test_a_restarted_service_s_captured_output_rolls_over(stack: FreshStack) -> None:
    """`<service>.out` is held open by the process: it rolls over when it is started again."""
    out = stack.home.logs / "eva.out"
    with open(out, "a") as handle:
        handle.write("an old traceback\n" * (MAX_BYTES // 16))
    before = int((stack.home.run / "eva.pid").read_text())
    os.kill(before, signal.SIGKILL)

    def restarted() -> bool:
        info = (read_json(state_file(stack.home)) or {}).get("services", {}).get("eva", {})
        return info.get("pid") not in (None, before)

    wait_until(restarted, timeout=30, what="eva restarted")
    wait_until(lambda: control.is_ready(stack.settings, "eva"), timeout=30, what="eva ready")
    assert "an old traceback" in rolled(out, 1).read_text()
    assert "an old traceback" not in (out.read_text() if out.exists() else "")
    assert stat.S_IMODE(rolled(out, 1).stat().st_mode) == 0o600
