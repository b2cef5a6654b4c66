"""The supervisor's state file (run/state.json): what runs, since when, how often restarted.

Written atomically by the daemon, read by `sonia status`, `sonia down` and the gates.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sonia.home import Home


def state_file(home: Home) -> Path:
    return home.run / "state.json"


def stop_report_file(home: Home) -> Path:
    return home.run / "stop-report.json"


def supervisor_pid_file(home: Home) -> Path:
    return home.run / "supervisor.pid"


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
