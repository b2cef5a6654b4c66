"""Gate soak: no degradation under continuous open-loop traffic.

In a fresh home the stack is started and the load generator (`loadgen`) drives
the public API on a fixed schedule for the profile's duration:

    chat          POST /v1/chat (the key's default session)
    action_read   POST /v1/actions, a tier-0 tool (file.list): executed at once
    action_write  POST /v1/actions, a tier-2 tool (file.write): pending, then
                  POST /v1/actions/{id}/approve with the approver key: executed
    voice_session POST /v1/sessions, then the session's WebSocket
                  /v1/sessions/{id}/stream: wait for `session.ready`, send one
                  `input.text` turn, read the reply events up to
                  `response.final`, close; then POST /v1/sessions/{id}/stop.
                  The turn goes through the gateway's relay to the voice
                  service, so voice carries real traffic all soak long.

Every operation carries its own `X-Correlation-ID` (all requests of a multi-step
operation share it, the WebSocket handshake included). Each window becomes a
row of `soak-metrics.csv` as it closes, with every service's memory (USS of its
whole process tree, pid from `run/<service>.pid`), uptime and restart count
(from the supervisor's state file): see `processes.sample_services`. Afterwards
the gate counts stuck sessions (active sessions other than the chat's default
session), looks a sample of correlation IDs up in `logs/gateway.log`, writes
`soak-summary.json`, and returns `judge(run_dir)`: the verdict re-derived from
`soak-metrics.csv` and `soak-summary.json` alone, by `soak_verdict.evaluate_soak`
plus the correlation check. Any restart during the soak is NO-GO: a fresh stack
under steady traffic must not crash (the chaos gate is where restarts are
expected). Evidence: `soak-metrics.csv`, `soak-summary.json`, `soak-report.html`.

The quick profile runs the very same code for a few minutes at a higher rate
with short windows, so the trend tests still have enough points; its trend
thresholds are wider (a 2-minute run extrapolated to an hour magnifies start-up
effects and neighbours' noise: services still fill caches, so memory rises by
10-25 MiB per hour-equivalent, and a p95 drifting 25 ms in two minutes on a
shared machine reads as 750 ms/h; quick fails a p95 rising 1 ms per second of
run, 120 ms in its two minutes, or memory rising 256 MiB/h or growing at more
than that rate, about 7 MiB in its two minutes),
it judges the observed error rate, not the Wilson bound, which needs about 600
error-free requests per route to prove 0.5 %, and it tolerates a generator that
lags up to 500 ms in a tenth of the windows (CI machines are shared; latency is
measured from the scheduled time, so lag is never hidden, only the pace slips).
The release profile allows no window behind at 100 ms, and its rates give every
route more than 600 requests an hour, so a one-hour run can already pass Wilson.
Its memory thresholds flag a leak of 1 MiB/h: a slope above 1 MiB/h, or total
growth at more than 1 MiB/h (the rate of 48 MiB over 48 hours; see
`soak_verdict`).
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import itertools
import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from sonia import SERVICES
from sonia.errors import GateError
from sonia.gates.common.evidence import CRITERION, Check, Verdict, capture_environment, write_json
from sonia.gates.common.processes import sample_services
from sonia.gates.common.progress import GateProgress
from sonia.gates.soak.loadgen import (
    CORRELATION_HEADER,
    LoadGenerator,
    LoadProgress,
    LoadResult,
    Stream,
    open_client,
    outcome_of,
)
from sonia.gates.soak.verdict import MIB, SoakProfile, evaluate_soak
from sonia.kit.logfiles import read_lines
from sonia.testing import FreshStack

__all__ = [
    "EVIDENCE_FILES",
    "PROFILES",
    "SoakGateProfile",
    "count_stuck_sessions",
    "judge",
    "run",
    "trace_correlation_ids",
    "voice_turn",
]

METRICS = "soak-metrics.csv"
SUMMARY = "soak-summary.json"
REPORT = "soak-report.html"
WRITE_SLOTS = 16
STACK_CONFIG = {"logs": {"keep": 1000}}
"""The correlation trace reads the gateway's whole log: a 48 h run rolls it over a few
times, and every file it rolled over to must still be there at the end."""
"""Approved writes cycle over this many files, so a 48 h soak does not fill the workspace."""
CHAT_MESSAGES = (
    "hello, how are you today?",
    "what do you remember about me?",
    "what is my favourite colour?",
    "tell me something about the weather",
)


@dataclass(frozen=True)
class SoakGateProfile:
    """How long, how fast, how the windows are cut, and the verdict's numbers."""

    duration_s: float
    window_seconds: float
    chat_per_s: float
    action_read_per_s: float
    action_write_per_s: float
    voice_session_per_s: float
    verdict: SoakProfile
    max_concurrency: int = 256
    request_timeout_s: float = 30.0
    behind_lag_p99_ms: float = 100.0
    behind_drop_fraction: float = 0.001
    correlation_sample: int = 50


