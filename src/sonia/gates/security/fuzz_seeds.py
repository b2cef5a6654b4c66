"""Seeds for fuzzing: one valid request per operation, so each reaches its logic at least once.

Random path ids never name a real action, memory or session, and a random tool
name is never in the registry: without seeds most operations only ever answer
404 or 400, and "fuzzing found nothing" would mean "fuzzing never got in". So
before fuzzing, the gate creates, through the live API, the objects each
operation needs (a pending action to approve, another to deny, a memory, a
session, an EVA decision and a real grant, ...), and hands schemathesis one
explicit example per operation (OpenAPI `example` on the path parameter and on
the JSON body). Each seed is used once; the generated cases follow as before.
A seed holding an execution grant is made when its operation comes up (a
callable), not before fuzzing starts: a grant lives `eva.grant_ttl_seconds`
(30 s), and on a loaded machine the operations before it take longer than that.

The headers are those the fuzzer itself uses (`fuzz.headers_for`), so a seeded
object belongs to the key the fuzzer presents.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import httpx

from sonia.testing import FreshStack

__all__ = ["LateSeed", "Seed", "seed_of", "seeds_for"]

Seed = dict[str, Any]
"""{"path": {name: value}, "query": {name: value}, "body": JSON} (each optional)."""
LateSeed = Callable[[], Seed]
"""A seed made just before its operation is fuzzed (one that holds a short-lived grant)."""
SEED_FILE = "fuzz-seed.txt"
SEED_RUN = "20300101T000000Z-fuzz-000000"
"""A gate run the fuzzer's home holds, so the console's evidence routes have one to read."""
PIXEL_PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAAB"
             "JRU5ErkJggg==")
FUZZ_OWNER = "gate-fuzz"
"""The principal the memory service's seeded memories belong to (`?owner=`)."""


def seed_of(seeds: dict[str, Seed | LateSeed], operation: str) -> Seed:
    """The seed of `operation` ("service METHOD path"), a late one made now; {} if none."""
    found = seeds.get(operation, {})
    return found() if callable(found) else found


def _jti(grant: str) -> str:
    payload = grant.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return str(claims["jti"])


def _seed_run(stack: FreshStack) -> str:
    """A finished gate run with one plot in its report, in the stack's own artifacts."""
    run = stack.home.artifacts / SEED_RUN
    run.mkdir(parents=True, exist_ok=True)
    (run / "verdict.json").write_text(json.dumps({
        "gate": "fuzz", "profile": "quick", "parameters": {}, "waivers": [], "seconds": 0.1,
        "verdict": {"gate": "fuzz", "status": "GO", "checks": []}}))
    (run / "soak-report.html").write_text(
        f'<img alt="seed" src="data:image/png;base64,{PIXEL_PNG}">\n')
    return SEED_RUN


