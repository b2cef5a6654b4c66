"""Robustness: input that cannot be encoded, bodies that stall, keys that crowd others out.

    surrogates    a lone surrogate ("\\ud800", valid JSON) in a forwarded string on
                  the routes that forward it, and in every string field and query
                  parameter of every route of every service: a 500 is a finding
    stalls        /livez of every service, polled while adversarial bodies are in
                  flight (a large `sk-` body, a large `sk-` file read as tool
                  output): the slowest answer per service is recorded and the
                  judge fails any over `STALL_LIMIT_S`
    fairness      one key holding every session slot, or flooding pending actions,
                  must not deny another key; streams per session are capped
    privilege     a command must not run as root: the owner of a directory an
                  approved `mkdir` made, and what `id -u` prints
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from sonia import SERVICES
from sonia.gates.security.probe import Observed, Probe
from sonia.gates.security.types import Case

__all__ = ["ROBUSTNESS_CASES"]

SURROGATE = "\ud800"
STALL_BODY_CHARS = 60_000
"""Size of the adversarial `sk-` runs: seconds of stall for a quadratic pattern."""
STREAM_FLOOD = 32
"""Streams one session may try to open at once before the case calls them uncapped."""
ROUTE_TIMEOUT_S = 15.0
"""A route silent this long on one small poisoned body is frozen: no answer is a finding."""
HEALTH = {"/livez", "/readyz", "/healthz", "/metrics", "/version"}


def _raw_post(p: Probe, service: str, path: str, body: Any,
              headers: dict[str, str]) -> tuple[httpx.Response, Observed]:
    """POST `body` as JSON text with \\u escapes (so a lone surrogate travels as valid JSON)."""
    content = json.dumps(body, ensure_ascii=True).encode("ascii")
    response = p.http.post(p.stack.url(service) + path, content=content,
                           headers={**headers, "Content-Type": "application/json"})
    seen = Observed(response.status_code, _code(response),
                    {"method": "POST", "service": service, "path": path,
                     "body": f"{content[:160].decode()}... ({len(content)} bytes)"},
                    p.mask(response.text[:400]))
    p.leaked(response.text)
    return response, seen


def _code(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("code") if isinstance(body, dict) else None


def _surrogate_at(path: str, body: dict[str, Any]) -> Callable[[Probe], Observed]:
    return lambda p: _raw_post(p, "gateway", path, body, p.user())[1]


# --- every route --------------------------------------------------------------------------
def _sample(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    """A body with a surrogate in every string field of `schema` (one level of $ref)."""
    if "$ref" in schema:
        schema = components.get(schema["$ref"].rsplit("/", 1)[-1], {})
    body: dict[str, Any] = {}
    for name, prop in (schema.get("properties") or {}).items():
        kinds = {prop.get("type")} | {alt.get("type") for alt in prop.get("anyOf", [])}
        if "string" in kinds:
            body[name] = "x" + SURROGATE
        elif "object" in kinds:
            body[name] = {"path": "x" + SURROGATE}
    return body


def _poisoned(value: Any) -> list[Any]:
    """Copies of `value`, each with a lone surrogate appended to one of its strings
    (one at a time, so the others stay valid and the poisoned one travels far)."""
    if isinstance(value, str):
        return [value + SURROGATE]
    if isinstance(value, dict):
        return [{**value, key: variant} for key, item in value.items()
                for variant in _poisoned(item)]
    if isinstance(value, list):
        return [[*value[:i], variant, *value[i + 1:]] for i, item in enumerate(value)
                for variant in _poisoned(item)]
    return []


def every_route(p: Probe) -> Observed:
    """Every operation of every service, with a surrogate in its body and query.

    Where fuzzing has a valid seed body for the operation (`security_fuzz_seeds`),
    that body is poisoned instead of a schema sample, so the surrogate gets past
    validation into the code that forwards, stores or logs it.
    """
    from sonia.gates.security.fuzz import headers_for
    from sonia.gates.security.fuzz_seeds import seed_of, seeds_for
    from sonia.services.runner import build_app  # the same schema the fuzzer reads

    apps = {service: build_app(service, p.home)[0] for service in SERVICES}
    seeds = seeds_for(p.stack, lambda service, path: headers_for(
        p.stack, service, dict(apps[service].state.callers), path), spare_key=False)
    p.set_up_done()
    statuses: dict[str, int] = {}
    for service in SERVICES:
        app = apps[service]
        callers: dict[str, frozenset[str]] = dict(app.state.callers)
        spec = app.openapi()
        components = spec.get("components", {}).get("schemas", {})
        for path, operations in spec.get("paths", {}).items():
            if path in HEALTH or path.endswith("/stream"):
                continue
            headers = headers_for(p.stack, service, callers, path)
            url_path = re.sub(r"\{[^}]+\}", "x", path)
            for method, operation in operations.items():
                query = [q["name"] for q in operation.get("parameters", []) if q["in"] == "query"]
                url = p.stack.url(service) + url_path
                if query:
                    url += "?" + "&".join(f"{name}=x%ED%A0%80" for name in query)
                schema = (operation.get("requestBody", {}).get("content", {})
                          .get("application/json", {}).get("schema"))
                seed = seed_of(seeds, f"{service} {method.upper()} {path}")
                bodies: list[Any] = [None]
                if "body" in seed:
                    bodies = _poisoned(seed["body"])
                elif schema is not None:
                    bodies = [_sample(schema, components)]
                for n, body in enumerate(bodies):
                    route = f"{service} {method.upper()} {path}" + (f" #{n}" if n else "")
                    content = None if body is None else json.dumps(body).encode("ascii")
                    try:
                        response = p.http.request(method.upper(), url, content=content,
                                                  headers={**headers,
                                                           "Content-Type": "application/json"},
                                                  timeout=ROUTE_TIMEOUT_S)
                        statuses[route] = response.status_code
                        p.leaked(response.text)
                    except httpx.HTTPError:
                        statuses[route] = 0
    worst = max(statuses.values(), default=0)
    failing = {route: s for route, s in statuses.items() if s >= 500 or s == 0}
    seen = Observed(worst if not failing else max(failing.values()) or 599, None,
                    {"routes": len(statuses), "surrogate": "\\ud800 in every string field and "
                     "as %ED%A0%80 in every query parameter"},
                    json.dumps(failing)[:600])
    seen.extra["statuses"] = statuses
    if failing:
        seen.ok, seen.note = False, f"server errors or no answer: {failing}"
    return seen


# --- stalls -------------------------------------------------------------------------------
def _while_in_flight(p: Probe, sends: list[Callable[[], Observed]]) -> Observed:
    """Run `sends` in threads; meanwhile time /livez of every service until they finish."""
    worst: dict[str, float | None] = dict.fromkeys(SERVICES, 0.0)
    with httpx.Client(timeout=10.0, trust_env=False) as client, \
            ThreadPoolExecutor(len(sends)) as pool:
        futures = [pool.submit(send) for send in sends]
        deadline = time.monotonic() + 120
        polls = 0
        while (polls < 3 or not all(f.done() for f in futures)) and time.monotonic() < deadline:
            polls += 1
            for service in SERVICES:
                start = time.monotonic()
                try:
                    client.get(p.stack.url(service) + "/livez")
                    took: float | None = round(time.monotonic() - start, 3)
                except httpx.HTTPError:
                    took = None  # no answer in 10 s: a stall beyond any doubt
                previous = worst[service]
                worst[service] = None if took is None or previous is None else max(previous,
                                                                                    took)
        outcomes = [f.result() for f in futures]
    shown = next((o for o in outcomes if o.status >= 500), outcomes[0])
    shown.extra["livez_max_s"] = worst
    shown.extra["livez_polls"] = polls
    shown.extra["statuses"] = [o.status for o in outcomes]
    return shown


def stall_by_body(p: Probe) -> Observed:
    body = {"tool": "file.read",
            "args": {"path": SURROGATE + "sk-" * (STALL_BODY_CHARS // 3)}}
    return _while_in_flight(p, [lambda: _raw_post(p, "gateway", "/v1/actions", body,
                                                  p.user())[1]])


def stall_by_tool_output(p: Probe) -> Observed:
    (p.workspace / "sk-run.txt").write_text("sk-" * (STALL_BODY_CHARS // 3))
    p.set_up_done()
    return _while_in_flight(p, [lambda: p.act("file.read", {"path": "sk-run.txt"})[1]])


# --- fairness -----------------------------------------------------------------------------
def sessions_fair(p: Probe) -> Observed:
    """Key A opens sessions until refused; key B must still get one."""
    flooder = {"Authorization": f"Bearer {p.flood_key}"}
    limit = p.stack.settings.gateway.max_sessions
    opened: list[tuple[dict[str, str], str]] = []
    try:
        for _ in range(limit + 4):
            response = p.http.post(p.stack.url("gateway") + "/v1/sessions", headers=flooder,
                                   json={"mode": "text"})
            if response.status_code != 201:
                break
            opened.append((flooder, str(response.json()["id"])))
        other = {"Authorization": f"Bearer {p.other_user_key}"}
        response, seen = p.request("POST", "gateway", "/v1/sessions", headers=other,
                                   json_body={"mode": "text"})
        if response.status_code == 201:
            opened.append((other, str(response.json()["id"])))
        seen.extra["flooder_sessions"] = len([o for o in opened if o[0] is flooder])
        return seen
    finally:
        for headers, session in opened:
            p.http.post(p.stack.url("gateway") + f"/v1/sessions/{session}/stop",
                        headers=headers)


def pending_fair(p: Probe, flood: int = 40) -> Observed:
    """Key A leaves `flood` actions pending; key B's proposal must still be taken."""
    flooder = {"Authorization": f"Bearer {p.flood_key}"}
    pending: list[str] = []
    try:
        for n in range(flood):
            response = p.http.post(p.stack.url("gateway") + "/v1/actions", headers=flooder,
                                   json={"tool": "file.write",
                                         "args": {"path": f"flood/{n}.txt", "content": "x"}})
            if response.status_code != 202:
                break
            pending.append(str(response.json()["id"]))
        other = {"Authorization": f"Bearer {p.other_user_key}"}
        response, seen = p.act("file.write", {"path": "flood/other.txt", "content": "x"},
                               headers=other)
        if response.status_code == 202:
            pending.append(str(response.json()["id"]))
        seen.extra["flooder_pending"] = len(pending)
        return seen
    finally:
        for action in pending:
            p.decide("deny", action)


