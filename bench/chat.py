"""Chat latency and throughput at a fixed request rate, against GET /v1/whoami in the same run.

    python bench/chat.py [--rate 20] [--seconds 20]

Open loop: requests leave on a fixed schedule (one every 1/rate seconds) whether
or not earlier ones have finished, and latency is measured from the *scheduled*
send time, so a stall shows up in the numbers instead of slowing the load down.
Both routes run against one fresh stack with the builtin provider, one after
the other, at the same rate:

  * GET /v1/whoami: the bare authenticated no-op (baseline: the HTTP stack, the
    middleware, the key check);
  * POST /v1/chat: recall (memory), the session's history (memory), generation
    (router), the stored exchange (memory): four internal calls and one write.

The ratio chat/whoami says what a chat turn costs on top of an authenticated request.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from hdrh.histogram import HdrHistogram

from sonia.testing import FreshStack

MESSAGES = (
    "My favourite colour is teal.",
    "What is my favourite colour?",
    "My sister lives in Lisbon.",
    "Where does my sister live?",
    "hello",
    "What do you know about Lisbon?",
)


@dataclass
class Run:
    route: str
    rate: float
    seconds: float
    latencies_us: HdrHistogram = field(default_factory=lambda: HdrHistogram(1, 60_000_000, 3))
    ok: int = 0
    errors: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    lags_ms: list[float] = field(default_factory=list)
    elapsed: float = 0.0

    def pct(self, p: float) -> float:
        return float(self.latencies_us.get_value_at_percentile(p)) / 1000.0

    @property
    def throughput(self) -> float:
        return self.ok / self.elapsed if self.elapsed else 0.0


async def run_open_loop(client: httpx.AsyncClient, route: str, rate: float,
                        seconds: float) -> Run:
    run = Run(route, rate, seconds)
    total = int(rate * seconds)
    start = time.perf_counter() + 0.05
    tasks: list[asyncio.Task[None]] = []

    async def one(index: int, scheduled: float) -> None:
        run.lags_ms.append((time.perf_counter() - scheduled) * 1000)
        try:
            if route == "chat":
                response = await client.post("/v1/chat",
                                             json={"message": MESSAGES[index % len(MESSAGES)]})
            else:
                response = await client.get("/v1/whoami")
            ok = response.status_code == 200
            if not ok:
                run.failures[str(response.status_code)] += 1
        except httpx.HTTPError as exc:
            ok = False
            run.failures[type(exc).__name__] += 1
        if ok:
            run.ok += 1
            run.latencies_us.record_value(max(1, int((time.perf_counter() - scheduled) * 1e6)))
        else:
            run.errors += 1

    for index in range(total):
        scheduled = start + index / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(index, scheduled)))
    await asyncio.gather(*tasks)
    run.elapsed = time.perf_counter() - start
    return run


async def bench(stack: FreshStack, rate: float, seconds: float) -> list[Run]:
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(base_url=stack.url(), headers=stack.user_headers(),
                                 timeout=30, limits=limits, trust_env=False) as client:
        for route in ("whoami", "chat"):  # warm both paths (connections, caches)
            await run_open_loop(client, route, rate, 1.0)
        return [await run_open_loop(client, route, rate, seconds)
                for route in ("whoami", "chat")]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="duration per route")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, FreshStack(Path(tmp) / "home") as stack:
        stack.up()
        runs = asyncio.run(bench(stack, args.rate, args.seconds))
    print(f"open loop, {args.rate:g} req/s for {args.seconds:g} s per route, builtin provider")
    print(f"{'route':<8} {'sent':>5} {'ok':>5} {'err':>4} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'max ms':>8} {'req/s':>7} {'lag p50 ms':>10}")
    for run in runs:
        print(f"{run.route:<8} {run.ok + run.errors:>5} {run.ok:>5} {run.errors:>4} "
              f"{run.pct(50):>8.2f} {run.pct(99):>8.2f} {run.pct(100):>8.2f} "
              f"{run.throughput:>7.2f} {statistics.median(run.lags_ms):>10.2f}")
        if run.failures:
            print(f"         failures: {dict(run.failures)}")
    whoami, chat = runs
    print(f"ratio chat/whoami: p50 {chat.pct(50) / whoami.pct(50):.1f}x, "
          f"p99 {chat.pct(99) / whoami.pct(99):.1f}x")


if __name__ == "__main__":
    main()
