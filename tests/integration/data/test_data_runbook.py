"""The runbook (docs/operations.md) works: each failure scenario's commands, run for real.

Each scenario is set up for real against a running stack in a temporary home (a
service SIGKILLed, a database overwritten, backups filling the disk, the home
deleted); then the `sh` blocks under the scenario's heading are run with bash
(`-e`: any failing command fails the test), with `$SONIA_HOME` (and `$BACKUP`)
set and `sonia` on the PATH; then the outcome is checked through the API. The
commands are read from the document, so it cannot drift from the code.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from sonia.backup import create_backup, database_facts, list_backups
from sonia.home import Home
from sonia.kit.deadline import wait_until
from sonia.supervisor import control
from sonia.supervisor.state import read_json, state_file
from sonia.testing import FreshStack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RUNBOOK = Path(__file__).resolve().parents[3] / "docs" / "operations.md"
SCENARIOS = ("a service crashes", "a database is corrupt", "the disk is full",
             "the home is lost")


def scenario_commands(title: str) -> str:
    """The `sh` blocks of one `## Scenario: <title>` section, joined."""
    text = RUNBOOK.read_text()
    sections = re.split(r"^## ", text, flags=re.MULTILINE)
    for section in sections:
        heading, _, body = section.partition("\n")
        if heading.strip().lower() == f"scenario: {title}":
            blocks = re.findall(r"^```sh\n(.*?)^```", body, flags=re.MULTILINE | re.DOTALL)
            assert blocks, f"scenario {title!r} has no sh block"
            return "\n".join(blocks)
    raise AssertionError(f"docs/operations.md has no section 'Scenario: {title}'")


def run_runbook(title: str, home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    bin_dir = str(Path(sys.executable).parent)
    environment = {**os.environ, "SONIA_HOME": str(home), **env,
                   "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(["bash", "-e", "-c", scenario_commands(title)], env=environment,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, f"runbook commands failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def remember(stack: FreshStack, content: str) -> str:
    r = httpx.post(stack.url() + "/v1/memory", json={"content": content},
                   headers=stack.user_headers(), timeout=30)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def recall(url: str, key: str, memory_id: str) -> str | None:
    r = httpx.get(f"{url}/v1/memory/{memory_id}", headers={"Authorization": f"Bearer {key}"},
                  timeout=30)
    return str(r.json()["content"]) if r.status_code == 200 else None


def wreck_memory_database(home: Home) -> None:
    """SIGKILL the memory service and overwrite the start of its database."""
    os.kill(int((home.run / "memory.pid").read_text()), signal.SIGKILL)
    db = home.db_path("memory")
    with open(db, "r+b") as handle:
        handle.write(b"\xde\xad" * 2048)
    for side in ("-wal", "-shm"):
        Path(f"{db}{side}").unlink(missing_ok=True)


def test_every_scenario_of_the_runbook_has_commands() -> None:
    for title in SCENARIOS:
        assert "sonia" in scenario_commands(title)


def restarts(home: Home, service: str) -> int:
    state = read_json(state_file(home)) or {}
    return int(state.get("services", {}).get(service, {}).get("restarts", 0))


def test_a_crashed_service_is_back_after_the_runbook(stack: FreshStack) -> None:
    before = restarts(stack.home, "memory")
    os.kill(int((stack.home.run / "memory.pid").read_text()), signal.SIGKILL)
    wait_until(lambda: restarts(stack.home, "memory") == before + 1, timeout=30,
               what="memory restarted")

    proc = run_runbook("a service crashes", stack.home.root)

    assert "memory" in proc.stdout
    rows = {r.name: r for r in control.status(stack.home)}
    assert rows["memory"].ready and rows["memory"].restarts == before + 1


def test_a_corrupt_database_is_restored_from_the_newest_good_backup(
        own_stack: FreshStack) -> None:
    kept = remember(own_stack, "the boat is called Mirabel")
    create_backup(own_stack.home)
    wreck_memory_database(own_stack.home)

    run_runbook("a database is corrupt", own_stack.home.root)
    own_stack.running = True  # the runbook started it again: the fixture stops it

    assert recall(own_stack.url(), own_stack.user_key, kept) == "the boat is called Mirabel"
    own_stack.down()
    assert database_facts(own_stack.home.db_path("memory"))["integrity_check"] == "ok"


def test_the_disk_full_runbook_frees_backups_and_leaves_the_stack_ready(
        stack: FreshStack) -> None:
    for _ in range(4):
        create_backup(stack.home)

    run_runbook("the disk is full", stack.home.root)

    assert len(list_backups(stack.home, verify=True)) == 2
    assert all(r.ready for r in control.status(stack.home))


def test_a_lost_home_is_rebuilt_from_an_offsite_backup(own_stack: FreshStack,
                                                         tmp_path: Path) -> None:
    kept = remember(own_stack, "the spare key is under the blue pot")
    backup = create_backup(own_stack.home, tmp_path / "offsite")
    carried = tmp_path / "carried-backup.key"  # kept apart from the home, as the runbook says
    shutil.copy2(own_stack.home.backup_key_file, carried)
    url = own_stack.url()
    own_stack.down()
    shutil.rmtree(own_stack.home.root)

    old_id = own_stack.user_key.split("-")[2]  # memories belong to the key id
    run_runbook("the home is lost", own_stack.home.root, BACKUP=str(backup),
                BACKUP_KEY=str(carried), OLD_KEY_ID=old_id)
    own_stack.running = True

    new_key = (own_stack.home.root / "new-user-key").read_text().strip()
    assert recall(url, new_key, kept) == "the spare key is under the blue pot"
    assert recall(url, own_stack.user_key, kept) is None, "old keys are not restored"
