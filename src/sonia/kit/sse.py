"""Server-sent events as the services write and read them: one `data:` line of compact
JSON per event.

Apart from the internal client so that a service that only writes a stream (the
router) does not load the client's HTTP library.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["parse_sse_data", "sse_data"]


def sse_data(payload: Any) -> str:
    """One SSE event carrying `payload` as compact JSON (what `parse_sse_data` reads)."""
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


def parse_sse_data(line: str) -> Any | None:
    """The JSON payload of one `data:` line of an SSE stream (None for others and [DONE])."""
    if not line.startswith("data:"):
        return None
    data = line[5:].strip()
    if not data or data == "[DONE]":
        return None
    return json.loads(data)
