"""Cold start of the whole stack to all-ready, and its full stop, against one bare uvicorn app.

    python bench/startup.py [--runs 5]

Baseline, measured in the same run: the time for a bare uvicorn process with a
one-route Starlette app to answer its first request. The ratio says what six
services, their readiness checks and the supervisor cost on top of that.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx

from sonia.kit.deadline import wait_until
from sonia.testing import FreshStack

BARE_APP = textwrap.dedent("""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def ok(request):
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/", ok)])
""")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bare_uvicorn(folder: Path) -> tuple[float, float]:
    (folder / "bare_app.py").write_text(BARE_APP)
    port = free_port()
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "bare_app:app", "--port", str(port),
         "--log-level", "warning"], cwd=folder)
    try:
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/", timeout=0.5).status_code == 200,
                   timeout=60, interval=0.01, what="bare uvicorn ready")
        ready = time.perf_counter() - start
        stop_start = time.perf_counter()
        proc.terminate()
        proc.wait(timeout=30)
        return ready, time.perf_counter() - stop_start
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def stack_cycle(folder: Path) -> tuple[float, float, float]:
    stack = FreshStack(folder)
    start = time.perf_counter()
    ready = stack.up()
    up_s = time.perf_counter() - start
    report = stack.down()
    return up_s, max(ready.values()), report.seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    bare_up, bare_down, stack_up, stack_down = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            b_up, b_down = bare_uvicorn(Path(tmp))
            s_up, _, s_down = stack_cycle(Path(tmp) / f"home{i}")
            bare_up.append(b_up)
            bare_down.append(b_down)
            stack_up.append(s_up)
            stack_down.append(s_down)
            print(f"run {i + 1}: stack up {s_up:.2f}s down {s_down:.2f}s | "
                  f"bare uvicorn up {b_up:.2f}s down {b_down:.2f}s")
    med = statistics.median
    print(f"\nmedian of {args.runs} runs")
    print(f"  stack cold start to all-ready : {med(stack_up):6.2f} s")
    print(f"  stack full stop               : {med(stack_down):6.2f} s")
    print(f"  bare uvicorn start to 200     : {med(bare_up):6.2f} s")
    print(f"  bare uvicorn stop             : {med(bare_down):6.2f} s")
    print(f"  ratio start (stack / bare)    : {med(stack_up) / med(bare_up):6.2f}x")
    print(f"  ratio stop  (stack / bare)    : {med(stack_down) / med(bare_down):6.2f}x")


if __name__ == "__main__":
    main()
