"""The plan hash: what an approval and an execution grant are bound to.

`plan_hash(tool, args)` is the hex SHA-256 of the RFC 8785 (JCS) canonical JSON
of `{"tool": tool, "args": args}`. EVA computes it when it decides; OpenClaw
recomputes it from the request it is asked to execute and compares it with the
one inside the grant, so a grant for one tool or one set of arguments cannot
run another. Canonical JSON makes the hash independent of key order and of
number formatting, so both sides agree without sharing code paths.
"""

from __future__ import annotations

import hashlib
from typing import Any

import rfc8785

from sonia.errors import InvalidArgument

__all__ = ["canonical_json", "plan_hash"]


def canonical_json(value: Any) -> bytes:
    """RFC 8785 bytes of `value`; values JSON cannot carry exactly raise InvalidArgument."""
    try:
        return rfc8785.dumps(value)
    except rfc8785.CanonicalizationError as exc:
        raise InvalidArgument(f"arguments are not canonical JSON: {exc}") from exc


def plan_hash(tool: str, args: dict[str, Any]) -> str:
    """Hex SHA-256 of the canonical JSON of `{"tool": tool, "args": args}`."""
    return hashlib.sha256(canonical_json({"tool": tool, "args": args})).hexdigest()
