"""Gate chaos: faults under traffic lose nothing, and every service comes back.

In a fresh home whose memory service sits behind a loopback `TcpProxy` (the
`[upstreams]` setting sends every internal call to memory through it), with
traffic of every kind running (memory writes and searches, chat turns, session
start/stop churn, voice turns over a session's WebSocket stream, tier-0 actions,
tier-2 actions that are proposed and then approved), the gate follows the fault
lifecycle for each fault in turn: steady state, inject, wait for the effect,
recover, wait for recovery.

    SIGKILL   each service, `kills_per_service` times (the supervisor restarts it)
    SIGSTOP   the services of `stop_services`, for longer than the internal client
              timeout, then SIGCONT
    drop      the proxy resets every connection to memory, then passes again
    delay     the proxy holds every chunk beyond the client timeout, then passes
    pg-restart  with `storage = "postgresql"` (`--storage postgresql`): the stack runs
              on a PostgreSQL server of the run's own, stopped under load with
              `pg_ctl stop -m fast`, started again, then once more with `-m
              immediate` (crash recovery at the start); the services reconnect on
              their own (`kit/pg.py`: a broken connection is dropped, the next call
              opens a new one)

Recovery is measured per fault: from the fault (kill, SIGCONT, proxy back to
pass) to the service's /readyz answering 200, and to the first successful
end-to-end request of a kind that goes through the service
(`chaos_evidence.DEPENDENTS`: voice by voice turns, memory by memory writes,
router by chat, openclaw by tier-0 actions, eva by proposals). While memory is cut off,
the latency of the requests that failed shows whether a dead dependency gives a
fast 503 (circuit breaker) instead of requests piling up behind timeouts.

After the traffic stops and the stack is ready again, the traffic finishes what
it owns, as a client would: approvals and stops of its own sessions whose
outcome was unknown are retried, and it stops its chat session. Then the
sessions still active are counted, without the gate stopping any (one left
active is stuck), the stack is stopped, and the operation history is held
against what was stored (`history.check_history`): zero tolerance on lost
acknowledged writes, double executions and executions without an approval.

Evidence: `chaos-report.json` and the full history, one operation a line, in
`chaos-history.jsonl`; `judge(run_dir)` (in `chaos_evidence`) derives the
verdict from those two files alone, and `run` returns it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from sonia import SERVICES
from sonia.actions.grants import DEFAULT_SKEW_SECONDS, MAX_LIFETIME_SECONDS
from sonia.gates.chaos import history as h
from sonia.gates.chaos.evidence import (
    CLIENT_TIMEOUT_S,
    DEPENDENTS,
    HISTORY,
    MEMORY_KINDS,
    PG_KINDS,
    PG_RESTART,
    PG_RESTART_MODES,
    REPORT,
    Fault,
    fast_fail,
    judge,
    observe,
    recovery,
    supervisor_restarts,
)
from sonia.gates.chaos.history import History, Operation
from sonia.gates.chaos.tcp_proxy import TcpProxy
from sonia.gates.common.evidence import Verdict, capture_environment, write_json
from sonia.gates.common.processes import orphans
from sonia.gates.common.progress import GateProgress
from sonia.gates.common.storage import gate_storage
from sonia.pgserver import PostgresServer
from sonia.supervisor.process import RUN_MARKER_ENV
from sonia.testing import FreshStack

__all__ = ["EVIDENCE_FILES", "PROFILES", "Chaos", "ChaosProfile", "judge", "run"]

POLL_S = 0.05


@dataclass(frozen=True)
class ChaosProfile:
    kills_per_service: int
    stop_services: tuple[str, ...]
    stop_seconds: float
    drop_seconds: float
    delay_seconds: float
    proxy_delay_s: float
    warmup_seconds: float
    settle_seconds: float
    cooldown_seconds: float
    recovery_deadline_s: float
    memory_write_rate: float
    memory_search_rate: float
    chat_rate: float
    session_rate: float
    action_read_rate: float
    action_rate: float
    min_ok_per_kind: int
    voice_rate: float = 0.5
    request_timeout_s: float = 30.0
    max_in_flight_per_kind: int = 64
    storage: str = "sqlite"
    """where the stack keeps its ledgers: sqlite, or postgresql (a server of the run's own,
    restarted under load once per mode of `PG_RESTART_MODES`)"""
    pg_down_seconds: float = 3.0
    """how long PostgreSQL stays stopped in each restart (then it is started again)"""


EVIDENCE_FILES: tuple[str, ...] = ("chaos-report.json", "chaos-history.jsonl")
"""What a run leaves in its run directory (the registry checks for each)."""

PROFILES = {
    "quick": ChaosProfile(
        kills_per_service=2, stop_services=("memory",), stop_seconds=12.0,
        drop_seconds=5.0, delay_seconds=12.0, proxy_delay_s=12.0,
        warmup_seconds=3.0, settle_seconds=0.5, cooldown_seconds=3.0,
        recovery_deadline_s=45.0, memory_write_rate=2.0, memory_search_rate=1.0,
        chat_rate=1.0, session_rate=1.0, action_read_rate=0.5, action_rate=1.0,
        min_ok_per_kind=3),
    "release": ChaosProfile(
        kills_per_service=5, stop_services=SERVICES, stop_seconds=15.0,
        drop_seconds=30.0, delay_seconds=30.0, proxy_delay_s=15.0,
        warmup_seconds=10.0, settle_seconds=5.0, cooldown_seconds=10.0,
        recovery_deadline_s=45.0, memory_write_rate=4.0, memory_search_rate=2.0,
        chat_rate=2.0, session_rate=1.0, action_read_rate=1.0, action_rate=2.0,
        min_ok_per_kind=20, voice_rate=1.0, pg_down_seconds=10.0),
}


def _wall() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


class Chaos:
    """One run of traffic and faults against a running stack (the async part of the gate)."""

    def __init__(self, stack: FreshStack, proxy: TcpProxy, profile: ChaosProfile,
                 progress: GateProgress, postgres: PostgresServer | None = None) -> None:
        self.stack = stack
        self.postgres = postgres
        self.proxy = proxy
        self.profile = profile
        self.progress = progress
        self.history = History()
        self.faults: list[Fault] = []
        self.skipped: dict[str, int] = {kind: 0 for kind in h.KINDS}
        self.in_flight: dict[str, int] = {kind: 0 for kind in h.KINDS}
        self.approve_pending: dict[str, str] = {}  # action key -> action id, not yet ok
        self.approve_due: dict[str, float] = {}  # action key -> EVA's approvable_again_at
        self.sessions: dict[str, bool] = {}  # acknowledged session id -> stop acknowledged
        self.chat_session: str | None = None
        self.sessions_report: dict[str, Any] = {}
        self.voice_url = stack.url("gateway").replace("http://", "ws://", 1)
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._ok_log: list[Operation] = []
        timeout = httpx.Timeout(profile.request_timeout_s, connect=5.0)
        self.client = httpx.AsyncClient(base_url=stack.url("gateway"), timeout=timeout,
                                        headers=stack.user_headers(),
                                        limits=httpx.Limits(max_connections=400))
        self.probe = httpx.AsyncClient(timeout=httpx.Timeout(1.0))

    # -- requests -------------------------------------------------------------------
    async def send(self, kind: str, key: str, method: str, path: str, *,
                   body: Any = None, approver: bool = False, attempt: int = 1,
                   keep: Sequence[str] = ("id",),
                   keep_on_failure: Sequence[str] = ()) -> Operation:
        """Send one request and record it: ok (2xx), failed (error answer or never sent),
        unknown (sent, no answer)."""
        op = self.history.invoke(kind, key, attempt=attempt)
        headers = self.stack.approver_headers() if approver else None
        try:
            response = await self.client.request(method, path, json=body, headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            self.history.complete(op, "failed", error=type(exc).__name__)
            return op
        except (httpx.HTTPError, asyncio.CancelledError) as exc:
            self.history.complete(op, "unknown", error=type(exc).__name__)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return op
        try:
            data = response.json()
        except ValueError:
            data = None
        data = data if isinstance(data, dict) else {}
        if response.status_code < 300:
            self.history.complete(op, "ok", status=response.status_code,
                                  result={k: data[k] for k in keep if k in data})
            self._ok_log.append(op)
        else:
            code = data.get("code")
            self.history.complete(op, "failed", status=response.status_code,
                                  code=code if isinstance(code, str) else None,
                                  result={k: data[k] for k in keep_on_failure if k in data})
        return op

    async def memory_write(self) -> None:
        key = uuid.uuid4().hex
        await self.send(h.MEMORY_WRITE, key, "POST", "/v1/memory",
                        body={"content": f"chaos memory {key}", "kind": "note"})

    async def memory_search(self) -> None:
        await self.send(h.MEMORY_SEARCH, "chaos", "GET", "/v1/memory/search?q=chaos&limit=5",
                        keep=())

    async def chat(self) -> None:
        key = uuid.uuid4().hex
        await self.send(h.CHAT, key, "POST", "/v1/chat", keep=("turn_id", "session_id"),
                        body={"message": f"chaos turn {key}", "session_id": self.chat_session})

    async def session(self) -> None:
        started = await self.send(h.SESSION_START, uuid.uuid4().hex, "POST", "/v1/sessions",
                                  body={"mode": "text"})
        session_id = started.result.get("id")
        if started.outcome != "ok" or not isinstance(session_id, str):
            return
        self.sessions[session_id] = False
        await asyncio.sleep(0.5)
        await self.stop_session(session_id)

    async def voice(self) -> None:
        """One voice turn: start a session, open its stream through the gateway, send a
        text turn, read the reply events to `response.final`, close, stop the session.

        ok: the final reply arrived, not interrupted; failed: the handshake was refused
        or the stream answered an error event; unknown: the stream broke mid-turn.
        """
        started = await self.send(h.SESSION_START, uuid.uuid4().hex, "POST", "/v1/sessions",
                                  body={"mode": "text"})
        session_id = started.result.get("id")
        if started.outcome != "ok" or not isinstance(session_id, str):
            return
        self.sessions[session_id] = False
        key = uuid.uuid4().hex
        op = self.history.invoke(h.VOICE_TURN, key)
        try:
            await self._voice_turn(op, session_id, key)
        finally:
            await self.stop_session(session_id)

    async def _voice_turn(self, op: Operation, session_id: str, key: str) -> None:
        url = f"{self.voice_url}/v1/sessions/{session_id}/stream"
        try:
            async with asyncio.timeout(self.profile.request_timeout_s):
                async with connect(url, additional_headers=self.stack.user_headers(),
                                   open_timeout=5) as ws:
                    await ws.send(json.dumps({"type": "input.text",
                                              "text": f"chaos voice {key}"}))
                    async for raw in ws:
                        event = json.loads(raw) if isinstance(raw, str) else {}
                        kind = event.get("type")
                        if kind == "response.final":
                            interrupted = bool(event.get("interrupted"))
                            self.history.complete(op, "failed" if interrupted else "ok",
                                                  code="INTERRUPTED" if interrupted else None)
                            if not interrupted:
                                self._ok_log.append(op)
                            return
                        if kind in ("error", "session.ended"):
                            code = event.get("code") or event.get("reason")
                            self.history.complete(op, "failed", code=str(code)[:60])
                            return
            self.history.complete(op, "unknown", error="stream ended before the reply")
        except (ConnectionClosed, TimeoutError, ValueError) as exc:  # before OSError
            self.history.complete(op, "unknown", error=type(exc).__name__)
        except InvalidStatus as exc:
            self.history.complete(op, "failed", status=exc.response.status_code)
        except (OSError, InvalidHandshake) as exc:  # refused: the turn never started
            self.history.complete(op, "failed", error=type(exc).__name__)
        except asyncio.CancelledError:
            self.history.complete(op, "unknown", error="CancelledError")
            raise

    async def stop_session(self, session_id: str, attempt: int = 1) -> None:
        stopped = await self.send(h.SESSION_STOP, session_id, "POST",
                                  f"/v1/sessions/{session_id}/stop", attempt=attempt,
                                  keep=("state",))
        if stopped.outcome == "ok" and stopped.result.get("state") in ("closed", "expired"):
            self.sessions[session_id] = True

    async def action_read(self) -> None:
        await self.send(h.ACTION_READ, "file.list", "POST", "/v1/actions", keep=("status",),
                        body={"tool": "file.list", "args": {"path": "."}})

    async def action(self) -> None:
        key = uuid.uuid4().hex
        proposed = await self.send(h.ACTION_PROPOSE, key, "POST", "/v1/actions",
                                   keep=("id", "status"), body={
                                       "tool": "file.write",
                                       "args": {"path": f"chaos/{key}.txt", "content": f"{key}\n",
                                                "mode": "append", "parents": True}})
        action_id = proposed.result.get("id")
        if proposed.outcome != "ok" or not isinstance(action_id, str):
            return
        self.approve_pending[key] = action_id
        await self.approve(key, action_id)

    async def approve(self, key: str, action_id: str, attempt: int = 1) -> Operation:
        """Approve; an approval that ended unknown or failed stays pending for `_settle_up`.

        A 409 with `approvable_again_at` means EVA approved it but it never ran (its grant
        may still be live): it may be approved again only from that moment (DESIGN.md,
        Actions and approvals), so the key stays pending with that due time. Any other
        409 means it ran (or was decided otherwise): nothing left to do."""
        op = await self.send(h.ACTION_APPROVE, key, "POST", f"/v1/actions/{action_id}/approve",
                             approver=True, attempt=attempt, keep=("id", "status"),
                             keep_on_failure=("approvable_again_at",))
        again_at = op.result.get("approvable_again_at")
        if op.code == "ALREADY_DECIDED" and isinstance(again_at, int | float):
            self.approve_due[key] = float(again_at)
        elif op.outcome == "ok" or op.code == "ALREADY_DECIDED":
            self.approve_pending.pop(key, None)
        return op

    # -- traffic --------------------------------------------------------------------
    def _spawn(self, kind: str, make: Callable[[], Awaitable[None]]) -> None:
        if self.in_flight[kind] >= self.profile.max_in_flight_per_kind:
            self.skipped[kind] += 1
            return

        async def one() -> None:
            self.in_flight[kind] += 1
            try:
                await make()
            finally:
                self.in_flight[kind] -= 1

        task = asyncio.create_task(one())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _stream(self, kind: str, rate: float, make: Callable[[], Awaitable[None]]) -> None:
        """Open loop: one request every 1/rate seconds, whether or not earlier ones ended."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        n = 0
        while not self._stop.is_set():
            self._spawn(kind, make)
            n += 1
            delay = start + n / rate - loop.time()
            if delay > 0:
                try:
                    await asyncio.wait_for(self._stop.wait(), delay)
                except TimeoutError:
                    pass

    async def _drain(self) -> None:
        tasks = list(self._tasks)
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=self.profile.request_timeout_s + 5)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for op in self.history.in_flight():
            self.history.complete(op, "unknown", error="abandoned")

    # -- observing the stack --------------------------------------------------------
    async def ready(self, service: str) -> bool:
        try:
            response = await self.probe.get(self.stack.url(service) + "/readyz")
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def wait_for(self, predicate: Callable[[], Awaitable[bool]], deadline_s: float
                       ) -> float | None:
        """Poll until `predicate` holds; the history time it did, or None at the deadline."""
        end = self.history.now() + deadline_s
        while self.history.now() < end:
            if await predicate():
                return self.history.now()
            await asyncio.sleep(POLL_S)
        return None

    def first_ok_after(self, kinds: Sequence[str], after_s: float) -> Operation | None:
        for op in self._ok_log:
            if op.kind in kinds and op.invoked_s >= after_s:
                return op
        return None

    async def wait_e2e(self, kinds: Sequence[str], after_s: float) -> float | None:
        async def seen() -> bool:
            return self.first_ok_after(kinds, after_s) is not None

        if await self.wait_for(seen, self.profile.recovery_deadline_s) is None:
            return None
        op = self.first_ok_after(kinds, after_s)
        return None if op is None or op.completed_s is None else op.completed_s

    async def stack_ready(self, deadline_s: float) -> bool:
        async def all_ready() -> bool:
            return all(await asyncio.gather(*(self.ready(s) for s in SERVICES)))

        return await self.wait_for(all_ready, deadline_s) is not None

    def pid_of(self, service: str) -> int | None:
        try:
            return int((self.stack.home.run / f"{service}.pid").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    @staticmethod
    def alive(pid: int) -> bool:
        try:
            status: str = psutil.Process(pid).status()
        except psutil.Error:
            return False
        return bool(status != psutil.STATUS_ZOMBIE)

    async def _recover(self, fault: Fault, service: str, since_s: float) -> None:
        """Wait for the service's /readyz and a dependent request; record both times."""
        async def up() -> bool:
            return await self.ready(service)

        ready_at = await self.wait_for(up, self.profile.recovery_deadline_s)
        e2e_at = await self.wait_e2e(DEPENDENTS[service], since_s)
        fault.recovered_at_s = since_s
        fault.ready_s = None if ready_at is None else ready_at - since_s
        fault.e2e_s = None if e2e_at is None else e2e_at - since_s
        fault.recovered = ready_at is not None and e2e_at is not None
        await self.stack_ready(self.profile.recovery_deadline_s)

    # -- faults ---------------------------------------------------------------------
    def _fault(self, kind: str, target: str, **detail: Any) -> Fault:
        fault = Fault(kind, target, self.history.now(), _wall(), dict(detail))
        self.faults.append(fault)
        return fault

    async def kill(self, service: str) -> None:
        pid = self.pid_of(service)
        if pid is None or not self.alive(pid):
            self._fault("sigkill", service, error="no live pid file")
            return
        os.kill(pid, signal.SIGKILL)
        fault = self._fault("sigkill", service, pid=pid)

        async def dead() -> bool:
            return not self.alive(pid)

        gone = await self.wait_for(dead, 5.0)
        fault.effect_s = None if gone is None else gone - fault.at_s
        await self._recover(fault, service, fault.at_s)
        fault.detail["new_pid"] = self.pid_of(service)

    async def pause(self, service: str) -> None:
        pid = self.pid_of(service)
        if pid is None or not self.alive(pid):
            self._fault("sigstop", service, error="no live pid file")
            return
        os.kill(pid, signal.SIGSTOP)
        fault = self._fault("sigstop", service, pid=pid, seconds=self.profile.stop_seconds)
        try:
            async def unready() -> bool:
                return not await self.ready(service)

            seen = await self.wait_for(unready, self.profile.stop_seconds)
            fault.effect_s = None if seen is None else seen - fault.at_s
            await asyncio.sleep(max(0.0, fault.at_s + self.profile.stop_seconds
                                    - self.history.now()))
        finally:
            os.kill(pid, signal.SIGCONT)
        resumed = self.history.now()
        fault.detail["resumed_at_s"] = round(resumed, 3)
        await self._recover(fault, service, resumed)

    async def cut(self, mode: str, seconds: float) -> None:
        """Make memory unreachable (drop) or slow (delay) through the proxy, then heal it."""
        if mode == "drop":
            self.proxy.drop()
            fault = self._fault("proxy-drop", "memory", seconds=seconds)
        else:
            self.proxy.delay(self.profile.proxy_delay_s)
            fault = self._fault("proxy-delay", "memory", seconds=seconds,
                                delay_s=self.profile.proxy_delay_s)

        async def failing() -> bool:
            return any(op.kind in MEMORY_KINDS and op.invoked_s >= fault.at_s
                       and op.outcome in ("failed", "unknown")
                       for op in self.history.ops())

        try:
            seen = await self.wait_for(failing, seconds + CLIENT_TIMEOUT_S)
            fault.effect_s = None if seen is None else seen - fault.at_s
            await asyncio.sleep(max(0.0, fault.at_s + seconds - self.history.now()))
        finally:
            self.proxy.pass_through()
        healed = self.history.now()
        fault.detail["healed_at_s"] = round(healed, 3)
        await self._recover(fault, "memory", healed)

    async def restart_postgres(self, mode: str) -> None:
        """`pg_ctl stop -m MODE`, PostgreSQL down for `pg_down_seconds`, then started again
        on the same folder and port; the services must reconnect on their own.

        Effect: a request needing PostgreSQL failed while it was down, and another
        postmaster (pid, start time) answers after it. Recovery: from the server
        answering again to every service ready and every `DEPENDENTS["postgresql"]`
        kind served end to end."""
        server = self.postgres
        assert server is not None
        pid, started = await asyncio.to_thread(server.started)
        fault = self._fault(PG_RESTART, "postgresql", mode=mode, pid=pid, started=started,
                            seconds=self.profile.pg_down_seconds)

        down_at = float("inf")

        async def failing() -> bool:  # sent once the server was down (not before)
            return any(op.kind in PG_KINDS and op.invoked_s >= down_at
                       and op.outcome in ("failed", "unknown") for op in self.history.ops())

        try:
            fault.detail["exit_code"] = await asyncio.to_thread(server.shutdown, mode)
            down_at = self.history.now()
            fault.detail["stopped_at_s"] = round(down_at, 3)
            seen = await self.wait_for(failing, self.profile.pg_down_seconds)
            fault.effect_s = None if seen is None else seen - fault.at_s
            await asyncio.sleep(max(0.0, fault.at_s + self.profile.pg_down_seconds
                                    - self.history.now()))
        finally:
            await asyncio.to_thread(server.start_again)
        back = self.history.now()
        new_pid, new_started = await asyncio.to_thread(server.started)
        fault.detail |= {"new_pid": new_pid, "new_started": new_started,
                         "back_at_s": round(back, 3)}

        async def everything_ready() -> bool:
            return all(await asyncio.gather(*(self.ready(s) for s in SERVICES)))

        ready_at = await self.wait_for(everything_ready, self.profile.recovery_deadline_s)
        ends = [await self.wait_e2e((kind,), back) for kind in DEPENDENTS["postgresql"]]
        fault.recovered_at_s = back
        fault.ready_s = None if ready_at is None else ready_at - back
        fault.e2e_s = None if None in ends else max(e for e in ends if e is not None) - back
        fault.recovered = fault.ready_s is not None and fault.e2e_s is not None

    async def _faults(self) -> None:
        p = self.profile
        restarts = PG_RESTART_MODES if self.postgres is not None else ()
        total = p.kills_per_service * len(SERVICES) + len(p.stop_services) + 2 + len(restarts)
        task = self.progress.task("chaos faults", total)
        await asyncio.sleep(p.warmup_seconds)
        for _ in range(p.kills_per_service):
            for service in SERVICES:
                await self.kill(service)
                self.progress.advance(task)
                await asyncio.sleep(p.settle_seconds)
        for service in p.stop_services:
            await self.pause(service)
            self.progress.advance(task)
            await asyncio.sleep(p.settle_seconds)
        await self.cut("drop", p.drop_seconds)
        self.progress.advance(task)
        await asyncio.sleep(p.settle_seconds)
        await self.cut("delay", p.delay_seconds)
        self.progress.advance(task)
        for mode in restarts:
            await asyncio.sleep(p.settle_seconds)
            await self.restart_postgres(mode)
            self.progress.advance(task)
        await asyncio.sleep(p.cooldown_seconds)

    # -- after the faults -----------------------------------------------------------
    async def _settle_up(self) -> None:
        """Finish what the traffic owns, now that the stack is ready: retry approvals and
        the stops of its own sessions whose outcome was unknown, stop its chat session.
        Then list the sessions still active, stopping none: those are stuck."""
        for attempt in range(2, 5):
            if not self.approve_pending:
                break
            await self._until_approvable()
            for key, action_id in list(self.approve_pending.items()):
                await self.approve(key, action_id, attempt)
        if self.chat_session is not None:
            self.sessions[self.chat_session] = False
        for attempt in range(2, 5):
            pending = [s for s, stopped in self.sessions.items() if not stopped]
            if not pending:
                break
            for session_id in pending:
                await self.stop_session(session_id, attempt)
        active = await self._active_sessions()
        self.sessions_report = {
            "acknowledged": dict(self.sessions),
            "active_at_end": active,
            "approvals_left_unknown": sorted(self.approve_pending),
        }

    async def _until_approvable(self) -> None:
        """Wait until every pending approval's last grant is dead (EVA's clock is this
        machine's), at most a grant's longest life plus the verifier's skew."""
        due = [self.approve_due[k] for k in self.approve_pending if k in self.approve_due]
        if due:
            longest = MAX_LIFETIME_SECONDS + DEFAULT_SKEW_SECONDS + 1
            await asyncio.sleep(min(max(due) - time.time() + 0.5, longest))

    async def _active_sessions(self) -> list[str] | None:
        try:
            response = await self.client.get("/v1/sessions", params={"state": "active",
                                                                     "limit": 500})
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            return None
        return [str(s["id"]) for s in response.json().get("sessions", [])]

    async def run(self) -> None:
        p = self.profile
        try:
            started = await self.send(h.SESSION_START, "chat-session", "POST", "/v1/sessions",
                                      body={"mode": "text"})
            if isinstance(started.result.get("id"), str):
                self.chat_session = str(started.result["id"])
            streams = [
                (h.MEMORY_WRITE, p.memory_write_rate, self.memory_write),
                (h.MEMORY_SEARCH, p.memory_search_rate, self.memory_search),
                (h.CHAT, p.chat_rate, self.chat),
                (h.SESSION_START, p.session_rate, self.session),
                (h.ACTION_READ, p.action_read_rate, self.action_read),
                (h.ACTION_PROPOSE, p.action_rate, self.action),
                (h.VOICE_TURN, p.voice_rate, self.voice),
            ]
            traffic = [asyncio.create_task(self._stream(k, r, m)) for k, r, m in streams if r > 0]
            try:
                await self._faults()
            finally:
                self._stop.set()
                await asyncio.gather(*traffic, return_exceptions=True)
                await self._drain()
            await self.stack_ready(p.recovery_deadline_s)
            await self._settle_up()
        finally:
            await self.client.aclose()
            await self.probe.aclose()


def run(run_dir: Path, profile: ChaosProfile, progress: GateProgress) -> Verdict:
    wall = _wall()
    with gate_storage(profile.storage) as storage:
        marker = f"chaos-{uuid.uuid4().hex}"
        os.environ[RUN_MARKER_ENV] = marker
        try:
            with TcpProxy() as proxy, FreshStack(
                    run_dir / "stack-home",
                    config={"upstreams": {"memory": proxy.url}} | storage.config()) as stack:
                storage.prepare(stack.home)
                proxy.set_target(stack.settings.port_of("memory"))
                ready = stack.up()
                chaos = Chaos(stack, proxy, profile, progress, storage.server)
                asyncio.run(chaos.run())
                restarts = supervisor_restarts(stack.home)
                down = stack.down()
                leftovers = orphans(marker) + down.leftovers_killed
                proxy_stats = asdict(proxy.stats())
        finally:
            os.environ.pop(RUN_MARKER_ENV, None)
        observed, facts = observe(stack.home)  # through the backend, still running
        storage_facts = storage.facts()
    with open(run_dir / HISTORY, "w", encoding="utf-8") as out:
        for op in chaos.history:
            out.write(json.dumps(op.to_dict(), sort_keys=True) + "\n")
    write_json(run_dir / REPORT, {
        "gate": "chaos",
        "profile": asdict(profile),
        "storage": storage_facts,
        "started_at": wall,
        "duration_s": round(chaos.history.now(), 2),
        "stack_ready_s": {k: round(v, 3) for k, v in ready.items()},
        "history": {"summary": chaos.history.summary(), "skipped": chaos.skipped,
                    "operations": len(chaos.history), "file": HISTORY},
        "faults": [f.to_dict() for f in chaos.faults],
        "recovery": recovery(chaos.faults),
        "fast_fail": fast_fail(chaos.history, chaos.faults),
        "checks": h.check_history(chaos.history, observed).to_dict(),
        "observed": observed.to_dict(),
        "stored": facts,
        "sessions": chaos.sessions_report,
        "supervisor_restarts": restarts,
        "orphans": leftovers,
        "proxy": proxy_stats,
        "stop": down.as_dict(),
        "environment": capture_environment(),
    })
    return judge(run_dir)
