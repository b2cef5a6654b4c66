"""An open-loop load generator, the measuring instrument of the soak gate.

Open loop means the schedule does not wait for the system: each stream has a
fixed arrival schedule (one request every 1/rate seconds, or Poisson arrivals),
and every request is launched at its scheduled time whether or not earlier ones
have finished. A closed loop ("send, wait, send again") slows down exactly when
the system does and so hides the stalls it should measure (coordinated
omission); for the same reason latency is measured from the *scheduled* send
time, not from when the request actually left.

Three things keep the instrument honest, and each is recorded:

- scheduler lag (actual launch time - scheduled time), per window;
- concurrency is capped by a slot counter taken without waiting: when every slot
  is busy the request is counted as *dropped*, never queued, so the schedule
  keeps its pace;
- a window is flagged `behind` when the lag p99 or the fraction of dropped
  requests passes its threshold: the numbers of such a window describe the
  generator, not the system, and the verdict treats them as invalid evidence.

Every request carries a fresh `X-Correlation-ID` (the stream's `make_request`
must send it); a seeded sample of them, and the first ones that failed, are kept
for looking up the matching log lines afterwards.

Results are aggregated per window (60 s in the release profile, a few seconds in
the quick one): one HDR histogram per route (microseconds, 1 us to 60 s, 3
significant digits) gives p50/p95/p99/max of successful requests; failures are
counted by class. Each window becomes one CSV row, written, flushed and fsynced
as the window closes, so a run that is stopped or killed still leaves its
evidence; `load_rows` describes the columns.

A request belongs to the window in which it completed (or, when dropped, was
scheduled). Percentile cells are empty when a window had no successful request.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import heapq
import math
import os
import random
import re
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp
from hdrh.histogram import HdrHistogram

from sonia.gates.soak.load_rows import (
    ERROR_CLASSES,
    ServiceSample,
    route_field,
    row_columns,
    service_cells,
)

__all__ = [
    "CORRELATION_HEADER",
    "LoadGenerator",
    "LoadProgress",
    "LoadResult",
    "RequestFn",
    "Row",
    "ServiceSampler",
    "Stream",
    "classify_exception",
    "open_client",
    "outcome_of",
]

CORRELATION_HEADER = "X-Correlation-ID"
LOWEST_US = 1
HIGHEST_US = 60_000_000
SIGNIFICANT_DIGITS = 3
RequestFn = Callable[[aiohttp.ClientSession, str], Awaitable[tuple[bool, str | None]]]
"""`make_request(client, correlation_id) -> (ok, error_class or None)`."""
ServiceSampler = Callable[[], Mapping[str, ServiceSample]]
"""Returns what was read of each service (memory, uptime, restarts); a service left
out, or a None field, becomes an empty cell: a missing sample, never a zero."""
Row = dict[str, Any]

_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_RESERVED = frozenset({"all", "uss", "uptime_s", "restarts"})


def outcome_of(status: int) -> tuple[bool, str | None]:
    """Classify an HTTP status: 1xx-3xx ok, else "4xx" or "5xx"."""
    if status < 400:
        return True, None
    return False, "4xx" if status < 500 else "5xx"


def classify_exception(exc: BaseException) -> str:
    """The failure class of an exception raised while making a request."""
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return "timeout"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connect"
    if isinstance(exc, aiohttp.ClientError):
        return "transport"
    return "other"


def open_client(base_url: str, *, max_concurrency: int,
                request_timeout_s: float) -> aiohttp.ClientSession:
    """The client a `LoadGenerator` sends through: aiohttp, whose C parser costs a
    quarter of httpx's CPU per request (`bench/soak_generator.py`: with httpx the
    generator fell behind its schedule near 300 req/s on a core that aiohttp keeps
    in pace at 3,000). Its pool allows `max_concurrency` connections, so a request
    never waits for a connection (that would show as latency the system did not
    cause); no cookies, no proxy from the environment, and no request sent twice."""
    connector = aiohttp.TCPConnector(limit=max_concurrency, limit_per_host=0)
    session = aiohttp.ClientSession(
        base_url=base_url, connector=connector,
        timeout=aiohttp.ClientTimeout(total=request_timeout_s),
        cookie_jar=aiohttp.DummyCookieJar(), trust_env=False)
    # aiohttp sends an idempotent request (GET, PUT, DELETE) again, once and silently,
    # when a kept-alive connection drops under it: a failure the instrument must count.
    session._retry_connection = False
    return session


@dataclass(frozen=True)
class Stream:
    """One kind of traffic: a name (the route label), a rate and how to make a request."""

    name: str
    rate_per_s: float
    make_request: RequestFn
    poisson: bool = False

    def __post_init__(self) -> None:
        if not _NAME.match(self.name) or self.name in _RESERVED:
            raise ValueError(
                f"stream name {self.name!r} must be letters, digits, '_' or '-', "
                f"and not one of {sorted(_RESERVED)}"
            )
        if not (self.rate_per_s > 0 and math.isfinite(self.rate_per_s)):
            raise ValueError(f"stream {self.name}: rate must be > 0, got {self.rate_per_s}")


@dataclass(frozen=True)
class LoadProgress:
    """A snapshot for a progress display."""

    elapsed_s: float
    duration_s: float
    scheduled: int
    completed: int
    errors: int
    dropped: int
    in_flight: int
    windows: int
    windows_behind: int


@dataclass
class LoadResult:
    """The totals of a run; the per-window detail is in the CSV."""

    csv_path: Path
    duration_s: float
    windows: int
    windows_behind: int
    routes: dict[str, dict[str, Any]]
    scheduled: int
    completed: int
    errors: int
    dropped: int
    abandoned: int
    lag_p99_ms: float
    lag_max_ms: float
    behind: bool
    correlation_samples: list[dict[str, Any]]
    error_samples: list[dict[str, Any]]
    exceptions: dict[str, int]
    sampling_errors: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "csv_path": self.csv_path.name, "duration_s": self.duration_s,
            "windows": self.windows, "windows_behind": self.windows_behind,
            "routes": self.routes, "scheduled": self.scheduled, "completed": self.completed,
            "errors": self.errors, "dropped": self.dropped, "abandoned": self.abandoned,
            "lag_p99_ms": self.lag_p99_ms, "lag_max_ms": self.lag_max_ms,
            "behind": self.behind, "correlation_samples": self.correlation_samples,
            "error_samples": self.error_samples, "exceptions": self.exceptions,
            "sampling_errors": self.sampling_errors,
        }


def _histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


def _record(hist: HdrHistogram, seconds: float) -> None:
    hist.record_value(min(HIGHEST_US, max(LOWEST_US, round(seconds * 1_000_000))))


def _ms(hist: HdrHistogram, percentile: float | None) -> float | str:
    if hist.get_total_count() == 0:
        return ""
    value = hist.get_max_value() if percentile is None else \
        hist.get_value_at_percentile(percentile)
    return round(float(value) / 1000.0, 3)


@dataclass
class _RouteStats:
    hist: HdrHistogram = field(default_factory=_histogram)
    scheduled: int = 0
    count: int = 0
    ok: int = 0
    dropped: int = 0
    errors: Counter[str] = field(default_factory=Counter)

    def cells(self, route: str) -> Row:
        cells: Row = {
            route_field(route, "scheduled"): self.scheduled,
            route_field(route, "count"): self.count,
            route_field(route, "ok"): self.ok,
            route_field(route, "errors"): sum(self.errors.values()),
            route_field(route, "dropped"): self.dropped,
            route_field(route, "p50_ms"): _ms(self.hist, 50),
            route_field(route, "p95_ms"): _ms(self.hist, 95),
            route_field(route, "p99_ms"): _ms(self.hist, 99),
            route_field(route, "max_ms"): _ms(self.hist, None),
        }
        for cls in ERROR_CLASSES:
            cells[route_field(route, f"err_{cls}")] = self.errors[cls]
        return cells


@dataclass
class _Window:
    routes: dict[str, _RouteStats]
    lag: HdrHistogram = field(default_factory=_histogram)


class LoadGenerator:
    """Drive `streams` through `client` for a duration and write per-window rows.

    The client is the caller's (`open_client` makes one whose pool allows
    `max_concurrency` connections; a smaller pool makes requests wait for a
    connection, which shows, correctly, as latency). `window_seconds` sets the row
    period; the `behind_*` thresholds decide when a window's evidence describes the
    generator rather than the system. `sample_services` runs in a worker thread at
    each window close and fills the cells of every service in `services` (a fixed
    list, so a service that cannot be read at all still has its empty columns).
    """

    def __init__(
        self,
        client: aiohttp.ClientSession,
        streams: Sequence[Stream],
        *,
        csv_path: Path,
        window_seconds: float = 60.0,
        max_concurrency: int = 256,
        request_timeout_s: float = 30.0,
        behind_lag_p99_ms: float = 100.0,
        behind_drop_fraction: float = 0.001,
        services: Sequence[str] = (),
        sample_services: ServiceSampler | None = None,
        on_window: Callable[[Row], None] | None = None,
        on_progress: Callable[[LoadProgress], None] | None = None,
        progress_interval_s: float = 1.0,
        correlation_sample_size: int = 50,
        error_sample_size: int = 50,
        correlation_prefix: str = "load",
        seed: int = 0,
    ) -> None:
        if not streams:
            raise ValueError("at least one stream is needed")
        names = [s.name for s in streams]
        if len(set(names)) != len(names):
            raise ValueError(f"stream names must be unique, got {names}")
        if window_seconds <= 0 or max_concurrency < 1 or request_timeout_s <= 0:
            raise ValueError("window_seconds, max_concurrency and request_timeout_s must be > 0")
        self.client = client
        self.streams = list(streams)
        self.csv_path = csv_path
        self.window_seconds = window_seconds
        self.max_concurrency = max_concurrency
        self.request_timeout_s = request_timeout_s
        self.behind_lag_p99_ms = behind_lag_p99_ms
        self.behind_drop_fraction = behind_drop_fraction
        self.sample_services = sample_services
        self.on_window = on_window
        self.on_progress = on_progress
        self.progress_interval_s = progress_interval_s
        self.correlation_sample_size = correlation_sample_size
        self.error_sample_size = error_sample_size
        self.correlation_prefix = correlation_prefix
        self._rng = random.Random(seed)
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight = 0
        self._seq = 0
        self._t0 = 0.0
        self._wall0 = dt.datetime.now(dt.UTC)
        self._window_start = 0.0
        self._window_index = 0
        self._current = self._new_window()
        self._totals = self._new_window()
        self._windows_behind = 0
        self._completed_seen = 0
        self._samples: list[dict[str, Any]] = []
        self._error_samples: list[dict[str, Any]] = []
        self._exceptions: Counter[str] = Counter()
        self._sampling_errors: list[str] = []
        self._services: list[str] = list(services)
        self._columns: list[str] = []
        self._writer: csv.DictWriter[str] | None = None
        self._csv_file: IO[str] | None = None

    def stop(self) -> None:
        """End the run early: no new arrivals; in-flight requests finish; rows are kept."""
        self._stop.set()

    def _new_window(self) -> _Window:
        return _Window(routes={s.name: _RouteStats() for s in self.streams})

    # the run ------------------------------------------------------------------
    async def run(self, duration_s: float) -> LoadResult:
        """Run the schedule for `duration_s` seconds (or until `stop()`), then drain."""
        loop = asyncio.get_running_loop()
        self._columns = row_columns([s.name for s in self.streams], self._services)
        self.csv_path.parent.mkdir(parents=True, exist_ok=True)
        self._csv_file = open(self.csv_path, "w", newline="", encoding="utf-8")
        try:
            self._writer = csv.DictWriter(self._csv_file, fieldnames=self._columns)
            self._writer.writeheader()
            self._sync_csv()
            self._t0 = self._window_start = loop.time()
            self._wall0 = dt.datetime.now(dt.UTC)
            done = asyncio.Event()
            windows = asyncio.create_task(self._windows(done))
            progress = asyncio.create_task(self._progress(duration_s, done))
            try:
                await self._schedule(duration_s)
                abandoned = await self._drain()
            finally:
                done.set()
                await windows
                await progress
        finally:
            self._csv_file.close()
            self._csv_file = None
        return self._result(loop.time() - self._t0, abandoned)

    async def _schedule(self, duration_s: float) -> None:
        loop = asyncio.get_running_loop()
        end = self._t0 + duration_s
        heap: list[tuple[float, int, int]] = []  # (time, stream index, arrival number)
        for index, stream in enumerate(self.streams):
            first = self._t0 + (self._rng.expovariate(stream.rate_per_s) if stream.poisson
                                else 0.0)
            heapq.heappush(heap, (first, index, 0))
        while heap and not self._stop.is_set():
            when, index, number = heapq.heappop(heap)
            if when >= end:
                continue
            delay = when - loop.time()
            if delay > 0:
                try:
                    async with asyncio.timeout(delay):
                        await self._stop.wait()
                    return
                except TimeoutError:
                    pass
            else:
                await asyncio.sleep(0)  # behind schedule: still let requests progress
            stream = self.streams[index]
            self._launch(stream, when)
            following = (when + self._rng.expovariate(stream.rate_per_s) if stream.poisson
                         else self._t0 + (number + 1) / stream.rate_per_s)
            heapq.heappush(heap, (following, index, number + 1))

    def _launch(self, stream: Stream, scheduled: float) -> None:
        """Start one request now without waiting for anything (the open loop)."""
        lag = asyncio.get_running_loop().time() - scheduled
        _record(self._current.lag, lag)
        _record(self._totals.lag, lag)
        self._current.routes[stream.name].scheduled += 1
        self._totals.routes[stream.name].scheduled += 1
        if self._in_flight >= self.max_concurrency:  # no slot: drop, never wait
            self._current.routes[stream.name].dropped += 1
            self._totals.routes[stream.name].dropped += 1
            return
        self._in_flight += 1
        self._seq += 1
        correlation_id = f"{self.correlation_prefix}-{self._seq:08d}-{secrets.token_hex(4)}"
        task = asyncio.create_task(self._one(stream, scheduled, correlation_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _one(self, stream: Stream, scheduled: float, correlation_id: str) -> None:
        loop = asyncio.get_running_loop()
        try:
            error: str | None
            try:
                async with asyncio.timeout(self.request_timeout_s):
                    ok, error = await stream.make_request(self.client, correlation_id)
            except TimeoutError:
                ok, error = False, "timeout"
            except aiohttp.ClientError as exc:
                ok, error = False, classify_exception(exc)
            except Exception as exc:  # a bug in make_request: counted and named, not hidden
                ok, error = False, "other"
                self._exceptions[f"{type(exc).__name__}: {exc}"[:200]] += 1
            latency = loop.time() - scheduled
            self._complete(stream.name, scheduled, correlation_id, ok, error, latency)
        finally:
            self._in_flight -= 1

    def _complete(self, route: str, scheduled: float, correlation_id: str, ok: bool,
                  error: str | None, latency: float) -> None:
        if not ok and error not in ERROR_CLASSES:
            error = "other"
        for window in (self._current, self._totals):
            stats = window.routes[route]
            stats.count += 1
            if ok:
                stats.ok += 1
                _record(stats.hist, latency)
            else:
                stats.errors[error or "other"] += 1
        sample = {"correlation_id": correlation_id, "route": route, "ok": ok,
                  "error": None if ok else error,
                  "scheduled_s": round(scheduled - self._t0, 6),
                  "latency_ms": round(latency * 1000, 3)}
        self._completed_seen += 1
        if len(self._samples) < self.correlation_sample_size:  # reservoir sample
            self._samples.append(sample)
        else:
            slot = self._rng.randrange(self._completed_seen)
            if slot < self.correlation_sample_size:
                self._samples[slot] = sample
        if not ok and len(self._error_samples) < self.error_sample_size:
            self._error_samples.append(sample)

    async def _drain(self) -> int:
        """Wait for in-flight requests (each bounded by its timeout); cancel stragglers."""
        pending = set(self._tasks)
        if not pending:
            return 0
        _, still = await asyncio.wait(pending, timeout=self.request_timeout_s + 5.0)
        for task in still:
            task.cancel()
        if still:
            await asyncio.wait(still)
        return len(still)

    # windows --------------------------------------------------------------------
    async def _windows(self, done: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while True:
            boundary = self._window_start + self.window_seconds
            final = False
            try:
                async with asyncio.timeout(max(0.0, boundary - loop.time())):
                    await done.wait()
                final = True
            except TimeoutError:
                pass
            await self._close_window(loop.time() if final else boundary)
            if final:
                return

    async def _close_window(self, end: float) -> None:
        window, self._current = self._current, self._new_window()
        start, self._window_start = self._window_start, end
        index = self._window_index
        self._window_index += 1
        in_flight = self._in_flight
        samples = await self._sample_services()
        row = self._row(index, start, end, window, in_flight, samples)
        if row["behind"]:
            self._windows_behind += 1
        if self._writer is not None:
            self._writer.writerow(row)
            self._sync_csv()
        if self.on_window is not None:
            self.on_window(row)

    def _row(self, index: int, start: float, end: float, window: _Window, in_flight: int,
             samples: Mapping[str, ServiceSample]) -> Row:
        row: Row = {
            "window": index,
            "start_utc": (self._wall0 + dt.timedelta(seconds=start - self._t0)).isoformat(),
            "start_s": round(start - self._t0, 3),
            "end_s": round(end - self._t0, 3),
        }
        for route, stats in window.routes.items():
            row.update(stats.cells(route))
        scheduled = sum(s.scheduled for s in window.routes.values())
        dropped = sum(s.dropped for s in window.routes.values())
        lag_p99 = _ms(window.lag, 99)
        behind = (
            (lag_p99 != "" and float(lag_p99) > self.behind_lag_p99_ms)
            or (scheduled > 0 and dropped / scheduled > self.behind_drop_fraction)
        )
        row.update({
            "all.scheduled": scheduled,
            "all.count": sum(s.count for s in window.routes.values()),
            "all.errors": sum(sum(s.errors.values()) for s in window.routes.values()),
            "all.dropped": dropped,
            "lag_p99_ms": lag_p99,
            "lag_max_ms": _ms(window.lag, None),
            "in_flight": in_flight,
            "behind": int(behind),
        })
        for service in self._services:
            row.update(service_cells(service, samples.get(service)))
        return row

    def _call_sampler(self) -> Mapping[str, ServiceSample]:
        assert self.sample_services is not None
        try:
            return dict(self.sample_services())
        except StopIteration as exc:  # would hang the awaiting future: make it an error
            raise RuntimeError("sample_services raised StopIteration") from exc

    async def _sample_services(self) -> Mapping[str, ServiceSample]:
        if self.sample_services is None:
            return {}
        try:
            return await asyncio.to_thread(self._call_sampler)
        except Exception as exc:  # the sampler failed: empty cells this window, named here
            if len(self._sampling_errors) < 20:
                self._sampling_errors.append(f"{type(exc).__name__}: {exc}")
            return {}

    def _sync_csv(self) -> None:
        assert self._csv_file is not None
        self._csv_file.flush()
        os.fsync(self._csv_file.fileno())

    async def _progress(self, duration_s: float, done: asyncio.Event) -> None:
        if self.on_progress is None:
            return
        while True:
            self.on_progress(self._snapshot(duration_s))
            try:
                async with asyncio.timeout(self.progress_interval_s):
                    await done.wait()
                break
            except TimeoutError:
                continue
        self.on_progress(self._snapshot(duration_s))

    def _snapshot(self, duration_s: float) -> LoadProgress:
        routes = self._totals.routes.values()
        return LoadProgress(
            elapsed_s=asyncio.get_running_loop().time() - self._t0,
            duration_s=duration_s,
            scheduled=sum(s.scheduled for s in routes),
            completed=sum(s.count for s in routes),
            errors=sum(sum(s.errors.values()) for s in routes),
            dropped=sum(s.dropped for s in routes),
            in_flight=self._in_flight,
            windows=self._window_index,
            windows_behind=self._windows_behind,
        )

    def _result(self, elapsed: float, abandoned: int) -> LoadResult:
        routes = {name: stats.cells(name) for name, stats in self._totals.routes.items()}
        routes = {name: {k.split(".", 1)[1]: v for k, v in cells.items()}
                  for name, cells in routes.items()}
        scheduled = sum(s.scheduled for s in self._totals.routes.values())
        dropped = sum(s.dropped for s in self._totals.routes.values())
        lag_p99 = _ms(self._totals.lag, 99)
        lag_max = _ms(self._totals.lag, None)
        behind = (
            (lag_p99 != "" and float(lag_p99) > self.behind_lag_p99_ms)
            or (scheduled > 0 and dropped / scheduled > self.behind_drop_fraction)
            or abandoned > 0
        )
        return LoadResult(
            csv_path=self.csv_path,
            duration_s=round(elapsed, 3),
            windows=self._window_index,
            windows_behind=self._windows_behind,
            routes=routes,
            scheduled=scheduled,
            completed=sum(s.count for s in self._totals.routes.values()),
            errors=sum(sum(s.errors.values()) for s in self._totals.routes.values()),
            dropped=dropped,
            abandoned=abandoned,
            lag_p99_ms=float(lag_p99) if lag_p99 != "" else 0.0,
            lag_max_ms=float(lag_max) if lag_max != "" else 0.0,
            behind=behind,
            correlation_samples=sorted(self._samples, key=lambda s: s["scheduled_s"]),
            error_samples=list(self._error_samples),
            exceptions=dict(self._exceptions),
            sampling_errors=list(self._sampling_errors),
        )
