"""The plan hash is SHA-256 of RFC 8785 canonical JSON of {tool, args}: the same for any key
order or number spelling, different for any other tool or argument."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from sonia.actions.plan import canonical_json, plan_hash
from sonia.errors import InvalidArgument


def test_the_hash_is_sha256_of_the_canonical_json() -> None:
    expected = hashlib.sha256(b'{"args":{"path":"a.txt"},"tool":"file.read"}').hexdigest()
    assert plan_hash("file.read", {"path": "a.txt"}) == expected


def test_key_order_and_spelling_do_not_matter() -> None:
    a = plan_hash("shell.run", {"argv": ["ls", "-la"], "cwd": "."})
    b = plan_hash("shell.run", json.loads('{ "cwd" : ".", "argv" : [ "ls", "-la" ] }'))
    assert a == b
    assert plan_hash("t", {"n": 1.0}) == plan_hash("t", {"n": 1})  # JCS writes both as 1


@pytest.mark.parametrize("other", [
    ("file.write", {"path": "a.txt"}), ("file.read", {"path": "a.txt "}),
    ("file.read", {"path": "A.txt"}), ("file.read", {"path": "a.txt", "x": None}),
    ("file.read", {}), ("file.read", {"path": ["a.txt"]}),
])
def test_any_other_tool_or_args_changes_the_hash(other: tuple[str, dict[str, Any]]) -> None:
    assert plan_hash(*other) != plan_hash("file.read", {"path": "a.txt"})


def test_unicode_is_hashed_as_utf8() -> None:
    assert canonical_json({"p": "é"}) == '{"p":"é"}'.encode()
    assert plan_hash("t", {"p": "é"}) != plan_hash("t", {"p": "e\u0301"})


@pytest.mark.parametrize("args", [
    {"n": float("nan")}, {"n": float("inf")}, {"n": 2**60}, {"b": b"x"}, {1: "x"}, {"s": {1, 2}},
])
def test_values_json_cannot_carry_exactly_are_invalid_arguments(args: dict[Any, Any]) -> None:
    with pytest.raises(InvalidArgument):
        plan_hash("t", args)