EVIDENCE_FILES: tuple[str, ...] = ("soak-metrics.csv", "soak-summary.json", "soak-report.html")
"""What a run leaves in its run directory (the registry checks for each)."""

PROFILES: dict[str, SoakGateProfile] = {
    "quick": SoakGateProfile(
        duration_s=120.0, window_seconds=4.0, chat_per_s=4.0, action_read_per_s=2.0,
        action_write_per_s=1.0, voice_session_per_s=1.0, behind_lag_p99_ms=500.0,
        verdict=SoakProfile(
            warmup_windows=4, min_windows=20, max_error_rate=0.005, use_wilson=False,
            latency_p95_slope_ms_per_hour=3600.0, memory_slope_bytes_per_hour=256 * MIB,
            memory_growth_bytes_per_hour=256 * MIB, max_behind_window_fraction=0.1,
        ),
    ),
    "release": SoakGateProfile(
        duration_s=48 * 3600.0, window_seconds=60.0, chat_per_s=1.0, action_read_per_s=0.5,
        action_write_per_s=0.2, voice_session_per_s=0.2,
        verdict=SoakProfile(
            warmup_windows=10, min_windows=30, max_error_rate=0.005, use_wilson=True,
            latency_p95_slope_ms_per_hour=5.0, memory_slope_bytes_per_hour=1 * MIB,
            memory_growth_bytes_per_hour=1 * MIB, max_behind_window_fraction=0.0,
        ),
    ),
}


@dataclass(frozen=True)
class _Answer:
    """What the soak reads of an HTTP answer: its status and, when JSON, its body."""

    status: int
    body: Any

    @classmethod
    async def read(cls, response: aiohttp.ClientResponse) -> _Answer:
        raw = await response.read()  # the whole body, so the connection is reused
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        return cls(response.status, body)

    def field(self, name: str) -> Any:
        return self.body.get(name) if isinstance(self.body, dict) else None


async def _send(client: aiohttp.ClientSession, method: str, path: str,
                headers: Mapping[str, str], json_body: Any = None) -> _Answer:
    async with client.request(method, path, json=json_body, headers=dict(headers)) as r:
        return await _Answer.read(r)


def _failed(answer: _Answer, expect_status: int, expect_state: str | None
            ) -> tuple[bool, str | None] | None:
    """None when the answer is as expected, else the (ok, error class) to report."""
    ok, error = outcome_of(answer.status)
    if not ok:
        return ok, error
    if answer.status != expect_status:
        return False, "other"
    if expect_state is not None and answer.field("status") != expect_state:
        return False, "other"
    return None


