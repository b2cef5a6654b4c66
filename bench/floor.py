"""The floor under a chat turn's latency: the same shape of work with no Sonia in it.

    python bench/floor.py [--rate 20] [--seconds 20]

A chat turn through Sonia's gateway is a durable commit at the gateway (the
session's touch), a read at memory (the context: recalled memories and recent
turns), a call to the router (the generation) and a durable commit at memory
(the stored exchange): three calls between processes and two fsynced commits.
The issue's target holds the turn's p50 against `GET /v1/whoami` on the same
stack, an authenticated no-op in one process. This benchmark builds that shape
from bare parts to show how much of the ratio is the shape itself:

  * three bare Starlette apps under uvicorn, each its own process: *front* (like
    the gateway), *store* (like memory) and *model* (like the router, which
    answers at once, as the builtin provider nearly does);
  * the commits are SQLite in WAL mode with `synchronous=FULL`, as Sonia's are;
  * front calls the others through one aiohttp session, as Sonia's internal client;
  * `GET /v1/whoami` on front is the baseline, `POST /v1/chat` the turn.

Both routes run open loop at the same fixed rate through the same client as
`bench/chat.py` (and its open-loop runner), and then the same against a real
Sonia stack in the same run, so the four figures are comparable: the floor's
ratio says what no implementation of this architecture (a process per service,
durable commits before the answer) can get under on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from actions import timed  # noqa: E402
from chat import Run, bench, run_open_loop  # noqa: E402

from sonia.kit.deadline import wait_until  # noqa: E402
from sonia.supervisor.ports import free_base_port  # noqa: E402
from sonia.testing import FreshStack  # noqa: E402

FLOOR_APP = textwrap.dedent('''
    import json
    import os
    import sqlite3

    import aiohttp
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    STORE = os.environ.get("FLOOR_STORE", "")
    MODEL = os.environ.get("FLOOR_MODEL", "")
    EVA = os.environ.get("FLOOR_EVA", "")
    CLAW = os.environ.get("FLOOR_CLAW", "")
    WORKSPACE = os.environ.get("FLOOR_WORKSPACE", "")
    conn = sqlite3.connect(os.environ["FLOOR_DB"], isolation_level=None,
                           check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, body TEXT)")
    session = None

    def commit(body):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t (body) VALUES (?)", (body,))
        conn.execute("COMMIT")

    async def whoami(request):
        return JSONResponse({"name": "floor", "role": "user"})

    async def context(request):
        rows = conn.execute("SELECT id, body FROM t ORDER BY id DESC LIMIT 8").fetchall()
        return JSONResponse({"recalled": [], "turns": rows})

    async def exchange(request):
        commit(json.dumps(await request.json()))
        return JSONResponse({"stored": True}, status_code=201)

    async def generate(request):
        body = await request.json()
        return JSONResponse({"text": "noted: " + body["messages"][-1]})

    def client():
        global session
        if session is None:
            session = aiohttp.ClientSession()
        return session

    async def post(url, body):
        async with client().post(url, json=body) as r:
            return await r.json()

    async def record(request):  # EVA: a decision or an audit record, durable
        body = await request.json()
        commit(json.dumps(body))
        return JSONResponse({"recorded": True, "action_id": body.get("id", "a1")})

    async def execute(request):  # OpenClaw: the grant consumed, the tool run, reported
        body = await request.json()
        commit(json.dumps(body))
        with open(os.path.join(WORKSPACE, body["path"]), encoding="utf-8") as handle:
            content = handle.read()
        await post(EVA + "/record", {"executed": body["id"]})
        return JSONResponse({"result": {"content": content}})

    async def act(request):  # tier 0: decided, run, kept
        body = await request.json()
        decided = await post(EVA + "/record", {"decide": body})
        result = await post(CLAW + "/execute", {"id": decided["action_id"],
                                                  "path": body["args"]["path"]})
        commit(json.dumps(result))
        return JSONResponse({"status": "executed", **result})

    async def propose(request):  # tier 2, first half: decided, kept as pending
        body = await request.json()
        decided = await post(EVA + "/record", {"decide": body})
        commit(json.dumps(decided))
        return JSONResponse({"id": decided["action_id"], "status": "pending_approval"},
                            status_code=202)

    async def approve(request):  # tier 2, second half: approved, run, kept
        approved = await post(EVA + "/record", {"approve": request.path_params["id"]})
        result = await post(CLAW + "/execute", {"id": approved["action_id"],
                                                  "path": "read.txt"})
        commit(json.dumps(result))
        return JSONResponse({"status": "executed", **result})

    async def chat(request):
        client()
        message = (await request.json())["message"]
        commit(message)
        async with session.get(STORE + "/context", params={"q": message}) as r:
            await r.json()
        async with session.post(MODEL + "/generate", json={"messages": [message]}) as r:
            reply = (await r.json())["text"]
        async with session.post(STORE + "/exchange",
                                json={"user": message, "assistant": reply}) as r:
            await r.read()
        return JSONResponse({"reply": reply})

    app = Starlette(routes=[
        Route("/v1/whoami", whoami), Route("/v1/chat", chat, methods=["POST"]),
        Route("/context", context), Route("/exchange", exchange, methods=["POST"]),
        Route("/generate", generate, methods=["POST"]),
        Route("/record", record, methods=["POST"]), Route("/execute", execute, methods=["POST"]),
        Route("/v1/actions", act, methods=["POST"]),
        Route("/v1/propose", propose, methods=["POST"]),
        Route("/v1/actions/{id}/approve", approve, methods=["POST"]),
    ])
''')


def start_floor(folder: Path) -> tuple[list[subprocess.Popen[bytes]], str]:
    """front, store, model, eva and claw, each a uvicorn process on loopback; front's URL."""
    (folder / "floor_app.py").write_text(FLOOR_APP)
    (folder / "read.txt").write_text("the file a tier-0 action reads\n")
    base = free_base_port()
    ports = {name: base + i for i, name in enumerate(("front", "store", "model", "eva", "claw"))}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    procs = []
    for name, port in ports.items():
        env = {**os.environ, "FLOOR_DB": str(folder / f"{name}.db"),
               "FLOOR_STORE": urls["store"], "FLOOR_MODEL": urls["model"],
               "FLOOR_EVA": urls["eva"], "FLOOR_CLAW": urls["claw"],
               "FLOOR_WORKSPACE": str(folder)}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "floor_app:app", "--port", str(port),
             "--log-level", "warning", "--no-access-log"],
            cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def answers() -> bool:
        try:
            return all(httpx.get(url + "/v1/whoami", timeout=1).status_code == 200
                       for url in urls.values())
        except httpx.HTTPError:
            return False

    wait_until(answers, timeout=30, what="floor apps ready")
    return procs, urls["front"]


