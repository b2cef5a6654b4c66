"""Chat and tier-0 actions on both storage backends, SQLite and PostgreSQL, in one run.

    python bench/storage.py [--n 300] [--rounds 6]

Two fresh stacks (builtin provider) side by side: one on SQLite (the default, a
file per ledger) and one with `[storage] url` on a PostgreSQL server this script
starts on the same machine (`sonia.pgserver`: initdb's defaults, fsync and
synchronous_commit on, shared_buffers 32MB; the services reach it over TCP on
127.0.0.1). Paths, requests one after the other from one client (as
bench/profile.py sends them):

  * whoami: GET /v1/whoami, the baseline (touches no ledger);
  * chat:   POST /v1/chat (recall, history, generate, store);
  * tier0:  POST /v1/actions file.read (decide, grant, consume, run, report).

The `--n` requests of each path on each backend are sent in `--rounds` rounds;
within a round every path runs on both backends back to back, the backend going
first alternating between rounds, so the drift of a shared machine's load falls
on both. For each path and backend: latency p50/p90/p99, and the CPU each
process spent per request (utime + stime from /proc): the six services, and the
PostgreSQL server's processes in two groups, the backends serving the services'
connections and the rest (postmaster, WAL writer, checkpointer, autovacuum, and
any child that exited). Prints the table and the PostgreSQL/SQLite ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

# The repository's root, so the helpers of the other benchmarks import as bench.*
# (a bare `profile` would be the standard library's).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.actions import percentile  # noqa: E402
from bench.profile import cpu_seconds, requester, service_pids  # noqa: E402

from sonia import SERVICES  # noqa: E402
from sonia.pgserver import PostgresServer  # noqa: E402
from sonia.testing import FreshStack  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PATHS = ("whoami", "chat", "tier0")
BACKENDS = ("sqlite", "postgresql")
PG_GROUPS = ("pg backends", "pg other")
PG_SETTINGS = ("server_version", "fsync", "synchronous_commit", "wal_sync_method",
               "full_page_writes", "shared_buffers", "wal_level")


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def postgres_cpu(postmaster: int) -> dict[str, float]:
    """CPU seconds so far of the server's processes: the backends serving a client
    connection, and the rest (the postmaster with every child it has reaped)."""
    own_and_reaped = sum(int(f) for f in _stat(postmaster)[11:15])  # u/stime, cu/cstime
    groups = {"pg backends": 0.0, "pg other": own_and_reaped / CLOCK_TICKS}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = _stat(int(entry.name))
            if int(fields[1]) != postmaster:
                continue
            title = (entry / "cmdline").read_bytes().decode(errors="replace")
        except (OSError, ValueError):
            continue  # exited meanwhile: its CPU is in the postmaster's reaped children
        group = "pg backends" if "127.0.0.1(" in title or "[local]" in title else "pg other"
        groups[group] += cpu_seconds(int(entry.name))
    return groups


class Target:
    """One stack and what it is measured with: its client and the processes it counts."""

    def __init__(self, stack: FreshStack, postmaster: int | None) -> None:
        self.postmaster = postmaster
        self.pids = service_pids(stack)
        self.one = requester(stack)
        self.latencies: dict[str, list[float]] = {path: [] for path in PATHS}
        self.cpu: dict[str, dict[str, float]] = {
            path: dict.fromkeys((*SERVICES, *PG_GROUPS), 0.0) for path in PATHS}

    def cpu_now(self) -> dict[str, float]:
        now = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        if self.postmaster is not None:
            now.update(postgres_cpu(self.postmaster))
        return now

    def run(self, path: str, n: int, offset: int, *, record: bool = True) -> None:
        before = self.cpu_now()
        walls = []
        for i in range(n):
            start = time.perf_counter()
            self.one(path, offset + i)
            walls.append((time.perf_counter() - start) * 1000)
        after = self.cpu_now()
        if record:
            self.latencies[path].extend(walls)
            for name in after:
                self.cpu[path][name] += (after[name] - before[name]) * 1000

    def figures(self, path: str) -> dict[str, float]:
        walls = self.latencies[path]
        cpu = {name: ms / len(walls) for name, ms in self.cpu[path].items()}
        return {"p50": statistics.median(walls), "p90": percentile(walls, 0.90),
                "p99": percentile(walls, 0.99), "cpu": sum(cpu.values()),
                **{f"cpu {name}": ms for name, ms in cpu.items()}}


def start_stack(tmp: Path, name: str, stack_config: dict, password: str | None,
                exits: ExitStack) -> FreshStack:
    stack = exits.enter_context(FreshStack(tmp / name, config=stack_config))
    if password is not None:
        stack.home.write_storage_password(password)
    stack.up()
    (stack.home.workspace / "bench.txt").write_text("benchmark\n")
    return stack


def width(column: str) -> int:
    return max(9, len(column) + 1)


def print_table(targets: dict[str, Target], n: int) -> None:
    columns = [*SERVICES, *PG_GROUPS]
    print(f"\nsequential requests, {n} per path per backend; latency ms, CPU ms per request")
    print(f"{'path':<7} {'backend':<11}{'p50':>8}{'p90':>8}{'p99':>8}"
          + "".join(f"{c:>{width(c)}}" for c in columns) + f"{'CPU':>8}")
    for path in PATHS:
        for backend, target in targets.items():
            f = target.figures(path)
            print(f"{path:<7} {backend:<11}{f['p50']:8.2f}{f['p90']:8.2f}{f['p99']:8.2f}"
                  + "".join(f"{f['cpu ' + c]:{width(c)}.2f}" for c in columns)
                  + f"{f['cpu']:8.2f}")
    print("\nPostgreSQL / SQLite, per path (and each path over whoami on the same backend)")
    print(f"{'path':<7}{'p50':>8}{'p90':>8}{'p99':>8}{'CPU':>8}   "
          f"{'p50/whoami sqlite, pg':>22}{'CPU/whoami sqlite, pg':>24}")
    sqlite, pg = targets["sqlite"], targets["postgresql"]
    for path in PATHS:
        a, b = sqlite.figures(path), pg.figures(path)
        base_a, base_b = sqlite.figures("whoami"), pg.figures("whoami")
        print(f"{path:<7}" + "".join(f"{b[k] / a[k]:7.2f}x" for k in ("p50", "p90", "p99", "cpu"))
              + f"   {a['p50'] / base_a['p50']:13.1f}x {b['p50'] / base_b['p50']:6.1f}x"
              + f"{a['cpu'] / base_a['cpu']:15.1f}x {b['cpu'] / base_b['cpu']:6.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=300, help="requests per path per backend")
    parser.add_argument("--rounds", type=int, default=6,
                        help="rounds the requests are split into, alternating the backends")
    args = parser.parse_args()
    per_round = max(1, args.n // args.rounds)
    print(f"machine: {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} at start", flush=True)
    with tempfile.TemporaryDirectory(prefix="sonia-bench-storage-") as tmp, ExitStack() as exits:
        server = PostgresServer.start()
        exits.callback(server.stop)
        with server.admin() as conn:
            settings = {name: conn.execute(f"SHOW {name}").fetchone()[0] for name in PG_SETTINGS}
        print("PostgreSQL: " + ", ".join(f"{k} {v}" for k, v in settings.items())
              + f"; services connect over TCP to {server.host}", flush=True)
        url = server.create_database("sonia")
        targets = {
            "sqlite": Target(start_stack(Path(tmp), "sqlite", {}, None, exits), None),
            "postgresql": Target(start_stack(
                Path(tmp), "postgresql", {"storage": {"url": url}}, server.password, exits),
                server.process.pid),
        }
        for target in targets.values():
            for path in PATHS:  # warm connections, pools and caches
                target.run(path, 20, 100_000, record=False)
        for round_ in range(args.rounds):
            order = BACKENDS if round_ % 2 == 0 else BACKENDS[::-1]
            for path in PATHS:
                for backend in order:
                    targets[backend].run(path, per_round, 200_000 + round_ * per_round)
            print(f"round {round_ + 1}/{args.rounds} done, load average "
                  f"{os.getloadavg()[0]:.2f}", flush=True)
    print_table(targets, per_round * args.rounds)
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at end")


if __name__ == "__main__":
    main()
