"""`sonia chat --tools`: the model may use Sonia's tools, and approvals happen in place.

Each message goes to `POST /v1/chat` in the session (the reply comes whole, not
streamed). When the turn waits for an approval, the request is shown inline:
the tool, its arguments, the plan hash, and the untrusted sources that were in
the model's context. With an approver key (`--approver-key` or
`SONIA_APPROVER_KEY`) the next line answers it: `a` approves, `d` denies,
anything else leaves it pending (an approver can decide later with
`POST /v1/actions/{id}/approve`). After a decision the turn resumes at the
gateway and its continuation is printed, down to the next approval or the
reply. Without an approver key the request is only shown.
"""

from __future__ import annotations

import json
from typing import Any, TextIO

import httpx


def problem_of(response: httpx.Response) -> str:
    """`CODE: detail` of a problem+json answer (or its HTTP status), for the terminal."""
    try:
        body = response.json()
        return f"{body.get('code')}: {body.get('detail')}"
    except ValueError:
        return f"HTTP {response.status_code}"

__all__ = ["ActingChat", "problem_of"]




class ActingChat:
    def __init__(self, http: httpx.Client, out: TextIO, approver_key: str | None) -> None:
        self.http = http
        self.out = out
        self.approver = ({"Authorization": f"Bearer {approver_key}"}
                         if approver_key else None)

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def exchange(self, session_id: str, message: str, lines: TextIO) -> None:
        """One message: the reply, or each approval it waits for and what followed."""
        response = self.http.post("/v1/chat", json={"message": message,
                                                    "session_id": session_id}, timeout=300)
        if response.status_code != 200:
            self._write(f"sonia> [{problem_of(response)}]\n")
            return
        turn = response.json()
        turn_id = str(turn["agent_turn_id"])
        while turn.get("status") == "pending_approval":
            pending = turn.get("pending_approval") or turn.get("pending") or {}
            self._show(pending)
            if self.approver is None:
                self._write(f"  waiting for an approver (action {pending.get('action_id')})\n")
                return
            self._write("  approve? [a]pprove, [d]eny, Enter leaves it pending: ")
            choice = lines.readline().strip().lower()
            if choice not in ("a", "d"):
                self._write(f"\n  left pending (action {pending.get('action_id')})\n")
                return
            verb = "approve" if choice == "a" else "deny"
            decided = self.http.post(f"/v1/actions/{pending.get('action_id')}/{verb}",
                                     headers=self.approver, timeout=300)
            if decided.status_code != 200:
                self._write(f"\n  [{problem_of(decided)}]\n")
                return
            self._write(f"\n  {decided.json().get('status')}\n")
            shown = self.http.get(f"/v1/turns/{turn_id}")
            if shown.status_code != 200:
                self._write(f"  [{problem_of(shown)}]\n")
                return
            turn = shown.json()
        if turn.get("status") == "failed":
            error = turn.get("error") or {}
            self._write(f"sonia> [{error.get('code')}: {error.get('detail')}]\n")
            return
        by = f"  [{turn['provider']}]" if turn.get("provider") else ""
        self._write(f"sonia> {turn.get('reply') or ''}{by}\n")

    def _show(self, pending: dict[str, Any]) -> None:
        sources = pending.get("untrusted_sources") or []
        self._write(
            f"sonia wants to run {pending.get('tool')} {json.dumps(pending.get('args'))}\n"
            f"  action {pending.get('action_id')}, tier {pending.get('tier')}, "
            f"plan {str(pending.get('plan_hash'))[:16]}\n"
            + (f"  untrusted content in context: {', '.join(sources)}\n" if sources else ""))
