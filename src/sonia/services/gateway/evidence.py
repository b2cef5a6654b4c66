"""The home's gate runs and release bundles, read for the console.

Gates write each run into `artifacts/<run id>/` (`verdict.json`: gate, profile,
parameters, waivers, seconds and the verdict with its checks;
`provenance.json`: the commit the code came from), and `sonia release` writes
bundles into `artifacts/release/<tag>/` (`MANIFEST.json`, `signoffs/`). This
module only reads those files: it decides nothing. The verdict shown is the one
the run recorded; `sonia release` re-derives it from the raw evidence before
anything is released.

Soak plots are inside `soak-report.html` as PNG data; they are served as PNG
files (checked to be PNG) so the console shows them without opening the report's
HTML in its own origin.

A bundle's verification is `sonia verify BUNDLE --json`, run as a separate
process (the release code sits above the services and needs the checkout's
pinned signers): its result is kept until a file of the bundle changes, or for
`VERIFY_TTL_S` (the tag it checks lives in git, not in the bundle).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["BundleVerifier", "bundle_summary", "list_bundles", "list_runs", "plot_png",
           "run_detail", "run_dir"]

RUN_ID = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[A-Za-z0-9-]{1,64}-[0-9a-f]{6}$")
BUNDLE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
VERDICT = "verdict.json"
PROVENANCE = "provenance.json"
SOAK_REPORT = "soak-report.html"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PLOT = re.compile(r'<img alt="([^"<>]{0,200})" src="data:image/png;base64,([A-Za-z0-9+/=]+)">')
VERIFY_TTL_S = 60.0
VERIFY_TIMEOUT_S = 120.0
MAX_RUNS = 500


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def run_dir(artifacts: Path, run_id: str) -> Path | None:
    """The folder of run `run_id`, or None (a name that is not a run id, a link, absent)."""
    if not RUN_ID.match(run_id):
        return None
    folder = artifacts / run_id
    if folder.is_symlink() or not folder.is_dir():
        return None
    return folder


def _commit(folder: Path) -> dict[str, Any] | None:
    git = (_json(folder / PROVENANCE).get("start") or {}).get("git")
    if not isinstance(git, dict):
        return None
    return {"commit": git.get("commit"), "dirty": git.get("dirty")}


def _plots(folder: Path) -> list[tuple[str, str]]:
    """(title, base64 PNG) of every plot in the run's soak report."""
    report = folder / SOAK_REPORT
    if report.is_symlink() or not report.is_file():
        return []
    return _PLOT.findall(report.read_text(encoding="utf-8", errors="replace"))


_SUMMARIES: dict[str, tuple[int, dict[str, Any]]] = {}
"""Summaries by run folder, kept while its verdict.json is unchanged (finished runs
never change; reading every provenance.json on each listing would be slow)."""


def _summary(folder: Path) -> dict[str, Any]:
    verdict_file = folder / VERDICT
    try:
        stamp = verdict_file.stat().st_mtime_ns
    except OSError:
        stamp = -1
    cached = _SUMMARIES.get(str(folder))
    if cached is not None and cached[0] == stamp and stamp != -1:
        return cached[1]
    stated = _json(verdict_file)
    verdict = stated.get("verdict") if isinstance(stated.get("verdict"), dict) else {}
    checks = [c for c in (verdict or {}).get("checks") or [] if isinstance(c, dict)]
    summary = {
        "run_id": folder.name,
        "gate": stated.get("gate") or folder.name[17:-7],
        "profile": stated.get("profile"),
        "status": (verdict or {}).get("status") if stated else "INCOMPLETE",
        "seconds": stated.get("seconds"),
        "started_at": folder.name[:16],
        "checks": len(checks),
        "checks_failed": sum(1 for c in checks if not c.get("passed")),
        "waivers": len(stated.get("waivers") or []),
        "source": _commit(folder),
        "plots": len(_plots(folder)),
    }
    if stamp != -1:
        _SUMMARIES[str(folder)] = (stamp, summary)
    return summary


def list_runs(artifacts: Path, limit: int = 100) -> list[dict[str, Any]]:
    """Every gate run, newest first (run ids sort by their UTC start time)."""
    if not artifacts.is_dir():
        return []
    names = sorted((p.name for p in artifacts.iterdir() if RUN_ID.match(p.name)),
                   reverse=True)[:min(limit, MAX_RUNS)]
    found = (run_dir(artifacts, name) for name in names)
    return [_summary(folder) for folder in found if folder is not None]


