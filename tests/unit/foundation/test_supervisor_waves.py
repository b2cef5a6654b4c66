"""The supervisor stops services in waves; no service may stop before one that calls it.

The callers of each service are its own caller table (the routes a service token
may use), so the order is checked against the code that enforces who calls whom,
not against a second list kept by hand. The gateway also opens voice streams
(a WebSocket, outside the table) and is in the first wave for that reason too.
"""

from __future__ import annotations

import importlib

from sonia import SERVICES
from sonia.supervisor.daemon import STOP_WAVES


def wave_of(service: str) -> int:
    return next(i for i, wave in enumerate(STOP_WAVES) if service in wave)


def test_every_service_is_in_exactly_one_wave() -> None:
    listed = [name for wave in STOP_WAVES for name in wave]
    assert sorted(listed) == sorted(SERVICES)


def test_every_caller_stops_in_an_earlier_wave_than_the_service_it_calls() -> None:
    for service in SERVICES:
        module = importlib.import_module(f"sonia.services.{service}.app")
        table: dict[str, frozenset[str]] = getattr(module, "CALLERS", {})
        callers = {c for allowed in table.values() for c in allowed} - {"cli", service}
        for caller in callers:
            assert wave_of(caller) < wave_of(service), (
                f"{caller} calls {service} but would not be stopped before it")


def test_the_gateway_stops_first() -> None:
    assert STOP_WAVES[0] == ("gateway",)
