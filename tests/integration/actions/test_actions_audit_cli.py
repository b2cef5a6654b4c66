"""`sonia approve|deny` through the gateway, and `sonia audit verify` on a real eva.db.

The audit chain is checked after real actions, then on copies of the database
where a record was edited (after dropping the append-only triggers, as an
attacker with the file would), deleted, or moved: each is found, exit 1.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from sonia.testing import FreshStack

pytestmark = pytest.mark.integration


def sonia(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sonia", *args], capture_output=True,
                          text=True, timeout=60)


def pending(stack: FreshStack, path: str) -> str:
    answer = httpx.post(f"{stack.url('gateway')}/v1/actions", headers=stack.user_headers(),
                        json={"tool": "file.write", "args": {"path": path, "content": "x"}},
                        timeout=30)
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


def test_approve_and_deny_from_the_command_line(stack: FreshStack) -> None:
    home = str(stack.home.root)
    refused = sonia("approve", pending(stack, "cli-user.txt"), "--home", home,
                    "--key", stack.user_key)
    assert refused.returncode == 1 and "FORBIDDEN" in refused.stderr
    approved = sonia("approve", pending(stack, "cli.txt"), "--home", home,
                     "--key", stack.approver_key)
    assert approved.returncode == 0, approved.stderr
    assert '"status": "executed"' in approved.stdout
    assert (stack.home.workspace / "cli.txt").read_text() == "x"
    denied = sonia("deny", pending(stack, "cli-no.txt"), "--home", home,
                   "--key", stack.approver_key)
    assert denied.returncode == 0 and '"status": "denied"' in denied.stdout
    assert not (stack.home.workspace / "cli-no.txt").exists()


def copy_eva_db(stack: FreshStack, to: Path) -> Path:
    """A consistent copy of the live eva.db (the backup API includes its WAL)."""
    target = to / "data" / "eva.db"
    target.parent.mkdir(parents=True)
    source = sqlite3.connect(f"file:{stack.home.db_path('eva')}?mode=ro", uri=True)
    copy = sqlite3.connect(target)
    try:
        source.backup(copy)
    finally:
        source.close()
        copy.close()
    return target


def drop_triggers(conn: sqlite3.Connection) -> None:
    conn.execute("DROP TRIGGER audit_log_no_update")
    conn.execute("DROP TRIGGER audit_log_no_delete")


def edit(conn: sqlite3.Connection) -> None:
    conn.execute("UPDATE audit_log SET detail = replace(detail, 'file.write', 'file.read')"
                 " WHERE seq = 2")


def delete(conn: sqlite3.Connection) -> None:
    conn.execute("DELETE FROM audit_log WHERE seq = 3")


def reorder(conn: sqlite3.Connection) -> None:
    conn.execute("UPDATE audit_log SET seq = -2 WHERE seq = 2")
    conn.execute("UPDATE audit_log SET seq = 2 WHERE seq = 3")
    conn.execute("UPDATE audit_log SET seq = 3 WHERE seq = -2")


TAMPERING: dict[str, tuple[Callable[[sqlite3.Connection], None], str]] = {
    "edited": (edit, "record 2 was altered"),
    "deleted": (delete, "record 3 is missing"),
    "reordered": (reorder, "record 2"),
}


@pytest.fixture(scope="module")
def audited(stack: FreshStack) -> FreshStack:
    """A stack whose audit chain holds real pending, approved and executed records."""
    for name in ("audit-a.txt", "audit-b.txt"):
        approved = httpx.post(f"{stack.url('gateway')}/v1/actions/{pending(stack, name)}"
                              "/approve", headers=stack.approver_headers(), timeout=30)
        assert approved.status_code == 200, approved.text
    return stack


@pytest.mark.parametrize("how", sorted(TAMPERING))
def test_audit_verify_finds_a_tampered_record(audited: FreshStack, tmp_path: Path,
                                              how: str) -> None:
    stack = audited
    intact = sonia("audit", "verify", "--home", str(stack.home.root))
    assert intact.returncode == 0, intact.stderr
    assert "audit chain intact" in intact.stdout
    database = copy_eva_db(stack, tmp_path / "copy")
    tamper, expected = TAMPERING[how]
    conn = sqlite3.connect(database)
    try:
        drop_triggers(conn)
        tamper(conn)
        conn.commit()
    finally:
        conn.close()
    broken = sonia("audit", "verify", "--home", str(tmp_path / "copy"))
    assert broken.returncode == 1, broken.stdout
    assert expected in broken.stderr.replace("\n", " ")
