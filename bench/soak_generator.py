"""How fast the soak's load generator can drive a bare endpoint without falling behind,
beside Locust against the same endpoint in the same run.

    python bench/soak_generator.py [--step-seconds 6] [--locust-seconds 20] [--users 20]

The endpoint is a one-route Starlette app under uvicorn in its own process on
loopback, so the numbers describe the instrument, not Sonia. The generator is
run for a few seconds at each rate: doubling from 25 req/s until a rate fails,
then bisecting between the last rate that passed and the first that failed until
they are within 5 % (the ceiling, not the last power of two below it). A rate
*passes* when the scheduler lag p99 stayed under 10 ms and it was kept in pace
(below). A rate is *held by the gate's rule* when the lag p99 stayed under
100 ms, no request was dropped for lack of a concurrency slot (at most 0.1 %),
none failed and nothing was left in flight (the 1-second windows flagged behind
are printed too: on a shared machine a single hiccup flags one). A rate is *kept in pace* when no
request was dropped or failed and at least 97 % of the scheduled rate completed:
on a loaded machine the lag criterion fails first, from CPU contention, at any rate. Locust
(FastHttpUser, no wait time: a closed loop, as fast as its users can go) runs
headless against the same app; its throughput is the baseline the generator's
sustainable open-loop rate is compared with.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import aiohttp
import httpx

from sonia.gates.soak.loadgen import (
    CORRELATION_HEADER,
    LoadGenerator,
    Stream,
    open_client,
    outcome_of,
)
from sonia.kit.deadline import wait_until

BARE_APP = textwrap.dedent("""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def ok(request):
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/", ok)])
""")

LOCUSTFILE = textwrap.dedent("""
    from locust import constant
    from locust.contrib.fasthttp import FastHttpUser
    from locust import task

    class Bare(FastHttpUser):
        wait_time = constant(0)

        @task
        def hit(self):
            self.client.get("/")
