"""Capacity: the highest open-loop rate a route holds with p99 under 100 ms, beside whoami's.

    python bench/capacity.py [--seconds 5] [--routes whoami,chat,tier0] [--p99-ms 100]

One fresh stack, builtin provider. For each route the rate doubles from 10 req/s
until a trial fails (or halves, when 10 req/s already fails), then is bisected to
within 10 %. A trial *holds* when every
request succeeded, the p99 latency (from the scheduled send time: open loop, as
bench/chat.py) stayed under `--p99-ms`, and the generator itself kept its
schedule (completed at least 97 % of the rate). Routes:

  * whoami: GET /v1/whoami, the baseline (an authenticated no-op);
  * chat:   POST /v1/chat (builtin: recall, history, generation, store);
  * tier0:  POST /v1/actions file.read (EVA decides and signs, OpenClaw runs).

The generator (asyncio + httpx, in this process) shares the two cores with the
six services, so whoami's ceiling is partly the generator's: the ratios are the
figures to compare, and a quiet machine is needed for the absolute rates.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from hdrh.histogram import HdrHistogram

from sonia.testing import FreshStack

MESSAGES = ("My favourite colour is teal.", "What is my favourite colour?", "hello",
            "Where does my sister live?")


@dataclass
class Trial:
    route: str
    rate: float
    ok: int
    errors: int
    p99_ms: float
    completed_per_s: float

    def holds(self, limit_ms: float) -> bool:
        return (self.errors == 0 and self.p99_ms < limit_ms
                and self.completed_per_s >= 0.97 * self.rate)


async def trial(client: httpx.AsyncClient, route: str, rate: float, seconds: float) -> Trial:
    histogram = HdrHistogram(1, 60_000_000, 3)
    ok = errors = 0
    total = max(1, int(rate * seconds))
    start = time.perf_counter() + 0.05

    async def one(index: int, scheduled: float) -> None:
        nonlocal ok, errors
        try:
            if route == "chat":
                answer = await client.post("/v1/chat",
                                           json={"message": MESSAGES[index % len(MESSAGES)]})
            elif route == "tier0":
                answer = await client.post("/v1/actions", json={
                    "tool": "file.read", "args": {"path": "bench.txt"}})
            else:
                answer = await client.get("/v1/whoami")
            good = answer.status_code == 200
        except httpx.HTTPError:
            good = False
        if good:
            ok += 1
            histogram.record_value(max(1, int((time.perf_counter() - scheduled) * 1e6)))
        else:
            errors += 1

    tasks = []
    for index in range(total):
        scheduled = start + index / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(index, scheduled)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    return Trial(route, rate, ok, errors,
                 histogram.get_value_at_percentile(99) / 1000.0, ok / elapsed)


async def ceiling(client: httpx.AsyncClient, route: str, seconds: float,
                  limit_ms: float) -> tuple[float, list[Trial]]:
    trials: list[Trial] = []

    async def run(rate: float) -> bool:
        found = await trial(client, route, rate, seconds)
        trials.append(found)
        print(f"  {route:7} {rate:7.0f}/s: p99 {found.p99_ms:8.1f} ms, errors {found.errors}, "
              f"completed {found.completed_per_s:7.1f}/s -> "
              f"{'holds' if found.holds(limit_ms) else 'fails'}", flush=True)
        return found.holds(limit_ms)

    low, high, rate = 0.0, 0.0, 10.0
    while rate <= 5120:
        if await run(rate):
            low, rate = rate, rate * 2
        else:
            high = rate
            break
    while not low and high > 1.25:  # even 10/s failed (a loaded machine): halve down
        rate = high / 2
        if await run(rate):
            low = rate
        else:
            high = rate
    while high and low and high / low > 1.1:
        middle = round((low + high) / 2, 1)
        if await run(middle):
            low = middle
        else:
            high = middle
    return low, trials


async def bench(stack: FreshStack, routes: list[str], seconds: float,
                limit_ms: float) -> dict[str, float]:
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=512)
    async with httpx.AsyncClient(base_url=stack.url(), headers=stack.user_headers(),
                                 timeout=30, limits=limits, trust_env=False) as client:
        for route in routes:  # warm connections and caches
            await trial(client, route, 10, 1.0)
        return {route: (await ceiling(client, route, seconds, limit_ms))[0] for route in routes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one trial")
    parser.add_argument("--routes", default="whoami,chat,tier0")
    parser.add_argument("--p99-ms", type=float, default=100.0)
    args = parser.parse_args()
    routes = [r for r in args.routes.split(",") if r]
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    with tempfile.TemporaryDirectory() as tmp, FreshStack(Path(tmp) / "home") as stack:
        stack.up()
        (stack.home.workspace / "bench.txt").write_text("benchmark\n")
        found = asyncio.run(bench(stack, routes, args.seconds, args.p99_ms))
    print(f"\nhighest open-loop rate with p99 < {args.p99_ms:g} ms and no error "
          f"({args.seconds:g} s trials, bisected to 10 %)")
    base = found.get("whoami")
    for route, rate in found.items():
        ratio = f"{rate / base:6.2f} of whoami" if base else ""
        print(f"  {route:7} {rate:7.1f} req/s  {ratio}")
    print(f"load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