def run_detail(folder: Path) -> dict[str, Any]:
    """One run: its summary, parameters, waivers, every check, its files and plots."""
    stated = _json(folder / VERDICT)
    verdict = stated.get("verdict") if isinstance(stated.get("verdict"), dict) else {}
    files = [{"name": p.name, "bytes": p.stat().st_size} for p in sorted(folder.iterdir())
             if p.is_file() and not p.is_symlink()]
    return {
        **_summary(folder),
        "parameters": stated.get("parameters") or {},
        "waiver_list": stated.get("waivers") or [],
        "verdict_checks": (verdict or {}).get("checks") or [],
        "files": files,
        "plot_titles": [title for title, _ in _plots(folder)],
    }


def plot_png(folder: Path, index: int) -> bytes | None:
    """The `index`-th plot of the run as PNG bytes, or None."""
    plots = _plots(folder)
    if not 0 <= index < len(plots):
        return None
    try:
        data = base64.b64decode(plots[index][1], validate=True)
    except (binascii.Error, ValueError):
        return None
    return data if data.startswith(PNG_SIGNATURE) else None


def _bundles_dir(artifacts: Path) -> Path:
    return artifacts / "release"


def list_bundles(artifacts: Path) -> list[Path]:
    """Release bundle folders (those holding a MANIFEST.json), newest name last."""
    root = _bundles_dir(artifacts)
    if root.is_symlink() or not root.is_dir():
        return []
    return [p for p in sorted(root.iterdir()) if BUNDLE_NAME.match(p.name)
            and not p.is_symlink() and p.is_dir() and (p / "MANIFEST.json").is_file()]


def bundle_summary(bundle: Path) -> dict[str, Any]:
    """What the bundle says of itself: tag, commit, gates, waivers, sign-offs."""
    manifest = _json(bundle / "MANIFEST.json")
    signoffs = []
    folder = bundle / "signoffs"
    if folder.is_dir() and not folder.is_symlink():
        for path in sorted(folder.glob("*.json")):
            statement = _json(path)
            signoffs.append({"role": statement.get("role"), "signer": statement.get("signer"),
                             "signed_at": statement.get("signed_at")})
    return {
        "name": bundle.name,
        "tag": manifest.get("tag"), "commit": manifest.get("commit"),
        "created_at": manifest.get("created_at"),
        "sonia_version": manifest.get("sonia_version"),
        "gates": [{"gate": g.get("gate"), "status": g.get("status")}
                  for g in manifest.get("gates") or [] if isinstance(g, dict)],
        "waivers": [w for w in manifest.get("waivers") or [] if isinstance(w, dict)],
        "signoffs": signoffs,
    }


def _fingerprint(bundle: Path) -> tuple[tuple[str, int, int], ...]:
    return tuple(sorted((p.relative_to(bundle).as_posix(), p.stat().st_mtime_ns,
                         p.stat().st_size) for p in bundle.rglob("*") if p.is_file()))


class BundleVerifier:
    """`sonia verify BUNDLE --json`, one process at a time, results kept a while."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._results: dict[str, tuple[float, Any, dict[str, Any]]] = {}

    async def verify(self, bundle: Path) -> dict[str, Any]:
        fingerprint = await asyncio.to_thread(_fingerprint, bundle)
        async with self._lock:
            cached = self._results.get(bundle.name)
            if cached is not None and cached[1] == fingerprint \
                    and time.monotonic() - cached[0] < VERIFY_TTL_S:
                return cached[2]
            result = await self._run(bundle)
            self._results[bundle.name] = (time.monotonic(), fingerprint, result)
            return result

    @staticmethod
    async def _run(bundle: Path) -> dict[str, Any]:
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sonia", "verify", str(bundle), "--json",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), VERIFY_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return {"ok": False, "reason": f"sonia verify took over {VERIFY_TIMEOUT_S:.0f} s",
                    "exit_code": None}
        try:
            result = json.loads(out.decode("utf-8", "replace"))
        except ValueError:
            result = None
        if not isinstance(result, dict):
            lines = [line for line in err.decode("utf-8", "replace").splitlines()
                     if line.strip()]
            result = {"ok": False, "reason": (lines[-1] if lines else "no answer")[:500]}
        result["exit_code"] = proc.returncode
        result["seconds"] = round(time.monotonic() - started, 2)
        return result