@dataclass
class SoakTraffic:
    """The four kinds of request the soak sends, and what it must remember of them."""

    base_url: str
    user: Mapping[str, str]
    approver: Mapping[str, str]
    chat_sessions: set[str] = field(default_factory=set)
    _counter: itertools.count[int] = field(default_factory=itertools.count)

    def _headers(self, who: Mapping[str, str], correlation_id: str) -> dict[str, str]:
        return {**who, CORRELATION_HEADER: correlation_id}

    async def chat(self, client: aiohttp.ClientSession, cid: str) -> tuple[bool, str | None]:
        message = CHAT_MESSAGES[next(self._counter) % len(CHAT_MESSAGES)]
        r = await _send(client, "POST", "/v1/chat", self._headers(self.user, cid),
                        {"message": message})
        if (bad := _failed(r, 200, None)) is not None:
            return bad
        session = r.field("session_id")
        if not isinstance(session, str):
            return False, "other"
        self.chat_sessions.add(session)
        return True, None

    async def action_read(self, client: aiohttp.ClientSession, cid: str
                          ) -> tuple[bool, str | None]:
        r = await _send(client, "POST", "/v1/actions", self._headers(self.user, cid), {
            "tool": "file.list", "args": {"path": "."}, "idempotency_key": cid,
        })
        bad = _failed(r, 200, "executed")
        return bad if bad is not None else (True, None)

    async def action_write(self, client: aiohttp.ClientSession, cid: str
                           ) -> tuple[bool, str | None]:
        slot = next(self._counter) % WRITE_SLOTS
        r = await _send(client, "POST", "/v1/actions", self._headers(self.user, cid), {
            "tool": "file.write",
            "args": {"path": f"soak/slot-{slot:02d}.txt", "content": f"soak write {cid}\n"},
            "idempotency_key": cid,
        })
        if (bad := _failed(r, 202, "pending_approval")) is not None:
            return bad
        action_id = r.field("id")
        if not isinstance(action_id, str):
            return False, "other"
        approved = await _send(client, "POST", f"/v1/actions/{action_id}/approve",
                               self._headers(self.approver, cid))
        bad = _failed(approved, 200, "executed")
        return bad if bad is not None else (True, None)

    async def voice_session(self, client: aiohttp.ClientSession, cid: str
                            ) -> tuple[bool, str | None]:
        r = await _send(client, "POST", "/v1/sessions", self._headers(self.user, cid),
                        {"mode": "text"})
        if (bad := _failed(r, 201, None)) is not None:
            return bad
        session_id = r.field("id")
        if not isinstance(session_id, str):
            return False, "other"
        url = self.base_url.replace("http", "ws", 1).rstrip("/") + \
            f"/v1/sessions/{session_id}/stream"
        message = CHAT_MESSAGES[next(self._counter) % len(CHAT_MESSAGES)]
        turn = await voice_turn(url, self._headers(self.user, cid), message)
        # stopped even after a failed turn, so stuck sessions count the stack's, not ours
        stopped = await _send(client, "POST", f"/v1/sessions/{session_id}/stop",
                              self._headers(self.user, cid))
        if turn is not None:
            return turn
        if (bad := _failed(stopped, 200, None)) is not None:
            return bad
        return (True, None) if stopped.field("state") == "closed" else (False, "other")

    def streams(self, profile: SoakGateProfile) -> list[Stream]:
        return [
            Stream("chat", profile.chat_per_s, self.chat),
            Stream("action_read", profile.action_read_per_s, self.action_read),
            Stream("action_write", profile.action_write_per_s, self.action_write),
            Stream("voice_session", profile.voice_session_per_s, self.voice_session),
        ]


async def _next_event(ws: ClientConnection) -> dict[str, Any]:
    """The next JSON event of the stream; binary (audio) frames are skipped."""
    while True:
        frame = await ws.recv()
        if isinstance(frame, str):
            event = json.loads(frame)
            if not isinstance(event, dict):
                raise ValueError(f"an event that is not an object: {frame[:80]!r}")
            return event


async def voice_turn(url: str, headers: Mapping[str, str], text: str
                      ) -> tuple[bool, str | None] | None:
    """One text turn over the session's WebSocket; None when the reply came whole.

    The caller's timeout bounds the whole turn. A refused handshake is classed by
    its status, a dropped socket as "transport", a handshake that timed out as
    "timeout", one that could not connect as "connect", and an `error` event, an
    interrupted or empty reply, or anything unexpected as "other".
    """
    try:
        async with connect(url, additional_headers=dict(headers), proxy=None,
                           open_timeout=10, max_size=1 << 20) as ws:
            if (await _next_event(ws)).get("type") != "session.ready":
                return False, "other"
            await ws.send(json.dumps({"type": "input.text", "text": text}))
            while True:
                event = await _next_event(ws)
                if event.get("type") in ("error", "session.ended"):
                    return False, "other"
                if event.get("type") == "response.final":
                    break
    except InvalidStatus as refused:
        return False, "4xx" if refused.response.status_code < 500 else "5xx"
    except ConnectionClosed:
        return False, "transport"
    except WebSocketException:
        return False, "transport"
    except TimeoutError:  # the handshake's own open_timeout (an OSError: caught first)
        return False, "timeout"
    except OSError:
        return False, "connect"
    except ValueError:  # not JSON
        return False, "other"
    if event.get("interrupted") is not False or not event.get("text"):
        return False, "other"
    return None