def streams_capped(p: Probe, most: int = STREAM_FLOOD) -> Observed:
    """One session, `most` streams at once: some handshake must be refused (a cap).

    Each accepted stream holds a voice-service session; without a cap per
    session one key grows the voice process without bound.
    """
    from websockets.exceptions import InvalidStatus, WebSocketException
    from websockets.sync.client import ClientConnection, connect

    headers = {"Authorization": f"Bearer {p.flood_key}"}
    created = p.http.post(p.stack.url("gateway") + "/v1/sessions", headers=headers,
                          json={"mode": "voice"})
    session = str(created.json()["id"])
    url = p.stack.url("gateway").replace("http", "ws", 1) + f"/v1/sessions/{session}/stream"
    opened: list[ClientConnection] = []
    refusal: tuple[int, str] | None = None
    try:
        with contextlib.ExitStack() as streams:  # every stream closed on the way out
            while len(opened) < most and refusal is None:
                try:
                    opened.append(streams.enter_context(connect(
                        url, additional_headers=headers, proxy=None, open_timeout=15)))
                except InvalidStatus as exc:
                    refusal = (exc.response.status_code, exc.response.body.decode(
                        errors="replace")[:300] if exc.response.body else "")
                except (WebSocketException, OSError) as exc:
                    refusal = (0, f"{type(exc).__name__}: {exc}")
    finally:
        p.http.post(p.stack.url("gateway") + f"/v1/sessions/{session}/stop", headers=headers)
    status, body = refusal if refusal else (101, "")
    seen = Observed(status, _code_of(body), {"session": "<flood key's>", "streams": most},
                    body)
    seen.extra["streams_opened"] = len(opened)
    return seen


