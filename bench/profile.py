"""Where a request's time goes, across every service it crosses: CPU per request and flame graphs.

    python bench/profile.py [--n 300] [--seconds 12] [--out bench/profiles]

One fresh stack (builtin provider). For each path, requests are sent one after
the other from one client:

  * whoami: GET /v1/whoami, the baseline;
  * chat:   POST /v1/chat (recall, history, generate, store);
  * tier0:  POST /v1/actions file.read (decide, grant, verify, consume, run, report);
  * tier2:  POST /v1/actions file.write, then /approve (approve, grant, run, report).

Two phases per path:

1. Counting (no profiler attached): `--n` requests; the wall-clock p50, and the
   CPU seconds each service process spent (utime + stime from /proc, threads
   included) divided by the number of requests. CPU per request hardly moves
   with the machine's load, unlike latency, so it is the figure to compare
   before and after a change on a shared machine.
2. Sampling: py-spy (`pip install py-spy`) samples every service for
   `--seconds` while the same requests run, and the samples of all services are
   merged under one root per service into `<out>/<path>.svg` (bench/flamegraph.py).
   Waiting in the event loop is not sampled
   (py-spy leaves idle threads out); a thread blocked in fsync is.

Prints the CPU table, then per path the functions with the most samples of their own.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from flamegraph import parse_collapsed, render, tree  # noqa: E402

from sonia import SERVICES  # noqa: E402
from sonia.supervisor.state import read_json, state_file  # noqa: E402
from sonia.testing import FreshStack  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PATHS = ("whoami", "chat", "tier0", "tier2")
MESSAGES = ("My favourite colour is teal.", "What is my favourite colour?", "hello",
            "My sister lives in Lisbon.", "Where does my sister live?")

# Frames every sample starts with (interpreter start, uvicorn, the event loop or
# a worker thread): cut so the graph starts where the service's own work does.
CUT_AFTER = ("Runner.run (asyncio/runners.py)", "_WorkItem.run (concurrent/futures/thread.py)")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def service_pids(stack: FreshStack) -> dict[str, int]:
    state = read_json(state_file(stack.home)) or {}
    return {name: int(state["services"][name]["pid"]) for name in SERVICES}


def requester(stack: FreshStack) -> Callable[[str, int], None]:
    user = httpx.Client(base_url=stack.url(), headers=stack.user_headers(), timeout=30)
    approver = httpx.Client(base_url=stack.url(), headers=stack.approver_headers(), timeout=30)

    def one(path: str, i: int) -> None:
        if path == "whoami":
            answer = user.get("/v1/whoami")
        elif path == "chat":
            answer = user.post("/v1/chat", json={"message": MESSAGES[i % len(MESSAGES)]})
        elif path == "tier0":
            answer = user.post("/v1/actions", json={"tool": "file.read",
                                                    "args": {"path": "bench.txt"}})
        else:
            proposed = user.post("/v1/actions", json={
                "tool": "file.write", "args": {"path": f"p/{i}.txt", "content": "x",
                                               "parents": True}})
            assert proposed.status_code == 202, proposed.text
            answer = approver.post(f"/v1/actions/{proposed.json()['id']}/approve")
        assert answer.status_code == 200, answer.text

    return one


def count(one: Callable[[str, int], None], path: str, n: int, pids: dict[str, int],
          offset: int) -> tuple[float, dict[str, float]]:
    """(wall p50 ms, CPU ms per request per service) over `n` sequential requests."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    walls = []
    for i in range(n):
        start = time.perf_counter()
        one(path, offset + i)
        walls.append((time.perf_counter() - start) * 1000)
    after = {name: cpu_seconds(pid) for name, pid in pids.items()}
    return statistics.median(walls), {name: (after[name] - before[name]) * 1000 / n
                                      for name in pids}


def trim(frames: list[str]) -> list[str]:
    for marker in CUT_AFTER:
        name = marker.split(" (")[0]
        for index, frame in enumerate(frames):
            if frame.startswith(name + " (") and marker.split(" (")[1] in frame:
                return frames[index + 1:]
    return frames


def idle(frames: list[str]) -> bool:
    """A pool thread waiting for work (py-spy counts a thread blocked on a lock as busy)."""
    return frames[-1].startswith("_worker (") or (
        frames[-1].startswith("Condition.wait (") and len(frames) > 1
        and frames[-2].startswith("Queue.get ("))


