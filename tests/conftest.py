"""Fixtures that start the real stack: real processes on free loopback ports, a fresh home."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sonia.testing import FreshStack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FreshStack]:
    """One running stack shared by the tests of a module (they must not break it)."""
    with FreshStack(tmp_path_factory.mktemp("home")) as s:
        s.up()
        yield s


@pytest.fixture()
def own_stack(tmp_path: Path) -> Iterator[FreshStack]:
    """A running stack for one test that may kill, stop or corrupt it."""
    with FreshStack(tmp_path / "home") as s:
        s.up()
        yield s


@pytest.fixture()
def gateway(stack: FreshStack) -> Iterator[httpx.Client]:
    """An HTTP client for the gateway, authenticated with a user key."""
    with httpx.Client(base_url=stack.url("gateway"), headers=stack.user_headers(),
                      timeout=30) as client:
        yield client
