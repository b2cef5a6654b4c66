"""Routing: which provider answers, what happens when one fails.

A profile is an ordered list of provider names: the first that answers wins,
the others are fallbacks. Every provider call runs under `asyncio.timeout`; a
provider that fails or times out is quarantined for `quarantine_seconds` and
skipped meanwhile. Probe-back is lazy: the first request that reaches a
provider whose quarantine has run out calls its `health()` first (under the
same timeout); healthy, the provider is back and serves that request;
unhealthy, it rests for another window. So a provider that is down costs one
cheap probe per window, never a user's request.

Cancellation is not a failure: when the caller is cancelled (the client went
away) the provider call is cancelled with it and nothing is quarantined.

Readiness is honest about the model: `check_ready()` asks every provider of the
default profile whether it can answer now (a real request to a model server,
at most once per `READY_PROBE_SECONDS`), so a dead model server makes the
router not ready instead of hiding behind a fallback nobody asked for.

Streams fall back only before their first delta: once text has reached the
client a different provider cannot take over, so a failure later is raised to
the caller (and still quarantines the provider). The timeout applies to each
delta, so a stream may run long as long as it keeps moving.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sonia.errors import ApiError, ConfigError, InvalidArgument, Unavailable
from sonia.services.router.providers import Generation, GenerationRequest, Provider

Clock = Callable[[], float]

READY_PROBE_SECONDS = 2.0
"""How long one readiness probe of the model servers stands for (readyz is polled)."""

READY_PROBE_TIMEOUT = 1.5
"""The longest a readiness probe waits for a model server (inside the kit's 2 s check)."""


@dataclass
class ProviderHealth:
    """What the router knows about one provider (shown at /readyz and /v1/providers)."""

    name: str
    quarantined_until: float | None = None
    consecutive_failures: int = 0
    failures: int = 0
    successes: int = 0
    last_error: str | None = None
    probing: bool = False

    def state(self, now: float) -> str:
        if self.quarantined_until is None:
            return "healthy"
        if self.probing:
            return "probing"
        return "quarantined" if now < self.quarantined_until else "probe_due"

    def to_dict(self, now: float) -> dict[str, Any]:
        remaining = (max(0.0, self.quarantined_until - now)
                     if self.quarantined_until is not None else 0.0)
        return {"name": self.name, "state": self.state(now),
                "quarantine_remaining_seconds": round(remaining, 3),
                "consecutive_failures": self.consecutive_failures,
                "failures": self.failures, "successes": self.successes,
                "last_error": self.last_error}


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ApiError):
        return f"{exc.code}: {exc.detail}"
    return f"{type(exc).__name__}: {exc}"


class RoutedStream:
    """A stream that already has its first delta (so its provider is settled).

    Iterate it for every delta, the first included; `provider` and `model` say who
    is answering. Close it (`aclose`) if you stop early.
    """

    def __init__(self, router: Router, provider: Provider, first: str | None,
                 rest: AsyncIterator[str]) -> None:
        self.provider = provider.name
        self.model = str(getattr(provider, "model", provider.name))
        self._router = router
        self._provider = provider
        self._first = first
        self._rest = rest

    def __aiter__(self) -> AsyncIterator[str]:
        return self._deltas()

    async def _deltas(self) -> AsyncIterator[str]:
        try:
            if self._first is None:
                return
            yield self._first
            while True:
                try:
                    async with asyncio.timeout(self._router.timeout):
                        delta = await anext(self._rest)
                except StopAsyncIteration:
                    return
                except Exception as exc:
                    self._router._failed(self._provider, exc)
                    raise Unavailable(
                        f"provider {self.provider} failed mid-stream: {_describe(exc)}") from exc
                yield delta
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        aclose = getattr(self._rest, "aclose", None)
        if aclose is not None:
            await aclose()