""")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_bare(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    (folder / "bare_app.py").write_text(BARE_APP)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "bare_app:app", "--port", str(port),
         "--log-level", "warning", "--no-access-log"],
        cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        return httpx.get(url + "/", timeout=1).status_code == 200

    wait_until(answers, timeout=30, what="bare app ready")
    return proc, url


async def generator_at(url: str, rate: float, seconds: float, folder: Path) -> dict[str, float]:
    async def hit(client: aiohttp.ClientSession, cid: str) -> tuple[bool, str | None]:
        async with client.get("/", headers={CORRELATION_HEADER: cid}) as response:
            await response.read()
            return outcome_of(response.status)

    async with open_client(url, max_concurrency=256, request_timeout_s=10) as client:
        gen = LoadGenerator(client, [Stream("bare", rate, hit)],
                            csv_path=folder / f"rate-{rate:.0f}.csv", window_seconds=1.0)
        result = await gen.run(seconds)
    return {"rate": rate, "completed_per_s": result.completed / result.duration_s,
            "lag_p99_ms": result.lag_p99_ms, "dropped": result.dropped,
            "errors": result.errors, "windows_behind": result.windows_behind,
            "held": float(not result.behind and result.errors == 0),
            "paced": float(result.completed >= 0.99 * result.scheduled and result.dropped == 0
                           and result.errors == 0 and result.abandoned == 0
                           and result.completed / result.duration_s >= 0.97 * rate)}


LAG_P99_LIMIT_MS = 10.0
"""The issue's rule for the generator's ceiling (`--lag-ms` changes it: on a loaded
machine the scheduler lag alone passes 10 ms at any rate)."""


def passes(trial: dict[str, float], lag_ms: float = LAG_P99_LIMIT_MS) -> bool:
    return bool(trial["paced"]) and trial["lag_p99_ms"] < lag_ms


def ladder(url: str, seconds: float, folder: Path,
           lag_ms: float) -> tuple[float, float, float, list[dict[str, float]]]:
    """Double the rate until a trial fails, then bisect to within 5 %; return (highest
    rate passing, highest rate held by the gate's rule, highest kept in pace, trials)."""
    trials: list[dict[str, float]] = []

    def trial_at(rate: float) -> dict[str, float]:
        trial = asyncio.run(generator_at(url, rate, seconds, folder))
        trials.append(trial)
        return trial

    low, high = 0.0, 0.0
    rate = 25.0
    while rate <= 12_800:
        if passes(trial_at(rate), lag_ms):
            low = rate
            rate *= 2
        else:
            high = rate
            break
    while high and low and high / low > 1.05:
        middle = round((low + high) / 2)
        if passes(trial_at(middle), lag_ms):
            low = middle
        else:
            high = middle
    held = max((t["rate"] for t in trials if t["held"]), default=0.0)
    paced = max((t["rate"] for t in trials if t["paced"]), default=0.0)
    return low, held, paced, trials


def locust_throughput(url: str, seconds: float, users: int, folder: Path) -> dict[str, float]:
    (folder / "locustfile.py").write_text(LOCUSTFILE)
    locust = Path(sys.executable).with_name("locust")
    prefix = folder / "locust"
    subprocess.run(
        [str(locust), "-f", str(folder / "locustfile.py"), "--headless", "-u", str(users),
         "-r", str(users), "--run-time", f"{int(seconds)}s", "--host", url,
         "--csv", str(prefix), "--only-summary", "--loglevel", "ERROR"],
        cwd=folder, capture_output=True, timeout=seconds + 60,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    with open(f"{prefix}_stats.csv", newline="") as handle:
        rows = {row["Name"]: row for row in csv.DictReader(handle)}
    total = rows["Aggregated"]
    return {"requests_per_s": float(total["Requests/s"]),
            "requests": float(total["Request Count"]), "failures": float(total["Failure Count"]),
            "p99_ms": float(total["99%"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--step-seconds", type=float, default=6.0)
    parser.add_argument("--locust-seconds", type=float, default=20.0)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--lag-ms", type=float, default=LAG_P99_LIMIT_MS,
                        help="the scheduler lag p99 a rate must stay under to pass")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    with tempfile.TemporaryDirectory(prefix="sonia-bench-") as tmp:
        folder = Path(tmp)
        server, url = start_bare(folder)
        try:
            started = time.monotonic()
            ceiling, held, paced, trials = ladder(url, args.step_seconds, folder, args.lag_ms)
            for t in sorted(trials, key=lambda t: t["rate"]):
                print(f"  generator at {t['rate']:8.1f}/s: "
                      f"completed {t['completed_per_s']:8.1f}/s, "
                      f"lag p99 {t['lag_p99_ms']:7.1f} ms, dropped {t['dropped']:.0f}, "
                      f"errors {t['errors']:.0f}, windows behind {t['windows_behind']:.0f}, "
                      f"{'passes' if passes(t, args.lag_ms) else 'fails'} (gate rule: "
                      f"{'held' if t['held'] else 'BEHIND'})")
            print(f"generator ceiling (bisected): {ceiling:.0f} req/s in pace with lag p99 < "
                  f"{args.lag_ms:g} ms")
            print(f"generator: highest rate held with lag p99 < 100 ms: {held:.0f} req/s; "
                  f"highest rate kept in pace (no drops, >= 97 % completed): {paced:.0f} req/s "
                  f"({time.monotonic() - started:.0f}s of trials)")
            found = locust_throughput(url, args.locust_seconds, args.users, folder)
            print(f"locust (FastHttpUser, {args.users} users, closed loop): "
                  f"{found['requests_per_s']:.0f} req/s, p99 {found['p99_ms']:.0f} ms, "
                  f"{found['failures']:.0f} failures of {found['requests']:.0f}")
            if found["requests_per_s"] > 0:
                print(f"ratio generator ceiling / locust: "
                      f"{ceiling / found['requests_per_s']:.2f}")
        finally:
            server.terminate()
            server.wait(timeout=10)
    print(f"load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