def _code_of(body: str) -> str | None:
    try:
        found = json.loads(body)
    except ValueError:
        return None
    return found.get("code") if isinstance(found, dict) else None


# --- privilege ----------------------------------------------------------------------------
def _owner_seen_inside(p: Probe, name: str) -> str:
    """The numeric owner of `name` as a sandboxed command sees it (`ls -lnd`)."""
    response, _ = p.act("shell.run", {"argv": ["ls", "-lnd", name]})
    if response.status_code != 200:
        return f"ls answered {response.status_code}"
    fields = str(response.json().get("result", {}).get("stdout", "")).split()
    return fields[2] if len(fields) > 2 else "?"


def mkdir_owner(p: Probe) -> Observed:
    """A command never holds root's identity.

    Without bubblewrap, a command run for a root Sonia must be nobody on the host:
    what it makes is not root's. Under bubblewrap it runs in a user namespace as
    65534, without any capability; what it makes must be 65534's as the command
    sees it. (The namespace maps 65534 onto the service's own uid, so on the host
    the owner is the service's uid: DESIGN states it as a limit when Sonia runs as
    root.)"""
    made = p.workspace / "owner-check"
    response, seen = p.act("shell.run", {"argv": ["mkdir", "owner-check"]})
    if response.status_code == 202:
        seen = p.decide("approve", str(response.json()["id"]))[1]
    if made.exists():
        host_uid = made.stat().st_uid
        seen.extra["owner_uid_on_host"] = host_uid
        sandbox = str(p.request("GET", "openclaw", "/readyz")[0].json()
                      .get("checks", {}).get("sandbox", {}).get("level", ""))
        seen.extra["sandbox"] = sandbox
        if sandbox == "bwrap":
            inside = _owner_seen_inside(p, "owner-check")
            seen.extra["owner_uid_inside"] = inside
            if inside != "65534":
                seen.ok, seen.note = False, f"a sandboxed command made a folder of uid {inside}"
        elif host_uid == 0:
            seen.ok, seen.note = False, "a command ran as root (its directory is root's)"
    return seen


