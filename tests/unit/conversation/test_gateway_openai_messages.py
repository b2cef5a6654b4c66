"""OpenAI chat messages into the router's plain {role, content}: what is taken, what is refused."""

from __future__ import annotations

from typing import Any

import pytest

from sonia.errors import InvalidArgument
from sonia.services.gateway.openai_compat import CompletionBody, plain_messages


def body(*messages: dict[str, Any]) -> CompletionBody:
    return CompletionBody(model="sonia", messages=list(messages))  # type: ignore[arg-type]


def test_text_parts_join_and_developer_is_a_system_message() -> None:
    converted = plain_messages(body(
        {"role": "developer", "content": "be brief"},
        {"role": "assistant", "content": None, "tool_calls": []},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
    ), max_chars=100)
    assert converted == [{"role": "system", "content": "be brief"},
                         {"role": "user", "content": "a\nb"}]


@pytest.mark.parametrize("messages", [
    [{"role": "tool", "content": "x"}],
    [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
    [{"role": "user", "content": None}],
    [{"role": "system", "content": "only a system message"}],
    [{"role": "user", "content": "x" * 101}],
    [{"role": "user", "content": "a\x00b"}],
])
def test_what_cannot_be_served_is_refused(messages: list[dict[str, Any]]) -> None:
    with pytest.raises(InvalidArgument):
        plain_messages(body(*messages), max_chars=100)
