"""Gateway routes: actions_api (being built)."""

from __future__ import annotations

from fastapi import APIRouter

from sonia.services.gateway.state import Gateway


def routers(gw: Gateway) -> list[APIRouter]:
    return []