async def floor_runs(url: str, rate: float, seconds: float) -> list[Run]:
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits,
                                 trust_env=False) as client:
        for route in ("whoami", "chat"):  # warm both paths, as bench/chat.py does
            await run_open_loop(client, route, rate, 1.0)
        return [await run_open_loop(client, route, rate, seconds)
                for route in ("whoami", "chat")]


def action_rows(url: str, user: dict[str, str], approver: dict[str, str], n: int,
                propose_path: str, read: str) -> dict[str, list[float]]:
    """Sequential whoami, tier-0 read and tier-2 propose + approve, as `bench/actions.py`."""
    with httpx.Client(base_url=url, headers=user, timeout=30) as u, \
            httpx.Client(base_url=url, headers=approver, timeout=30) as a:
        def whoami(_: int) -> None:
            assert u.get("/v1/whoami").status_code == 200

        def tier0(_: int) -> None:
            answer = u.post("/v1/actions", json={"tool": "file.read", "args": {"path": read}})
            assert answer.status_code == 200, answer.text

        def tier2(i: int) -> None:
            proposed = u.post(propose_path, json={"tool": "file.write", "args": {
                "path": f"bench/{i}.txt", "content": "x", "parents": True}})
            assert proposed.status_code == 202, proposed.text
            done = a.post(f"/v1/actions/{proposed.json()['id']}/approve")
            assert done.status_code == 200, done.text

        for warm in (whoami, tier0):
            timed(20, warm)
        return {"whoami": timed(n, whoami), "tier0": timed(n, tier0),
                "tier2": timed(max(1, n // 2), tier2)}


def line(label: str, whoami: Run, chat: Run) -> str:
    return (f"{label:<7} {whoami.pct(50):>10.2f} {whoami.pct(99):>10.2f} {chat.pct(50):>8.2f} "
            f"{chat.pct(99):>8.2f} {chat.pct(50) / whoami.pct(50):>9.1f}x "
            f"{whoami.errors + chat.errors:>6}")


def action_line(label: str, rows: dict[str, list[float]]) -> str:
    base = statistics.median(rows["whoami"])
    p50 = {k: statistics.median(rows[k]) for k in ("tier0", "tier2")}
    cells = "".join(f" {p50[k]:>9.2f} {p50[k] / base:>6.1f}x" for k in ("tier0", "tier2"))
    return f"{label:<7} {base:>10.2f}{cells}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="duration per route")
    parser.add_argument("--n", type=int, default=300, help="sequential requests per action")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    with tempfile.TemporaryDirectory(prefix="sonia-floor-") as tmp:
        procs, url = start_floor(Path(tmp))
        try:
            floor = asyncio.run(floor_runs(url, args.rate, args.seconds))
            floor_actions = action_rows(url, {}, {}, args.n, "/v1/propose", "read.txt")
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=10)
    with tempfile.TemporaryDirectory() as tmp, FreshStack(Path(tmp) / "home") as stack:
        stack.up()
        sonia = asyncio.run(bench(stack, args.rate, args.seconds))
        (stack.home.workspace / "read.txt").write_text("the file a tier-0 action reads\n")
        sonia_actions = action_rows(stack.url(), stack.user_headers(),
                                    stack.approver_headers(), args.n, "/v1/actions",
                                    "read.txt")
    print(f"chat: open loop, {args.rate:g} req/s for {args.seconds:g} s per route; ms")
    print(f"{'':<7} {'whoami p50':>10} {'whoami p99':>10} {'chat p50':>8} {'chat p99':>8} "
          f"{'p50 ratio':>10} {'errors':>6}")
    print(line("floor", *floor))
    print(line("sonia", *sonia))
    print(f"sonia's chat p50 over the floor's: {sonia[1].pct(50) / floor[1].pct(50):.2f}x")
    print(f"actions: {args.n} sequential requests (tier 2: {max(1, args.n // 2)}), p50 ms "
          f"and ratio to whoami's p50")
    print(f"{'':<7} {'whoami p50':>10} {'tier0 p50':>9} {'ratio':>7} {'tier2 p50':>9} "
          f"{'ratio':>7}")
    print(action_line("floor", floor_actions))
    print(action_line("sonia", sonia_actions))
    print(f"load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
