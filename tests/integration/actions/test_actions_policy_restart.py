"""A tool the policy denies is refused (and audited); idempotency survives a restart."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import pytest

from sonia.kit.db import connect
from sonia.testing import FreshStack

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def strict_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FreshStack]:
    """A stack whose policy denies file.delete outright."""
    with FreshStack(tmp_path_factory.mktemp("strict") / "home") as stack:
        tools = stack.home.policies / "tools.toml"
        tools.write_text(tools.read_text().replace(
            '[tools."file.delete"]\ntier = 3', '[tools."file.delete"]\ntier = 3\ndeny = true'))
        stack.up()
        yield stack


def act(stack: FreshStack, body: Mapping[str, object]) -> httpx.Response:
    return httpx.post(f"{stack.url('gateway')}/v1/actions", json=body,
                      headers=stack.user_headers(), timeout=30)


def test_a_tool_denied_by_policy_answers_403_and_is_audited(strict_stack: FreshStack) -> None:
    answer = act(strict_stack, {"tool": "file.delete", "args": {"path": "x.txt"}})
    assert (answer.status_code, answer.json()["code"]) == (403, "POLICY_DENIED")
    action_id = answer.json()["action_id"]
    conn = connect(strict_stack.home.db_path("eva"), readonly=True)
    try:
        kinds = [r[0] for r in conn.execute(
            "SELECT kind FROM audit_log WHERE action_id = ?", (action_id,))]
    finally:
        conn.close()
    assert kinds == ["denied"]
    approve = httpx.post(f"{strict_stack.url('gateway')}/v1/actions/{action_id}/approve",
                         headers=strict_stack.approver_headers(), timeout=30)
    assert (approve.status_code, approve.json()["code"]) == (409, "ALREADY_DECIDED")


def test_an_idempotent_answer_survives_a_restart(strict_stack: FreshStack) -> None:
    workspace: Path = strict_stack.home.workspace
    (workspace / "counter.txt").write_text("before\n")
    body = {"tool": "file.read", "args": {"path": "counter.txt"}, "idempotency_key": "r-1"}
    first = act(strict_stack, body)
    assert first.status_code == 200, first.text
    strict_stack.down()
    (workspace / "counter.txt").write_text("after\n")
    strict_stack.up()
    again = act(strict_stack, body)
    assert again.status_code == 200 and again.json() == first.json()
    assert again.json()["result"]["content"] == "before\n", "the action did not run again"