def sample(one: Callable[[str, int], None], path: str, seconds: float, pids: dict[str, int],
           folder: Path, spy: str, offset: int) -> tuple[list[tuple[list[str], int]], int]:
    """Run py-spy on every service while `path` is driven; the merged stacks and request count."""
    spies = {}
    for name, pid in pids.items():
        out = folder / f"{path}-{name}.txt"
        spies[name] = (out, subprocess.Popen(
            [spy, "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "250", "-f", "raw",
             "--nolineno", "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    time.sleep(0.5)  # py-spy attaches before the first request is timed
    done = 0
    stop = threading.Event()
    threading.Timer(seconds - 1.0, stop.set).start()
    while not stop.is_set():
        one(path, offset + done)
        done += 1
    merged: list[tuple[list[str], int]] = []
    for name, (out, proc) in spies.items():
        proc.wait(timeout=seconds + 30)
        if not out.exists():
            continue
        for frames, n in parse_collapsed(out.read_text()):
            frames = trim(frames)
            if not frames or idle(frames):
                continue
            merged.append(([name, *frames], n))
    return merged, done


def self_time(stacks: list[tuple[list[str], int]], top: int = 12) -> list[tuple[str, int]]:
    own: Counter[str] = Counter()
    for frames, n in stacks:
        own[f"{frames[0]}: {frames[-1]}"] += n
    return own.most_common(top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=300, help="requests per path when counting")
    parser.add_argument("--seconds", type=float, default=12.0, help="sampling time per path")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for the flame graphs <path>.svg (none: no graphs)")
    parser.add_argument("--paths", default=",".join(PATHS))
    parser.add_argument("--collapsed", action="store_true",
                        help="also write <path>.collapsed (the merged stacks, for other tools)")
    args = parser.parse_args()
    paths = [p for p in args.paths.split(",") if p]
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    graphs = args.out is not None and Path(spy).exists()
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    rows = {}
    with tempfile.TemporaryDirectory(prefix="sonia-bench-profile-") as tmp, \
            FreshStack(Path(tmp) / "home") as stack:
        stack.up()
        (stack.home.workspace / "bench.txt").write_text("benchmark\n")
        pids = service_pids(stack)
        one = requester(stack)
        for path in paths:
            count(one, path, 20, pids, 100_000)  # warm connections and caches
        for path in paths:
            rows[path] = count(one, path, args.n, pids, 200_000)
        if graphs:
            assert args.out is not None
            args.out.mkdir(parents=True, exist_ok=True)
            for path in paths:
                if path == "whoami":
                    continue
                stacks, done = sample(one, path, args.seconds, pids, Path(tmp), spy, 300_000)
                samples = sum(n for _, n in stacks)
                if args.collapsed:
                    (args.out / f"{path}.collapsed").write_text(
                        "".join(f"{';'.join(f)} {n}\n" for f, n in stacks))
                (args.out / f"{path}.svg").write_text(render(
                    tree(stacks, root=path),
                    f"{path}: every service's samples, one root per service",
                    f"{done} requests in {args.seconds:g} s sampled at 250 Hz per process; "
                    f"{samples} samples; width = share of samples (CPU and blocking I/O)"))
                print(f"\n{path}: {done} requests sampled, {samples} samples; own samples:")
                for name, n in self_time(stacks):
                    print(f"  {100.0 * n / max(1, samples):5.1f}%  {name}")
    print(f"\nsequential requests, {args.n} per path; CPU ms per request by service")
    header = "".join(f"{name:>9}" for name in SERVICES)
    print(f"{'path':<7} {'p50 ms':>8}{header} {'total':>8} {'cpu/base':>9}")
    base_total = sum(rows["whoami"][1].values()) if "whoami" in rows else 0.0
    for path, (p50, cpu) in rows.items():
        total = sum(cpu.values())
        ratio = f"{total / base_total:8.1f}x" if base_total else ""
        print(f"{path:<7} {p50:8.2f}" + "".join(f"{cpu[name]:9.2f}" for name in SERVICES)
              + f" {total:8.2f} {ratio}")
    print(f"load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