def id_u(p: Probe) -> Observed:
    response, seen = p.act("shell.run", {"argv": ["id", "-u"]})
    if response.status_code == 200:
        printed = str(response.json().get("result", {}).get("stdout", "")).strip()
        seen.extra["printed"] = printed
        if printed == "0":
            seen.ok, seen.note = False, "id -u printed 0: commands run as root"
    return seen


_R = "robustness"
ROBUSTNESS_CASES: tuple[Case, ...] = (
    Case("surrogate-action-args", _R, "a lone surrogate in a forwarded action argument",
         400, "INVALID_ARGUMENT",
         _surrogate_at("/v1/actions", {"tool": "file.read", "args": {"path": SURROGATE}})),
    Case("surrogate-memory", _R, "a lone surrogate in a memory's content", 400,
         "INVALID_ARGUMENT", _surrogate_at("/v1/memory", {"content": "a" + SURROGATE})),
    Case("surrogate-chat", _R, "a lone surrogate in a chat message", 400, "INVALID_ARGUMENT",
         _surrogate_at("/v1/chat", {"message": "hello " + SURROGATE})),
    Case("surrogate-every-route", _R, "a lone surrogate in every string field and query "
         "parameter of every route of every service: no 5xx", "<500", None, every_route),
    Case("stall-livez-large-body", _R, f"/livez of every service while a {STALL_BODY_CHARS}-"
         "character sk- body with a surrogate is in flight", "<500", None, stall_by_body),
    Case("stall-livez-tool-output", _R, f"/livez of every service while file.read returns "
         f"{STALL_BODY_CHARS} characters of sk-", "<500", None, stall_by_tool_output),
    Case("fair-sessions-per-key", _R, "one key holding every session slot does not deny "
         "another key", 201, None, sessions_fair),
    Case("fair-pending-per-key", _R, "one key flooding pending actions does not deny another "
         "key", 202, None, pending_fair),
    Case("fair-streams-per-session", _R, f"{STREAM_FLOOD} streams on one session: the "
         "handshakes past a cap are refused", "4xx", None, streams_capped),
    Case("privilege-mkdir-owner", _R, "a directory made by an approved mkdir is not root's",
         "<500", None, mkdir_owner, may_write=("owner-check",)),
    Case("privilege-id-u", _R, "shell.run id -u does not print 0", "<500", None, id_u),
)
