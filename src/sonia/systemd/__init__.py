"""The systemd units Sonia ships, and writing them for one installation.

The files beside this module are the units, readable as they are:

    sonia-<service>@.service   one template per service; the instance names the
                               stack, whose home is /var/lib/sonia/<instance>
    sonia@.target              the stack's services enabled on this host
    sonia-backup@.service      an online backup, then the newest 8 kept
    sonia-backup@.timer        ... every 6 hours (no supervisor takes them here)

Each service unit runs `sonia run <service>` in the foreground (`Type=notify`:
READY=1 once its /readyz passes), as an ordinary user with no capabilities, with
the hardening options of the file; OpenClaw's unit leaves out the few that
bubblewrap cannot work under, and says which and why. Ordering (`After=`)
follows the readiness checks: a service starts after the services it needs.

As shipped they run `/usr/local/bin/sonia` as user `sonia`; `render` writes them
for another executable (a virtualenv's) and user, changing nothing else.
"""

from __future__ import annotations

import re
from importlib.resources import files
from pathlib import Path

from sonia import files as atomic

__all__ = ["SHIPPED_GROUP", "SHIPPED_SONIA", "SHIPPED_USER", "install", "render", "units"]

SHIPPED_SONIA = "/usr/local/bin/sonia"
SHIPPED_USER = "sonia"
SHIPPED_GROUP = "sonia"

_EXEC = re.compile(rf"^(Exec[A-Za-z]*=[-@:+!]*){re.escape(SHIPPED_SONIA)}(?= |$)", re.M)


def units() -> dict[str, str]:
    """Every shipped unit file, by name."""
    return {item.name: item.read_text() for item in files(__name__).iterdir()
            if item.name.startswith("sonia") and "@." in item.name}


def render(text: str, *, sonia: str, user: str, group: str) -> str:
    """A unit with `sonia` as the executable and `user`/`group` as the account."""
    for value, what in ((sonia, "the sonia executable"), (user, "user"), (group, "group")):
        if not value or any(c.isspace() for c in value) or "%" in value:
            raise ValueError(f"{what} {value!r} cannot go into a unit file as it is")
    if not sonia.startswith("/"):
        raise ValueError(f"the sonia executable must be an absolute path, not {sonia!r}")
    text = _EXEC.sub(lambda m: m.group(1) + sonia, text)
    text = re.sub(rf"^User={SHIPPED_USER}$", f"User={user}", text, flags=re.M)
    return re.sub(rf"^Group={SHIPPED_GROUP}$", f"Group={group}", text, flags=re.M)


def install(dest: Path, *, sonia: str, user: str, group: str) -> list[Path]:
    """Write every unit, rendered, into `dest` (0644: systemd reads them as any user)."""
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in sorted(units().items()):
        path = dest / name
        atomic.write_atomic(path, render(text, sonia=sonia, user=user, group=group).encode(),
                            mode=0o644)
        written.append(path)
    return written
