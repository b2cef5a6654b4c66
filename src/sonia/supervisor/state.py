"""The supervisor's state file (run/state.json): what runs, since when, how often restarted.

Written atomically by the daemon, read by `sonia status`, `sonia down` and the gates.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sonia import files
from sonia.home import Home


def state_file(home: Home) -> Path:
    return home.supervisor_state_file


def stop_report_file(home: Home) -> Path:
    return home.run / "stop-report.json"


def supervisor_pid_file(home: Home) -> Path:
    return home.run / "supervisor.pid"


def write_json_atomic(path: Path, data: Any) -> None:
    files.write_json_atomic(path, data)


def read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
