"""The supervisor takes scheduled backups while the stack is up, prunes them, and
survives a backup that fails."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sonia.backup import list_backups
from sonia.kit.deadline import wait_until
from sonia.supervisor import control
from sonia.supervisor.state import read_json, state_file
from sonia.testing import FreshStack

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def backup_state(stack: FreshStack) -> dict[str, Any]:
    return dict((read_json(state_file(stack.home)) or {}).get("backup") or {})


def test_scheduled_backups_run_prune_and_never_crash_the_supervisor(tmp_path: Path) -> None:
    with FreshStack(tmp_path / "home") as stack:
        config = stack.home.config_file
        config.write_text(config.read_text()
                          .replace("interval_hours = 6", "interval_hours = 0.0005")
                          .replace("retention = 8", "retention = 2"))
        stack.home.backups.rmdir()
        stack.home.backups.write_text("not a folder: every backup fails")
        stack.up()

        wait_until(lambda: backup_state(stack).get("last_ok") is False, timeout=30,
                   what="a failed scheduled backup recorded")
        assert "last_error" in backup_state(stack)
        assert control.supervisor_pid(stack.home) is not None
        assert all(r.ready for r in control.status(stack.home))

        stack.home.backups.unlink()
        seen: set[str] = set()

        def three_backups_made() -> bool:
            state = backup_state(stack)
            if state.get("last_ok"):
                seen.add(str(state["last_path"]))
            return len(seen) >= 3

        wait_until(three_backups_made, timeout=60, what="three scheduled backups")
        stack.down()  # no backup in flight while we count: a stop waits for one to finish
        kept = list_backups(stack.home, verify=True)
        assert 1 <= len(kept) <= 2 and all(b.ok for b in kept)
