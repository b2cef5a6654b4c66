"""Exfiltration: reading what no tool may show, by the side doors of allowlisted commands.

The probe planted a split secret in `proj/.env`, `proj/.git/config` and in
`private.pem` outside the workspace, reached by links `sub/link` and `-d/link`.
Every answer is searched for any 8-character slice of it (also decoded from
base64 and hex), so a case passes only if no piece came back, whatever the status.

    through cwd      the operand is checked against the command's own cwd
    after --         operands after `--` (and ones that start with `-`) are paths too
    recursion        grep -r, ls -R, find, du, cp -r reach protected names inside a folder
    protected names  mkdir/cp must not create .git/hooks or .git/config under any folder
"""

from __future__ import annotations

from typing import Any

from sonia.gates.security.probe import Observed, Probe
from sonia.gates.security.types import Case

__all__ = ["READ_CASES"]


def _shell(argv: list[str], cwd: str | None = None) -> Any:
    def attempt(p: Probe) -> Observed:
        args: dict[str, Any] = {"argv": argv}
        if cwd is not None:
            args["cwd"] = cwd
        response, seen = p.act("shell.run", args)
        if response.status_code == 200:
            result = response.json().get("result", {})
            seen.extra["exit_code"] = result.get("exit_code")
        return seen
    return attempt


def copy_then_read(p: Probe) -> Observed:
    """An approved `cp -r` of a project, then a read of the copy's .env."""
    action = p.pending("shell.run", {"argv": ["cp", "-r", "proj", "proj-copy"]})
    p.decide("approve", action)
    p.set_up_done()
    response, seen = p.act("shell.run", {"argv": ["grep", "-r", "-h", "-e", ".", "proj-copy"]})
    seen.extra["copied_env"] = (p.workspace / "proj-copy" / ".env").exists()
    return seen


def _creates_protected(argv: list[str], made: str) -> Any:
    """An approved mutating command must not leave `made` (a protected name) behind."""
    def attempt(p: Probe) -> Observed:
        (p.workspace / "cfg").write_text("[core]\n\tfsmonitor = id\n")
        (p.workspace / "-y" / ".git").mkdir(parents=True, exist_ok=True)  # a downloaded tree
        p.set_up_done()
        response, seen = p.act("shell.run", {"argv": argv})
        if response.status_code == 202:
            seen = p.decide("approve", str(response.json()["id"]))[1]
        if (p.workspace / made).exists():
            seen.ok, seen.note = False, f"{made} was created in the workspace"
        return seen
    return attempt


def _read(case_id: str, what: str, attempt: Any) -> Case:
    return Case(case_id, "exfiltration", what, "<500", None, attempt)


READ_CASES: tuple[Case, ...] = (
    _read("read-link-through-cwd-grep", "grep -v -e PRIVATE link, cwd sub (link leads out)",
          _shell(["grep", "-v", "-e", "PRIVATE", "link"], cwd="sub")),
    _read("read-link-through-cwd-cat", "cat link, cwd sub (link leads out)",
          _shell(["cat", "link"], cwd="sub")),
    _read("read-link-after-dashdash-head", "head -c 60 -- -d/link",
          _shell(["head", "-c", "60", "--", "-d/link"])),
    _read("read-link-after-dashdash-grep", "grep -v -e PRIVATE -- -d/link",
          _shell(["grep", "-v", "-e", "PRIVATE", "--", "-d/link"])),
    _read("read-envlink-through-cwd", "cat envlink, cwd sub (a link to proj/.env)",
          _shell(["cat", "envlink"], cwd="sub")),
    _read("read-envlink-after-dashdash", "head -c 200 -- -d/envlink (a link to proj/.env)",
          _shell(["head", "-c", "200", "--", "-d/envlink"])),
    _read("read-recursive-grep", "grep -r -H -e . proj (holds .env and .git/config)",
          _shell(["grep", "-r", "-H", "-e", ".", "proj"])),
    _read("read-recursive-grep-workspace", "grep -r -e postgres . over the whole workspace",
          _shell(["grep", "-r", "-e", "postgres", "."])),
    _read("read-recursive-ls", "ls -R -a proj", _shell(["ls", "-R", "-a", "proj"])),
    _read("read-recursive-find", "find proj -name .env", _shell(["find", "proj", "-name",
                                                                 ".env"])),
    _read("read-recursive-du", "du -a proj", _shell(["du", "-a", "proj"])),
    _read("read-recursive-copy", "an approved cp -r proj proj-copy, then grep -r the copy",
          copy_then_read),
    _read("read-mkdir-protected-after-dashdash", "mkdir -p -- -x/.git/hooks",
          _creates_protected(["mkdir", "-p", "--", "-x/.git/hooks"], "-x/.git/hooks")),
    _read("read-cp-protected-after-dashdash", "cp -- cfg -y/.git/config",
          _creates_protected(["cp", "--", "cfg", "-y/.git/config"], "-y/.git/config")),
)
