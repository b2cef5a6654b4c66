"""How many durable commits (fsync, fdatasync) each kind of request costs, by service.

    python bench/fsyncs.py [--n 50]

Latency on a small machine is mostly the fsyncs a request waits for, one after
another (`bench/floor.py` builds the same shapes from bare parts). This counts
them on a real stack: `strace` attached to every service process while `n`
requests of one kind are sent one at a time, then divided by `n`. Needs strace
(and the right to trace one's own processes). A count, not a timing: it does
not depend on how loaded the machine is.
"""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil

from sonia import SERVICES
from sonia.kit.deadline import wait_until
from sonia.supervisor.state import supervisor_pid_file
from sonia.testing import FreshStack

SYNC = re.compile(r"^(\d+)\s+(?:fsync|fdatasync)\(")


def services_of(stack: FreshStack) -> dict[int, str]:
    """Each service process's pid -> its name (the supervisor's children)."""
    supervisor = psutil.Process(int(supervisor_pid_file(stack.home).read_text()))
    found = {}
    for child in supervisor.children(recursive=True):
        name = next((word for word in child.cmdline() if word in SERVICES), None)
        if name is not None:
            found[child.pid] = name
    return found


def traced_by(pid: int) -> int:
    for row in Path(f"/proc/{pid}/status").read_text().splitlines():
        if row.startswith("TracerPid:"):
            return int(row.split()[1])
    return 0


def count(stack: FreshStack, n: int, send: Callable[[int], object]) -> Counter[str]:
    """Durable commits per service while `send(i)` runs for i in range(n)."""
    services = services_of(stack)
    with tempfile.NamedTemporaryFile(suffix=".strace") as out:
        command = ["strace", "-f", "-qq", "-o", out.name, "-e", "trace=fsync,fdatasync"]
        for pid in services:
            command += ["-p", str(pid)]
        tracer = subprocess.Popen(command, stderr=subprocess.DEVNULL)
        try:
            wait_until(lambda: all(traced_by(pid) == tracer.pid for pid in services),
                       timeout=30, what="strace attached to every service")
            for i in range(n):
                send(i)
        finally:
            tracer.send_signal(signal.SIGINT)
            tracer.wait(timeout=30)
        lines = Path(out.name).read_text().splitlines()
    threads = {t.id: name for pid, name in services.items()
               for t in psutil.Process(pid).threads()}
    counts: Counter[str] = Counter()
    for line in lines:
        if (match := SYNC.match(line)) is not None:
            counts[threads.get(int(match.group(1)), "other")] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=50, help="requests of each kind")
    n = parser.parse_args().n
    with tempfile.TemporaryDirectory(prefix="sonia-bench-") as tmp, \
            FreshStack(Path(tmp) / "home") as stack:
        stack.up()
        (stack.home.workspace / "read.txt").write_text("read me\n")
        user = httpx.Client(base_url=stack.url(), headers=stack.user_headers(), timeout=30)
        approver = httpx.Client(base_url=stack.url(), headers=stack.approver_headers(),
                                timeout=30)

        def ok(response: httpx.Response) -> httpx.Response:
            assert response.status_code < 300, response.text
            return response

        def tier2(i: int) -> None:
            proposed = ok(user.post("/v1/actions", json={
                "tool": "file.write", "args": {"path": f"w{i}.txt", "content": "x"}}))
            ok(approver.post(f"/v1/actions/{proposed.json()['id']}/approve"))

        kinds: dict[str, Callable[[int], object]] = {
            "GET /v1/whoami": lambda i: ok(user.get("/v1/whoami")),
            "POST /v1/chat": lambda i: ok(user.post("/v1/chat", json={"message": "hello"})),
            "POST /v1/chat stating a fact": lambda i: ok(user.post(
                "/v1/chat", json={"message": f"My locker number is {i}."})),
            "tier 0 file.read": lambda i: ok(user.post("/v1/actions", json={
                "tool": "file.read", "args": {"path": "read.txt"}})),
            "tier 0 file.read, idempotency key": lambda i: ok(user.post("/v1/actions", json={
                "tool": "file.read", "args": {"path": "read.txt"}, "idempotency_key": f"k{i}"})),
            "tier 2 propose + approve + run": tier2,
        }
        ok(user.post("/v1/chat", json={"message": "hello"}))  # the session exists
        print(f"durable commits per request ({n} of each, sequential), by service")
        for label, send in kinds.items():
            counts = count(stack, n, send)
            by = ", ".join(f"{name} {c / n:.2f}" for name, c in sorted(counts.items()))
            print(f"  {label:36} {sum(counts.values()) / n:5.2f}   {by}")
        user.close()
        approver.close()


if __name__ == "__main__":
    main()
