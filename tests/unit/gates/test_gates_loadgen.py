"""The open-loop load generator against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import csv
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from sonia.gates.soak.load_rows import ServiceSample
from sonia.gates.soak.loadgen import (
    CORRELATION_HEADER,
    LoadGenerator,
    LoadProgress,
    LoadResult,
    RequestFn,
    Row,
    Stream,
    open_client,
    outcome_of,
)


@dataclass
class Server:
    url: str
    seen_ids: list[str] = field(default_factory=list)


def make_app(server: Server) -> Starlette:
    async def fast(request: Request) -> PlainTextResponse:
        server.seen_ids.append(request.headers.get(CORRELATION_HEADER, ""))
        return PlainTextResponse("ok")

    async def slow(request: Request) -> PlainTextResponse:
        await asyncio.sleep(float(request.query_params["delay"]))
        return PlainTextResponse("slow")

    async def status(request: Request) -> PlainTextResponse:
        return PlainTextResponse("", status_code=int(request.path_params["code"]))

    return Starlette(routes=[Route("/fast", fast), Route("/slow", slow),
                             Route("/status/{code:int}", status)])


@pytest.fixture()
def server() -> Iterator[Server]:
    """A real uvicorn server in a thread, on a free loopback port, stopped in `finally`."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    info = Server(url=f"http://127.0.0.1:{port}")
    config = uvicorn.Config(make_app(info), lifespan="off", ws="none", http="h11",
                            log_level="warning", access_log=False,
                            timeout_graceful_shutdown=1)
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not uv.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.01)
        yield info
    finally:
        uv.should_exit = True
        thread.join(10)
        sock.close()


def get(path: str) -> RequestFn:
    async def make(client: aiohttp.ClientSession, correlation_id: str
                   ) -> tuple[bool, str | None]:
        async with client.get(path, headers={CORRELATION_HEADER: correlation_id}) as response:
            await response.read()
            return outcome_of(response.status)
    return make


def run(url: str, streams: list[Stream], duration: float, csv_path: Path,
        **options: object) -> LoadResult:
    async def main() -> LoadResult:
        async with open_client(url, max_concurrency=256, request_timeout_s=30) as client:
            generator = LoadGenerator(client, streams, csv_path=csv_path, **options)  # type: ignore[arg-type]
            return await generator.run(duration)
    return asyncio.run(main())


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_holds_a_modest_rate_and_tags_every_request(server: Server, tmp_path: Path) -> None:
    progress: list[LoadProgress] = []
    # How far behind a loaded machine runs is for bench/soak_generator.py; here the
    # threshold is out of reach so only the counting is tested.
    result = run(server.url, [Stream("fast", 40, get("/fast"))], 2.0, tmp_path / "m.csv",
                 window_seconds=0.5, on_progress=progress.append, progress_interval_s=0.2,
                 services=["svc"], behind_lag_p99_ms=60_000,
                 sample_services=lambda: {"svc": ServiceSample(1234, 5.0, 0)})
    assert result.scheduled == 80 and result.completed == 80  # exactly the schedule
    assert result.errors == 0 and result.dropped == 0 and not result.behind
    rows = read_rows(tmp_path / "m.csv")
    assert len(rows) >= 4
    assert sum(int(r["fast.count"]) for r in rows) == 80
    assert all(r["uss.svc"] == "1234" and r["uptime_s.svc"] == "5.0" and r["restarts.svc"] == "0"
               for r in rows)
    assert len(set(server.seen_ids)) == 80  # a fresh correlation id on every request
    assert {s["correlation_id"] for s in result.correlation_samples} <= set(server.seen_ids)
    assert progress and progress[-1].completed == 80


def test_latency_is_measured_from_the_scheduled_time(server: Server, tmp_path: Path) -> None:
    """A stalled client (here: 0.5 s of blocking) shows in latency, as users would see it."""
    calls = 0
    fast = get("/fast")

    async def stalling(client: aiohttp.ClientSession, correlation_id: str
                       ) -> tuple[bool, str | None]:
        nonlocal calls
        calls += 1
        if calls == 10:
            time.sleep(0.5)  # blocks the event loop: every arrival during it launches late
        return await fast(client, correlation_id)

    result = run(server.url, [Stream("chat", 20, stalling)], 2.0, tmp_path / "m.csv",
                 window_seconds=10, behind_lag_p99_ms=10_000)
    chat = result.routes["chat"]
    assert result.completed == 40
    assert result.lag_max_ms >= 400  # the arrivals scheduled during the stall
    assert chat["p95_ms"] >= 300  # a closed-loop, send-time measurement would say ~1 ms
    assert chat["p50_ms"] < chat["p95_ms"]  # the stall is in the tail, not the median


def test_saturated_concurrency_drops_instead_of_waiting(server: Server, tmp_path: Path) -> None:
    result = run(server.url, [Stream("slow", 50, get("/slow?delay=1.0"))], 1.0,
                 tmp_path / "m.csv", window_seconds=10, max_concurrency=5)
    assert result.scheduled == 50
    assert result.completed == 5 and result.dropped == 45
    assert result.routes["slow"]["p50_ms"] >= 1000
    # the schedule kept its pace: no arrival waited for a slot (which takes >= 1 s)
    assert result.lag_max_ms < result.routes["slow"]["p50_ms"]
    assert result.behind and result.windows_behind == 1


