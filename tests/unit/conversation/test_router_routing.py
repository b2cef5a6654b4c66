"""Routing: fallbacks, timeouts, quarantine with probe-back, and cancellation.

The providers here are small real implementations of the Provider protocol
whose behaviour a test sets; quarantine runs on a clock the test moves.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from sonia.errors import ConfigError, InvalidArgument, Unavailable
from sonia.services.router.providers import BuiltinProvider, Generation, GenerationRequest
from sonia.services.router.routing import Router

REQUEST = GenerationRequest.of([{"role": "user", "content": "hello"}])


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Scripted:
    """A provider that fails, hangs or answers, as the test says; it counts its calls."""

    def __init__(self, name: str, *, mode: str = "answer", healthy: bool = True) -> None:
        self.name = name
        self.mode = mode
        self.healthy = healthy
        self.calls = 0
        self.health_checks = 0
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def _behave(self) -> None:
        self.calls += 1
        self.started.set()
        if self.mode == "fail":
            raise Unavailable(f"{self.name} is down")
        if self.mode == "hang":
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled.set()
                raise

    async def generate(self, request: GenerationRequest) -> Generation:
        await self._behave()
        return Generation(text=f"from {self.name}", model=self.name, provider=self.name)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[str]:
        await self._behave()
        yield "from "
        if self.mode == "fail-after-first":
            raise Unavailable(f"{self.name} broke mid-stream")
        yield self.name

    async def health(self) -> bool:
        self.health_checks += 1
        if self.mode == "hang":
            await asyncio.Event().wait()
        return self.healthy

    async def models(self) -> list[str]:
        if not self.healthy:
            raise Unavailable(f"{self.name} cannot say")
        return [f"{self.name}-model"]


def make_router(*providers: Scripted | BuiltinProvider, clock: ManualClock | None = None,
                timeout: float = 5.0) -> Router:
    return Router({p.name: p for p in providers},
                  {"default": [p.name for p in providers]},
                  timeout=timeout, quarantine_seconds=30.0, clock=clock or ManualClock())


def test_the_first_provider_that_answers_wins() -> None:
    primary, backup = Scripted("primary"), Scripted("backup")
    generation = asyncio.run(make_router(primary, backup).generate(REQUEST))
    assert generation.provider == "primary"
    assert backup.calls == 0


def test_a_failing_provider_falls_back_to_the_next() -> None:
    primary, backup = Scripted("primary", mode="fail"), Scripted("backup")
    router = make_router(primary, backup)

    generation = asyncio.run(router.generate(REQUEST))

    assert generation.text == "from backup"
    states = {p["name"]: p for p in router.report()}
    assert states["primary"]["state"] == "quarantined"
    assert states["primary"]["last_error"].startswith("UNAVAILABLE")
    assert states["backup"]["state"] == "healthy"


def test_a_provider_that_times_out_falls_back_to_the_next() -> None:
    slow, builtin = Scripted("slow", mode="hang"), BuiltinProvider()
    router = make_router(slow, builtin, timeout=0.05)

    generation = asyncio.run(router.generate(REQUEST))

    assert generation.provider == "builtin"
    assert slow.cancelled.is_set()
    assert {p["name"]: p for p in router.report()}["slow"]["last_error"] == "timed out"


def test_when_every_provider_fails_the_answer_is_unavailable_naming_each() -> None:
    router = make_router(Scripted("a", mode="fail"), Scripted("b", mode="fail"))
    with pytest.raises(Unavailable) as raised:
        asyncio.run(router.generate(REQUEST))
    assert [a["provider"] for a in raised.value.extra["attempts"]] == ["a", "b"]
    assert "a: UNAVAILABLE" in raised.value.detail


def test_a_quarantined_provider_is_skipped_then_probed_back() -> None:
    clock = ManualClock()
    primary, backup = Scripted("primary", mode="fail"), Scripted("backup")
    router = make_router(primary, backup, clock=clock)

    asyncio.run(router.generate(REQUEST))  # primary fails: quarantined
    primary.mode = "answer"
    clock.now += 29.0
    assert asyncio.run(router.generate(REQUEST)).provider == "backup"
    assert (primary.calls, primary.health_checks) == (1, 0)  # skipped, not even probed

    clock.now += 1.0  # the window is over: the next request probes first
    assert asyncio.run(router.generate(REQUEST)).provider == "primary"
    assert (primary.calls, primary.health_checks) == (2, 1)
    assert {p["name"]: p for p in router.report()}["primary"]["state"] == "healthy"


def test_a_probe_that_fails_starts_another_quarantine_window() -> None:
    clock = ManualClock()
    primary, backup = Scripted("primary", mode="fail", healthy=False), Scripted("backup")
    router = make_router(primary, backup, clock=clock)
    asyncio.run(router.generate(REQUEST))

    clock.now += 30.0
    assert asyncio.run(router.generate(REQUEST)).provider == "backup"
    assert (primary.calls, primary.health_checks) == (1, 1)  # probed, not trusted with a call

    clock.now += 29.0
    asyncio.run(router.generate(REQUEST))
    assert primary.health_checks == 1  # still resting
    assert router.report()[1]["state"] == "quarantined"


def test_readiness_reflects_whether_any_provider_of_the_profile_can_answer() -> None:
    clock = ManualClock()
    only = Scripted("only", mode="fail")
    router = make_router(only, clock=clock)
    assert router.is_ready()
    with pytest.raises(Unavailable):
        asyncio.run(router.generate(REQUEST))
    assert not router.is_ready()
    clock.now += 30.0
    assert router.is_ready()  # a probe is due: the next request may bring it back


def test_cancelling_the_caller_cancels_the_provider_call_and_quarantines_nothing() -> None:
    hanging = Scripted("hanging", mode="hang")
    router = make_router(hanging, Scripted("backup"))

    async def scenario() -> None:
        call = asyncio.create_task(router.generate(REQUEST))
        await asyncio.wait_for(hanging.started.wait(), timeout=5.0)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await asyncio.wait_for(hanging.cancelled.wait(), timeout=5.0)

    asyncio.run(scenario())
    assert all(p["state"] == "healthy" for p in router.report())


def test_cancelling_the_caller_of_a_stream_cancels_the_provider() -> None:
    hanging = Scripted("hanging", mode="hang")
    router = make_router(hanging)

    async def scenario() -> None:
        opening = asyncio.create_task(router.open_stream(REQUEST))
        await asyncio.wait_for(hanging.started.wait(), timeout=5.0)
        opening.cancel()
        with pytest.raises(asyncio.CancelledError):
            await opening
        assert hanging.cancelled.is_set()

    asyncio.run(scenario())


def test_a_stream_falls_back_before_its_first_delta() -> None:
    router = make_router(Scripted("broken", mode="fail"), Scripted("backup"))

    async def scenario() -> tuple[str, str]:
        stream = await router.open_stream(REQUEST)
        return stream.provider, "".join([delta async for delta in stream])

    assert asyncio.run(scenario()) == ("backup", "from backup")


def test_a_stream_that_breaks_after_its_first_delta_does_not_switch_provider() -> None:
    flaky, backup = Scripted("flaky", mode="fail-after-first"), Scripted("backup")
    router = make_router(flaky, backup)
    received: list[str] = []

    async def scenario() -> None:
        stream = await router.open_stream(REQUEST)
        async for delta in stream:
            received.append(delta)

    with pytest.raises(Unavailable, match="mid-stream"):
        asyncio.run(scenario())
    assert received == ["from "]
    assert backup.calls == 0
    assert router.report()[1]["state"] == "quarantined"  # sorted: backup, flaky


def test_the_builtin_stream_routes_end_to_end() -> None:
    router = make_router(BuiltinProvider())

    async def scenario() -> str:
        stream = await router.open_stream(REQUEST)
        assert stream.model == "sonia-builtin"
        return "".join([delta async for delta in stream])

    assert asyncio.run(scenario()) == BuiltinProvider().reply(REQUEST)


def test_profiles_must_name_known_providers() -> None:
    with pytest.raises(ConfigError, match="unknown provider 'ghost'"):
        Router({"builtin": BuiltinProvider()}, {"default": ["builtin", "ghost"]},
               timeout=1.0, quarantine_seconds=1.0)
    with pytest.raises(ConfigError):
        Router({"builtin": BuiltinProvider()}, {"default": []}, timeout=1.0,
               quarantine_seconds=1.0)


def test_an_unknown_profile_in_a_request_is_invalid() -> None:
    with pytest.raises(InvalidArgument, match="unknown profile"):
        asyncio.run(make_router(BuiltinProvider()).generate(REQUEST, profile="fast"))


# Readiness says whether the default profile can answer now, by asking its providers.

def test_a_dead_model_server_makes_the_router_not_ready_naming_it() -> None:
    dead = Scripted("openai", healthy=False)
    with pytest.raises(Unavailable, match="openai does not answer"):
        asyncio.run(make_router(dead).check_ready())
    assert dead.health_checks == 1, "readiness asked the server, not its memory of it"


def test_a_hung_model_server_is_not_ready_within_the_probe_timeout() -> None:
    hung = Scripted("openai", mode="hang")
    with pytest.raises(Unavailable, match="openai does not answer: timed out"):
        asyncio.run(make_router(hung, timeout=0.05).check_ready())


def test_the_router_is_ready_when_one_provider_of_the_default_profile_answers() -> None:
    ready = asyncio.run(make_router(Scripted("openai", healthy=False), BuiltinProvider())
                        .check_ready())
    assert ready["providers"] == {"openai": "does not answer", "builtin": "answers"}


def test_one_readiness_probe_stands_for_a_short_while_then_is_asked_again() -> None:
    clock = ManualClock()
    server = Scripted("openai")
    router = make_router(server, clock=clock)

    async def probe_three_times() -> None:
        await router.check_ready()
        await router.check_ready()
        clock.now += 10
        await router.check_ready()

    asyncio.run(probe_three_times())
    assert server.health_checks == 2


def test_models_lists_what_each_provider_serves() -> None:
    router = make_router(Scripted("openai"), BuiltinProvider())
    assert asyncio.run(router.models()) == [
        {"id": "sonia-builtin", "provider": "builtin"},
        {"id": "openai-model", "provider": "openai"}]


def test_models_names_a_provider_that_cannot_list_them() -> None:
    with pytest.raises(Unavailable, match="openai cannot say"):
        asyncio.run(make_router(Scripted("openai", healthy=False)).models())


def test_a_failed_call_ends_what_readiness_last_heard() -> None:
    clock = ManualClock()
    server = Scripted("openai")
    router = make_router(server, clock=clock)

    async def ready_then_fail_then_ready() -> None:
        await router.check_ready()
        server.mode = "fail"
        with pytest.raises(Unavailable):
            await router.generate(REQUEST)
        await router.check_ready()

    with pytest.raises(Unavailable, match="openai does not answer: resting after"):
        asyncio.run(ready_then_fail_then_ready())