class Router:
    """Chooses providers by profile, with fallbacks, timeouts and quarantine."""

    def __init__(
        self,
        providers: Mapping[str, Provider],
        profiles: Mapping[str, Sequence[str]],
        *,
        timeout: float,
        quarantine_seconds: float,
        default_profile: str = "default",
        clock: Clock = time.monotonic,
    ) -> None:
        for profile, names in profiles.items():
            if not names:
                raise ConfigError(f"routing profile {profile!r} names no provider",
                                  key=f"router.profiles.{profile}")
            for name in names:
                if name not in providers:
                    raise ConfigError(
                        f"routing profile {profile!r} names unknown provider {name!r}; "
                        f"providers are {', '.join(sorted(providers))}",
                        key=f"router.profiles.{profile}")
        if default_profile not in profiles:
            raise ConfigError(f"default routing profile {default_profile!r} is not defined",
                              key="router.profile")
        self.providers = dict(providers)
        self.profiles = {name: list(chain) for name, chain in profiles.items()}
        self.timeout = timeout
        self.quarantine_seconds = quarantine_seconds
        self.default_profile = default_profile
        self._clock = clock
        self._health = {name: ProviderHealth(name) for name in providers}
        self._ready_probe: tuple[float, dict[str, str]] | None = None

    # ----------------------------------------------------------------- bookkeeping

    def _chain(self, profile: str | None) -> list[str]:
        name = profile or self.default_profile
        if name not in self.profiles:
            raise InvalidArgument(
                f"unknown profile {name!r}; profiles are {', '.join(sorted(self.profiles))}")
        return self.profiles[name]

    def _failed(self, provider: Provider, exc: BaseException) -> None:
        health = self._health[provider.name]
        health.failures += 1
        health.consecutive_failures += 1
        health.last_error = _describe(exc)
        health.quarantined_until = self._clock() + self.quarantine_seconds
        self._ready_probe = None  # what readiness last heard no longer stands

    def _succeeded(self, provider: Provider) -> None:
        health = self._health[provider.name]
        health.successes += 1
        health.consecutive_failures = 0
        health.quarantined_until = None

    async def _admit(self, name: str) -> bool:
        """May this provider be tried now? Probes it when its quarantine has run out."""
        health = self._health[name]
        if health.quarantined_until is None:
            return True
        if health.probing or self._clock() < health.quarantined_until:
            return False
        health.probing = True
        try:
            async with asyncio.timeout(self.timeout):
                healthy = await self.providers[name].health()
        except Exception as exc:
            healthy = False
            health.last_error = f"probe failed: {_describe(exc)}"
        finally:
            health.probing = False
        if healthy:
            health.quarantined_until = None
            return True
        health.quarantined_until = self._clock() + self.quarantine_seconds
        return False

    # ----------------------------------------------------------------- calls

    async def generate(self, request: GenerationRequest, profile: str | None = None) -> Generation:
        """The first reply a provider of `profile` gives; Unavailable when none can."""
        attempts: list[dict[str, str]] = []
        last: BaseException | None = None
        for name in self._chain(profile):
            if not await self._admit(name):
                attempts.append({"provider": name, "error": "quarantined"})
                continue
            provider = self.providers[name]
            try:
                async with asyncio.timeout(self.timeout):
                    generation = await provider.generate(request)
            except Exception as exc:  # CancelledError is not an Exception: it propagates
                self._failed(provider, exc)
                attempts.append({"provider": name, "error": _describe(exc)})
                last = exc
                continue
            self._succeeded(provider)
            return generation
        raise self._exhausted(profile, attempts) from last

    async def open_stream(
        self, request: GenerationRequest, profile: str | None = None
    ) -> RoutedStream:
        """A stream from the first provider that yields a first delta (or ends cleanly).

        Await this before sending response headers: until it returns, failures fall
        back and the final one is a proper error; afterwards there is no fallback.
        """
        attempts: list[dict[str, str]] = []
        last: BaseException | None = None
        for name in self._chain(profile):
            if not await self._admit(name):
                attempts.append({"provider": name, "error": "quarantined"})
                continue
            provider = self.providers[name]
            deltas = provider.stream(request)
            first: str | None
            try:
                async with asyncio.timeout(self.timeout):
                    first = await anext(deltas)
            except StopAsyncIteration:
                first = None
            except Exception as exc:
                await _close_quietly(deltas)
                self._failed(provider, exc)
                attempts.append({"provider": name, "error": _describe(exc)})
                last = exc
                continue
            except BaseException:
                await _close_quietly(deltas)
                raise
            self._succeeded(provider)
            return RoutedStream(self, provider, first, deltas)
        raise self._exhausted(profile, attempts) from last

    def _exhausted(self, profile: str | None, attempts: list[dict[str, str]]) -> Unavailable:
        tried = "; ".join(f"{a['provider']}: {a['error']}" for a in attempts)
        return Unavailable(
            f"no provider of profile {profile or self.default_profile!r} could answer ({tried})",
            extra={"attempts": attempts})

    # ----------------------------------------------------------------- reports

    def report(self) -> list[dict[str, Any]]:
        """Every provider's state, for `GET /v1/providers`."""
        now = self._clock()
        return [self._health[name].to_dict(now) for name in sorted(self.providers)]

    async def check_ready(self) -> dict[str, Any]:
        """Can the default profile answer now? Unavailable, naming each failure, if not.

        Every provider of the default chain is probed with `health()` (a model
        server gets a real `GET /models`); the answer stands for
        READY_PROBE_SECONDS so a polled /readyz does not hammer the server.
        """
        now = self._clock()
        if self._ready_probe is None or now - self._ready_probe[0] >= READY_PROBE_SECONDS:
            states: dict[str, str] = {}
            for name in self._chain(None):
                if self._health[name].state(now) == "quarantined":
                    states[name] = f"does not answer: resting after {self._health[name].last_error}"
                    continue
                try:
                    async with asyncio.timeout(min(self.timeout, READY_PROBE_TIMEOUT)):
                        healthy = await self.providers[name].health()
                    states[name] = "answers" if healthy else "does not answer"
                except Exception as exc:  # a probe that fails is an answer: not ready
                    states[name] = f"does not answer: {_describe(exc)}"
            self._ready_probe = (now, states)
        states = self._ready_probe[1]
        if not any(state == "answers" for state in states.values()):
            raise Unavailable(
                f"no provider of profile {self.default_profile!r} can answer: "
                + "; ".join(f"{name} {state}" for name, state in states.items()),
                extra={"providers": states})
        return {"default_profile": self.default_profile, "providers": states}

    async def models(self) -> list[dict[str, str]]:
        """Every model a configured provider serves, as `{id, provider}`.

        A provider that cannot list its models makes this Unavailable (naming
        it): a wrong model server is said, not left out.
        """
        found: list[dict[str, str]] = []
        for name in sorted(self.providers):
            try:
                async with asyncio.timeout(min(self.timeout, READY_PROBE_TIMEOUT)):
                    ids = await self.providers[name].models()
            except ApiError:
                raise
            except Exception as exc:  # a hung or broken server is reported, not hidden
                raise Unavailable(f"provider {name} cannot list its models: "
                                  f"{_describe(exc)}") from exc
            found += [{"id": model_id, "provider": name} for model_id in ids]
        return found

    def is_ready(self, profile: str | None = None) -> bool:
        """Can `profile` (the default one if None) answer: is any provider not resting?"""
        now = self._clock()
        return any(self._health[name].state(now) != "quarantined"
                   for name in self._chain(profile))


async def _close_quietly(deltas: AsyncIterator[str]) -> None:
    aclose = getattr(deltas, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:  # closing a failed stream: its own error was already recorded
            pass


__all__ = [
    "ProviderHealth", "RoutedStream", "Router",
]
