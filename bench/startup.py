"""Cold start of the whole stack to all-ready, its full stop, each service's import time and
idle memory, each beside a bare FastAPI/uvicorn baseline measured in the same run.

    python bench/startup.py [--runs 5]

Baselines, interleaved with the stack's runs:

- one bare uvicorn process with a one-route Starlette app: time to its first
  answer, and its stop;
- the honest floor of a six-process stack on this machine: six bare FastAPI +
  uvicorn apps (one route each) started at once, time until all six answer, and
  their stop (SIGTERM to all six at once);
- a bare FastAPI + uvicorn process's import time and idle USS, beside each service's.

The stack's start includes the supervisor, every import, migrations and the
readiness checks (the gateway's wait on its five dependencies); its stop, the
three dependency waves. Each service process is also checked to have imported
none of the gates' libraries (scipy, numpy, matplotlib, schemathesis, ...).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx
import psutil

from sonia import SERVICES
from sonia.kit.deadline import wait_until
from sonia.supervisor.state import read_json, state_file
from sonia.testing import FreshStack

BARE_FASTAPI = textwrap.dedent("""
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/")
    async def ok() -> dict[str, str]:
        return {"ok": "yes"}
""")

GATE_ONLY = ("scipy", "numpy", "matplotlib", "schemathesis", "hypothesis", "hdrh", "locust",
             "openai", "llama_cpp")

IMPORT_PROBE = textwrap.dedent("""
    import sys, time
    start = time.perf_counter()
    {imports}
    took = time.perf_counter() - start
    heavy = [m for m in {gate_only!r} if m in sys.modules]
    print(took, ",".join(heavy))
""")

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


def bare_six(folder: Path) -> tuple[float, float, list[int]]:
    """Six bare FastAPI apps started at once: (seconds until all answer, seconds to stop
    all six, their idle USS in bytes)."""
    (folder / "bare_fastapi.py").write_text(BARE_FASTAPI)
    ports = [free_port() for _ in range(6)]
    start = time.perf_counter()
    procs = [subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "bare_fastapi:app", "--port", str(port),
         "--log-level", "warning"], cwd=folder) for port in ports]
    try:
        for port in ports:
            wait_until(lambda p=port: httpx.get(f"http://127.0.0.1:{p}/",  # type: ignore[misc]
                                                timeout=0.5).status_code == 200,
                       timeout=60, interval=0.01, what="bare FastAPI ready")
        ready = time.perf_counter() - start
        uss = [psutil.Process(proc.pid).memory_full_info().uss for proc in procs]
        stop_start = time.perf_counter()
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)
        return ready, time.perf_counter() - stop_start, uss
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def stack_cycle(folder: Path) -> tuple[float, float, dict[str, int]]:
    """(seconds to all-ready, seconds to stop, idle USS of each service in bytes)."""
    stack = FreshStack(folder)
    start = time.perf_counter()
    stack.up()
    up_s = time.perf_counter() - start
    state = read_json(state_file(stack.home)) or {}
    uss = {name: psutil.Process(int(info["pid"])).memory_full_info().uss
           for name, info in state.get("services", {}).items()}
    report = stack.down()
    return up_s, report.seconds, uss


def import_time(imports: str) -> tuple[float, str]:
    """Seconds a fresh interpreter takes to run `imports`, and which gate-only
    libraries it loaded on the way."""
    code = IMPORT_PROBE.format(imports=imports, gate_only=GATE_ONLY)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    return float(out[0]), (out[1] if len(out) > 1 else "")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    rows: dict[str, list[float]] = {k: [] for k in (
        "bare_up", "bare_down", "six_up", "six_down", "stack_up", "stack_down")}
    uss: dict[str, list[int]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            b_up, b_down = bare_uvicorn(Path(tmp))
            six_up, six_down, six_uss = bare_six(Path(tmp))
            s_up, s_down, s_uss = stack_cycle(Path(tmp) / f"home{i}")
            for key, value in (("bare_up", b_up), ("bare_down", b_down), ("six_up", six_up),
                               ("six_down", six_down), ("stack_up", s_up),
                               ("stack_down", s_down)):
                rows[key].append(value)
            uss.setdefault("bare FastAPI", []).extend(six_uss)
            for name, value in s_uss.items():
                uss.setdefault(name, []).append(value)
            print(f"run {i + 1}: stack up {s_up:.2f}s down {s_down:.2f}s | six bare FastAPI "
                  f"up {six_up:.2f}s down {six_down:.2f}s | bare uvicorn up {b_up:.2f}s "
                  f"down {b_down:.2f}s")
    med = statistics.median
    print(f"\nmedian of {args.runs} runs (interleaved)")
    print(f"{'measure':34} {'stack':>8} {'baseline':>9} {'ratio':>7}  baseline")
    for label, stack_key, base_key, base_name in (
            ("cold start to all-ready", "stack_up", "six_up", "six bare FastAPI apps at once"),
            ("cold start to all-ready", "stack_up", "bare_up", "one bare uvicorn app"),
            ("full stop", "stack_down", "six_down", "six bare FastAPI apps at once"),
            ("full stop", "stack_down", "bare_down", "one bare uvicorn app")):
        stack_s, base_s = med(rows[stack_key]), med(rows[base_key])
        print(f"{label:34} {stack_s:7.2f}s {base_s:8.2f}s {stack_s / base_s:6.2f}x  {base_name}")
    bare_uss = med(uss.pop("bare FastAPI"))
    print(f"\nidle memory (USS, median), against a bare FastAPI + uvicorn process "
          f"({bare_uss / 2**20:.1f} MiB)")
    for name, values in uss.items():
        print(f"  {name:9} {med(values) / 2**20:6.1f} MiB  {med(values) / bare_uss:5.2f}x")
    print("\nimport time in a fresh interpreter (median of 3), against fastapi + uvicorn")
    bare_imports = [import_time("import fastapi, uvicorn")[0] for _ in range(3)]
    base = med(bare_imports)
    print(f"  {'bare':9} {base * 1000:6.0f} ms")
    for name in SERVICES:
        probes = [import_time(f"import sonia.services.runner\n"
                              f"import sonia.services.{name}.app") for _ in range(3)]
        took = med([p[0] for p in probes])
        heavy = ",".join(sorted({h for _, hs in probes for h in hs.split(",") if h}))
        print(f"  {name:9} {took * 1000:6.0f} ms  {took / base:5.2f}x  "
              f"gate-only libraries imported: {heavy or 'none'}")
    print(f"load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
