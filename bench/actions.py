"""Actions through the live stack, against the bare authenticated route measured in the same run.

    python bench/actions.py [--n 300]

Three measurements, sequential requests from one client, after a warm-up:

- baseline: GET /v1/whoami, the cheapest authenticated gateway route;
- tier 0: POST /v1/actions file.read, a full round trip (EVA decides and signs,
  OpenClaw verifies, consumes the grant, reads, reports back to EVA);
- tier 2: POST /v1/actions file.write (pending), then /approve (EVA approves and
  signs, OpenClaw runs it), timed as one propose + approve + execute.

Prints p50 and p99 of each and their ratio to the baseline's p50.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from sonia.testing import FreshStack


def timed(n: int, call: Callable[[int], None]) -> list[float]:
    samples = []
    for i in range(n):
        start = time.perf_counter()
        call(i)
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=300)
    n = parser.parse_args().n
    with tempfile.TemporaryDirectory(prefix="sonia-bench-") as tmp, \
            FreshStack(Path(tmp) / "home") as stack:
        stack.up()
        (stack.home.workspace / "bench.txt").write_text("benchmark\n")
        user = httpx.Client(base_url=stack.url(), headers=stack.user_headers(), timeout=30)
        approver = httpx.Client(base_url=stack.url(), headers=stack.approver_headers(),
                                timeout=30)

        def whoami(_: int) -> None:
            assert user.get("/v1/whoami").status_code == 200

        def tier0(_: int) -> None:
            answer = user.post("/v1/actions", json={"tool": "file.read",
                                                    "args": {"path": "bench.txt"}})
            assert answer.status_code == 200, answer.text

        def tier2(i: int) -> None:
            proposed = user.post("/v1/actions", json={
                "tool": "file.write", "args": {"path": f"bench/{i}.txt", "content": "x",
                                               "parents": True}})
            assert proposed.status_code == 202, proposed.text
            done = approver.post(f"/v1/actions/{proposed.json()['id']}/approve")
            assert done.status_code == 200, done.text

        for warm in (whoami, tier0):
            timed(20, warm)
        rows = {"GET /v1/whoami (baseline)": timed(n, whoami),
                "tier 0 file.read round trip": timed(n, tier0),
                "tier 2 propose + approve + execute": timed(max(1, n // 2),
                                                            lambda i: tier2(i + 10_000))}
        base = statistics.median(rows["GET /v1/whoami (baseline)"])
        print(f"{'measurement':38} {'n':>5} {'p50 ms':>8} {'p99 ms':>8} {'p50/base':>9}")
        for name, samples in rows.items():
            p50 = statistics.median(samples)
            print(f"{name:38} {len(samples):5d} {p50:8.2f} {percentile(samples, 0.99):8.2f} "
                  f"{p50 / base:9.1f}x")
        user.close()
        approver.close()


if __name__ == "__main__":
    main()
