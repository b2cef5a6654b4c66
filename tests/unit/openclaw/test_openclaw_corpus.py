"""Every public path-traversal payload is refused or stays inside the workspace.

The payloads (corpus/path-traversal/*.txt) target /etc/passwd, win.ini and
`{FILE}`; canaries planted just outside the workspace, where a `../` chain would
land, must never be read. A payload may only ever read the one file planted
inside the workspace under the same name.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from sonia.errors import ApiError
from sonia.services.openclaw.paths import Workspace

CORPUS = Path(__file__).resolve().parents[3] / "corpus" / "path-traversal"
INSIDE = b"inside copy\n"
CANARY = b"OUTSIDE-CANARY\n"
REFUSALS = {"PATH_OUTSIDE_SANDBOX", "SYMLINK_DENIED", "INVALID_PATH", "NOT_FOUND",
            "POLICY_DENIED"}


def payloads() -> list[str]:
    if not CORPUS.is_dir():
        return []
    lines: list[str] = []
    for path in sorted(CORPUS.glob("*.txt")):
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
        lines += [line.replace("{FILE}", "etc/passwd") for line in text.splitlines()]
    return lines


@pytest.fixture(params=["openat2", "walk"])
def workspace(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Workspace]:
    root = tmp_path / "a" / "b" / "workspace"
    for base in (root, tmp_path / "a" / "b", tmp_path / "a", tmp_path):
        planted = INSIDE if base == root else CANARY
        for name in ("etc/passwd", "WINDOWS/win.ini", "windows/win.ini", "boot.ini"):
            (base / name).parent.mkdir(parents=True, exist_ok=True)
            (base / name).write_bytes(planted)
    ws = Workspace(root, use_openat2=request.param == "openat2")
    if ws.mechanism != request.param:
        ws.close()
        pytest.skip(f"openat2 is not usable here: {ws.fallback_reason}")
    try:
        yield ws
    finally:
        ws.close()


def test_every_traversal_payload_is_refused_or_inside(workspace: Workspace) -> None:
    lines = payloads()
    if not lines:
        pytest.skip(f"the corpus is not present at {CORPUS}")
    outcomes: Counter[str] = Counter()
    for payload in lines:
        try:
            data, _size = workspace.read_bytes(payload, 1 << 16)
        except ApiError as exc:
            assert exc.code in REFUSALS, (payload, exc.code, exc.detail)
            outcomes[exc.code] += 1
            continue
        assert data == INSIDE, f"{payload!r} read {data!r}"
        outcomes["inside"] += 1
    assert sum(outcomes.values()) == len(lines) > 20_000
    assert outcomes["PATH_OUTSIDE_SANDBOX"] > 0