def count_stuck_sessions(stack: FreshStack, chat_sessions: set[str]) -> dict[str, Any]:
    """Active sessions left at the end, other than the chat's default session(s).

    Asks `GET /v1/sessions?state=active`; when that route cannot answer, reads the
    gateway database read-only instead, and says which it used.
    """
    try:
        r = httpx.get(stack.url() + "/v1/sessions", params={"state": "active", "limit": 500},
                      headers=stack.user_headers(), timeout=30)
        r.raise_for_status()
        body = r.json()
        active_ids = {str(s["id"]) for s in body.get("sessions", [])}
        active = int(body.get("counts", {}).get("active", len(active_ids)))
        method = "api"
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        db = stack.home.db_path("gateway")
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            rows = conn.execute("SELECT id FROM sessions WHERE state = 'active'").fetchall()
        finally:
            conn.close()
        active_ids = {str(row[0]) for row in rows}
        active = len(active_ids)
        method = f"database (the listing route failed: {type(exc).__name__})"
    default = active_ids & chat_sessions
    stuck = max(0, active - len(default))
    return {"stuck": stuck, "active": active, "chat_default_sessions": sorted(default),
            "method": method}


def trace_correlation_ids(log_file: Path, samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Which of the sampled successful requests' correlation IDs the gateway logged (in
    the log and every file it rolled over to)."""
    wanted = {str(s["correlation_id"]) for s in samples if s.get("ok")}
    seen: set[str] = set()
    for line in read_lines(log_file):
        try:
            cid = json.loads(line).get("correlation_id")
        except (ValueError, AttributeError):
            continue
        if cid in wanted:
            seen.add(cid)
    missing = sorted(wanted - seen)
    return {"log": log_file.name, "sampled": len(wanted), "found": len(seen),
            "missing": missing[:20]}


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


async def _drive(stack: FreshStack, traffic: SoakTraffic, profile: SoakGateProfile,
                 csv_path: Path, progress: GateProgress) -> LoadResult:
    task = progress.task("soak traffic", profile.duration_s)

    def on_progress(snap: LoadProgress) -> None:
        progress.update(task, completed=min(snap.elapsed_s, snap.duration_s),
                        description=f"soak: {snap.completed} done, {snap.errors} errors, "
                                    f"{snap.dropped} dropped, {snap.windows} windows")

    async with open_client(stack.url(), max_concurrency=profile.max_concurrency,
                           request_timeout_s=profile.request_timeout_s) as client:
        generator = LoadGenerator(
            client, traffic.streams(profile), csv_path=csv_path,
            window_seconds=profile.window_seconds, max_concurrency=profile.max_concurrency,
            request_timeout_s=profile.request_timeout_s,
            behind_lag_p99_ms=profile.behind_lag_p99_ms,
            behind_drop_fraction=profile.behind_drop_fraction,
            services=SERVICES, sample_services=lambda: sample_services(stack.home, SERVICES),
            on_progress=on_progress,
            correlation_sample_size=profile.correlation_sample, correlation_prefix="soak",
        )
        return await generator.run(profile.duration_s)


def _read_summary(path: Path) -> dict[str, Any]:
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise GateError(f"soak evidence is missing: {path.name}") from exc
    except (OSError, ValueError) as exc:
        raise GateError(f"{path.name} is not readable JSON: {exc}") from exc
    if not isinstance(summary, dict):
        raise GateError(f"{path.name} must hold a JSON object")
    return summary


def _field(summary: Mapping[str, Any], *path: str) -> Any:
    value: Any = summary
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            raise GateError(f"{SUMMARY} has no {'.'.join(path)}")
        value = value[key]
    return value


def _whole(summary: Mapping[str, Any], *path: str) -> int:
    value = _field(summary, *path)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise GateError(f"{SUMMARY}: {'.'.join(path)} must be a count, got {value!r}")
    return value


def judge(run_dir: Path) -> Verdict:
    """The soak's verdict, re-derived from `soak-metrics.csv` and `soak-summary.json`.

    Pure: it reads only those two files (never `verdict.json`, nor the summary's
    own copy of the verdict) and takes the thresholds from the profile recorded in
    the summary. Raises GateError naming the file when evidence is missing or
    malformed.
    """
    summary = _read_summary(run_dir / SUMMARY)
    try:
        rows = read_rows(run_dir / METRICS)
    except FileNotFoundError as exc:
        raise GateError(f"soak evidence is missing: {METRICS}") from exc
    except (OSError, csv.Error, UnicodeDecodeError) as exc:
        raise GateError(f"{METRICS} is not a readable CSV: {exc}") from exc
    thresholds = _field(summary, "profile", "verdict")
    if not isinstance(thresholds, Mapping):
        raise GateError(f"{SUMMARY}: profile.verdict must be an object")
    missing = sorted({f.name for f in dataclasses.fields(SoakProfile)} - set(thresholds))
    if missing:  # never judge by a default the run was not held to
        raise GateError(f"{SUMMARY}: profile.verdict lacks {', '.join(missing)}")
    try:
        profile = SoakProfile(**thresholds)
    except TypeError as exc:
        raise GateError(f"{SUMMARY}: profile.verdict: {exc}") from exc
    trace = _field(summary, "correlation_trace")
    sampled, found = _whole(summary, "correlation_trace", "sampled"), \
        _whole(summary, "correlation_trace", "found")
    try:
        judged = evaluate_soak(rows, profile,
                               stuck_sessions=_whole(summary, "sessions", "stuck"),
                               abandoned=_whole(summary, "load", "abandoned"))
    except (ValueError, KeyError) as exc:
        raise GateError(f"{METRICS}: {exc}") from exc
    traced = Check(
        "correlation IDs found in the gateway log", {"found_of_sampled": "all"},
        {"sampled": sampled, "found": found, "missing": list(trace.get("missing", []))[:5]},
        sampled > 0 and found == sampled, CRITERION,
        "a sample of successful requests, looked up by X-Correlation-ID",
    )
    return Verdict.of("soak", [*judged.checks, traced], judged.thresholds)


def run(run_dir: Path, profile: SoakGateProfile, progress: GateProgress) -> Verdict:
    """Run the soak, write its raw evidence, and return `judge(run_dir)`."""
    from sonia.gates.soak.report import write_report  # matplotlib: imported only when it draws

    csv_path = run_dir / METRICS
    with FreshStack(run_dir / "stack-home", config=STACK_CONFIG) as stack:
        (stack.home.workspace / "soak").mkdir(exist_ok=True)
        stack.up()
        traffic = SoakTraffic(base_url=stack.url(), user=stack.user_headers(),
                              approver=stack.approver_headers())
        load = asyncio.run(_drive(stack, traffic, profile, csv_path, progress))
        sessions = count_stuck_sessions(stack, traffic.chat_sessions)
        trace = trace_correlation_ids(stack.home.log_file("gateway"), load.correlation_samples)
        base_port = stack.base_port
    summary: dict[str, Any] = {
        "gate": "soak",
        "run_id": run_dir.name,
        "profile": dataclasses.asdict(profile),
        "windows": load.windows,
        "load": load.to_dict() | {"csv_path": METRICS},
        "sessions": sessions,
        "correlation_trace": trace,
        "stack": {"base_port": base_port, "services": list(SERVICES)},
        "environment": capture_environment(),
    }
    write_json(run_dir / SUMMARY, summary)
    verdict = judge(run_dir)
    summary["verdict"] = verdict.to_dict()  # a copy for readers; `judge` never reads it
    write_json(run_dir / SUMMARY, summary)
    write_report(read_rows(csv_path), summary, run_dir / REPORT)
    return verdict
