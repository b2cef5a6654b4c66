"""Fixtures of the conversation tests: a slow model server and a stack that uses it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conversation_helpers import SlowModelServer

from sonia.testing import FreshStack


@pytest.fixture(scope="module")
def slow_model() -> Iterator[SlowModelServer]:
    with SlowModelServer() as server:
        yield server


@pytest.fixture(scope="module")
def slow_stack(tmp_path_factory: pytest.TempPathFactory,
               slow_model: SlowModelServer) -> Iterator[FreshStack]:
    """A stack whose default profile asks the slow model server first, then builtin."""
    config = {"router": {"openai_base_url": slow_model.url, "openai_model": "slow",
                         "profiles": {"default": ["openai", "builtin"]}}}
    with FreshStack(tmp_path_factory.mktemp("slow-home"), config=config) as s:
        s.up()
        yield s