def seeds_for(stack: FreshStack, headers: Callable[[str, str], dict[str, str]], *,
              spare_key: bool = True) -> dict[str, Seed | LateSeed]:
    """"service METHOD path" -> one valid example, made real by requests to the live stack.

    `headers(service, path)` gives the credentials the fuzzer will present there.
    `spare_key` makes a key for the revoke route to revoke: it writes the home's key
    file, so a caller inside an effect watch (the robustness case, which never uses
    a seed's path) asks for none.
    """
    (stack.home.workspace / SEED_FILE).write_text("a file for the fuzzer to read\n")
    read = {"tool": "file.read", "args": {"path": SEED_FILE}}
    write = {"tool": "file.write", "args": {"path": "fuzz-seed-written.txt", "content": "x"}}

    def call(service: str, method: str, path: str, body: Any = None,
             route: str | None = None) -> dict[str, Any]:
        response = httpx.request(method, stack.url(service) + path, json=body,
                                 headers=headers(service, route or path), timeout=60,
                                 trust_env=False)
        if response.status_code >= 300:
            raise AssertionError(f"seeding {method} {path} answered "
                                 f"{response.status_code}: {response.text[:300]}")
        found: dict[str, Any] = response.json()
        return found

    gw_actions = "/v1/actions/{action_id}"
    action = str(call("gateway", "POST", "/v1/actions", read)["id"])
    to_approve = str(call("gateway", "POST", "/v1/actions", write)["id"])
    to_deny = str(call("gateway", "POST", "/v1/actions", write)["id"])
    to_preview = str(call("gateway", "POST", "/v1/actions", write)["id"])
    memories = [str(call("gateway", "POST", "/v1/memory", {"content": f"seed {n}"})["id"])
                for n in range(3)]
    sessions = [str(call("gateway", "POST", "/v1/sessions", {"mode": "text"})["id"])
                for _ in range(2)]
    models = call("gateway", "GET", "/v1/models").get("data") or [{"id": "sonia"}]
    # a chat turn in which the (builtin) model calls a tool keeps a turn record
    turn = str(call("gateway", "POST", "/v1/chat", {"message": f"read {SEED_FILE}"})
               .get("agent_turn_id"))
    eva_proposal = {**read, "principal": "gate:fuzz"}
    decided = call("eva", "POST", "/v1/decisions", eva_proposal)
    pending = [str(call("eva", "POST", "/v1/decisions",
                        {**write, "principal": "gate:fuzz"})["action_id"])
               for _ in range(2)]
    route = "/v1/decisions/{action_id}/approve"

    def execute_with_a_fresh_grant() -> Seed:
        grant = str(call("eva", "POST", "/v1/decisions", eva_proposal)["grant"])
        return {"body": {**read, "grant": grant}}

    def report_a_fresh_execution() -> Seed:
        action_id = str(call("eva", "POST", "/v1/decisions",
                             {**write, "principal": "gate:fuzz"})["action_id"])
        approved = call("eva", "POST", f"/v1/decisions/{action_id}/approve",
                        {"approver": "key:fuzz"}, route)
        return {"path": {"action_id": action_id},
                "body": {"jti": _jti(str(approved["grant"])), "outcome": "ok",
                         "result_digest": "0" * 64}}

    stored = [str(call("memory", "POST", f"/v1/memories?owner={FUZZ_OWNER}",
                       {"content": f"seed {n}"}, "/v1/memories")["id"]) for n in range(3)]
    run = _seed_run(stack)
    to_revoke = stack.home.create_api_key("user").split("-")[2] if spare_key else "0" * 12
    return {
        "gateway POST /v1/actions": {"body": read},
        f"gateway GET {gw_actions}": {"path": {"action_id": action}},
        f"gateway POST {gw_actions}/approve": {"path": {"action_id": to_approve}},
        f"gateway POST {gw_actions}/deny": {"path": {"action_id": to_deny}},
        "gateway GET /v1/memory/{memory_id}": {"path": {"memory_id": memories[0]}},
        "gateway POST /v1/memory/{memory_id}/archive": {"path": {"memory_id": memories[1]}},
        "gateway DELETE /v1/memory/{memory_id}": {"path": {"memory_id": memories[2]}},
        f"gateway GET {gw_actions}/preview": {"path": {"action_id": to_preview}},
        "gateway POST /v1/keys/{key_id}/revoke": {"path": {"key_id": to_revoke}},
        "gateway GET /v1/gates/{run_id}": {"path": {"run_id": run}},
        "gateway GET /v1/gates/{run_id}/plots/{index}": {"path": {"run_id": run, "index": 0}},
        "gateway POST /v1/console/login": {"body": {"key": stack.user_key}},
        "gateway POST /v1/chat/stream": {"body": {"message": "hello"}},
        "gateway GET /v1/sessions/{session_id}": {"path": {"session_id": sessions[0]}},
        "gateway GET /v1/turns/{turn_id}": {"path": {"turn_id": turn}},
        "gateway POST /v1/sessions/{session_id}/stop": {"path": {"session_id": sessions[1]}},
        "gateway POST /internal/v1/turns": {"body": {"session_id": sessions[0],
                                                     "text": "hello"}},
        "gateway POST /v1/chat/completions": {"body": {
            "model": str(models[0].get("id")), "messages": [{"role": "user",
                                                              "content": "hello"}]}},
        "eva POST /v1/decisions": {"body": eva_proposal},
        "eva GET /v1/decisions/{action_id}": {"path": {"action_id": str(decided["action_id"])}},
        "eva POST /v1/decisions/{action_id}/approve": {"path": {"action_id": pending[0]},
                                                       "body": {"approver": "key:fuzz"}},
        "eva POST /v1/decisions/{action_id}/deny": {"path": {"action_id": pending[1]},
                                                    "body": {"approver": "key:fuzz"}},
        "eva POST /v1/decisions/{action_id}/executed": report_a_fresh_execution,
        "openclaw POST /v1/execute": execute_with_a_fresh_grant,
        "openclaw POST /v1/preview": {"body": write},
        "memory GET /v1/memories/{memory_id}": {"path": {"memory_id": stored[0]},
                                                "query": {"owner": FUZZ_OWNER}},
        "memory POST /v1/memories/{memory_id}/archive": {"path": {"memory_id": stored[1]},
                                                         "query": {"owner": FUZZ_OWNER}},
        "memory DELETE /v1/memories/{memory_id}": {"path": {"memory_id": stored[2]},
                                                   "query": {"owner": FUZZ_OWNER}},
        "memory POST /v1/sessions/{session_id}/turns": {
            "path": {"session_id": sessions[0]}, "body": {"role": "user", "content": "hi"}},
    }