def test_failures_are_counted_by_class(server: Server, tmp_path: Path) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    dead_port = closed.getsockname()[1]
    closed.close()  # nothing listens there now

    async def refused(client: aiohttp.ClientSession, correlation_id: str
                      ) -> tuple[bool, str | None]:
        async with client.get(f"http://127.0.0.1:{dead_port}/") as response:
            return outcome_of(response.status)

    streams = [Stream("missing", 4, get("/status/404")), Stream("broken", 4, get("/status/503")),
               Stream("refused", 4, refused), Stream("hung", 4, get("/slow?delay=3"))]
    result = run(server.url, streams, 0.5, tmp_path / "m.csv", request_timeout_s=0.3)
    assert result.routes["missing"]["err_4xx"] == 2
    assert result.routes["broken"]["err_5xx"] == 2
    assert result.routes["refused"]["err_connect"] == 2
    assert result.routes["hung"]["err_timeout"] == 2
    assert result.errors == 8 and len(result.error_samples) == 8
    assert result.routes["hung"]["p95_ms"] == ""  # failures never enter the latency histogram


def test_rows_are_on_disk_as_each_window_closes_and_stop_keeps_them(
    server: Server, tmp_path: Path
) -> None:
    path = tmp_path / "soak-metrics.csv"
    rows_on_disk: list[int] = []

    async def main() -> LoadResult:
        async with open_client(server.url, max_concurrency=256,
                               request_timeout_s=30) as client:
            generator: LoadGenerator

            def on_window(row: Row) -> None:
                rows_on_disk.append(len(read_rows(path)))
                if row["window"] == 1:
                    generator.stop()

            generator = LoadGenerator(client, [Stream("fast", 20, get("/fast"))],
                                      csv_path=path, window_seconds=0.3, on_window=on_window)
            return await generator.run(60.0)

    started = time.monotonic()
    result = asyncio.run(main())
    assert time.monotonic() - started < 10  # stopped long before 60 s
    assert rows_on_disk[:2] == [1, 2]  # each row was readable from the file at once
    assert len(read_rows(path)) == result.windows >= 2


def test_a_failing_sampler_leaves_empty_cells_never_zeros(server: Server,
                                                          tmp_path: Path) -> None:
    calls = 0

    def sampler() -> dict[str, ServiceSample]:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise ProcessLookupError("svc exited")  # the service died after the first sample
        return {"svc": ServiceSample(1, 1.0, 0)}

    result = run(server.url, [Stream("fast", 10, get("/fast"))], 0.6, tmp_path / "m.csv",
                 window_seconds=0.2, services=["svc", "unread"], sample_services=sampler)
    rows = read_rows(tmp_path / "m.csv")
    assert len(rows) >= 2 and rows[0]["uss.svc"] == "1"
    last = rows[-1]
    assert last["uss.svc"] == last["uptime_s.svc"] == last["restarts.svc"] == ""
    assert last["uss.unread"] == "", "a service the sampler never read still has its columns"
    assert result.sampling_errors and "svc exited" in result.sampling_errors[0]


def test_a_reading_that_failed_for_one_field_is_an_empty_cell(server: Server,
                                                              tmp_path: Path) -> None:
    result = run(server.url, [Stream("fast", 10, get("/fast"))], 0.3, tmp_path / "m.csv",
                 window_seconds=10, services=["svc"],
                 sample_services=lambda: {"svc": ServiceSample(None, 12.5, 3)})
    row = read_rows(result.csv_path)[-1]
    assert (row["uss.svc"], row["uptime_s.svc"], row["restarts.svc"]) == ("", "12.5", "3")


def test_stream_names_must_fit_a_column() -> None:
    with pytest.raises(ValueError):
        Stream("all", 1, get("/"))
    with pytest.raises(ValueError):
        Stream("a.b", 1, get("/"))


def test_a_dropped_kept_alive_connection_is_a_failure_never_a_silent_resend(
        tmp_path: Path) -> None:
    """A server that answers the first request of a connection and drops the next one
    on it: the second GET fails as `transport` (aiohttp would otherwise send it again on
    a new connection, and the failure would vanish from the soak's evidence)."""
    requests_seen = 0

    async def main() -> LoadResult:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal requests_seen
            try:
                for answered in (True, False):
                    await reader.readuntil(b"\r\n\r\n")
                    requests_seen += 1
                    if not answered:
                        break  # the kept-alive connection drops under this request
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            async with open_client(f"http://127.0.0.1:{port}", max_concurrency=1,
                                   request_timeout_s=10) as client:
                generator = LoadGenerator(client, [Stream("drop", 2, get("/"))],
                                          csv_path=tmp_path / "m.csv", window_seconds=10)
                return await generator.run(1.0)
        finally:
            server.close()
            await server.wait_closed()

    result = asyncio.run(main())
    assert result.scheduled == 2 and result.completed == 2
    assert result.routes["drop"]["ok"] == 1
    assert result.routes["drop"]["err_transport"] == 1, result.routes["drop"]
    assert requests_seen == 2, "the failed request was not sent again"
