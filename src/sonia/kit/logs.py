"""JSON-lines logging: one object a line, one file a service (or stdout).

Every line carries ts, level, service, correlation_id and msg, plus the request
fields (route, method, status, duration_ms) when the access log writes it.
Secrets are redacted from the rendered line before it reaches the file, so a
token that slips into a message never lands on disk. Exceptions are logged by
type and frames only (`describe_exception`), never by message or repr, and a
message is cut at MAX_MSG_CHARS: request bodies do not reach the log.

A file log rolls over by size (`[logs] max_bytes`, `keep`; kit/logfiles.py
names the files) and every file of it is created 0600, whatever the umask. A
service run in the foreground (`sonia run`) writes the same lines to stdout,
where its service manager (systemd's journal) keeps them.
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any

from sonia.config import LogSettings
from sonia.errors import describe_exception
from sonia.kit import correlation

EXTRA_FIELDS = ("route", "method", "status", "duration_ms", "client", "event", "caller")

MAX_MSG_CHARS = 2048
"""A longer message is cut (and says so): no log line carries a request body, and
redacting a line costs a bounded amount of time."""
class JsonFormatter(logging.Formatter):
    def __init__(self, service: str, redact: Callable[[str], str] | None = None) -> None:
        super().__init__()
        self.service = service
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "correlation_id": getattr(record, "correlation_id", None) or correlation.current(),
            "logger": record.name,
            "msg": _bounded(record.getMessage()),
        }
        for field in EXTRA_FIELDS:
            if hasattr(record, field):
                entry[field] = getattr(record, field)
        if record.exc_info and record.exc_info[1] is not None:
            entry["exc"] = describe_exception(record.exc_info[1])
        line = json.dumps(entry, default=str)
        return self.redact(line) if self.redact else line


def _bounded(message: str) -> str:
    if len(message) <= MAX_MSG_CHARS:
        return message
    return f"{message[:MAX_MSG_CHARS]}... [{len(message) - MAX_MSG_CHARS} characters cut]"


class PrivateRotatingFileHandler(RotatingFileHandler):
    """Size-based rotation whose files are the owner's alone (0600, whatever the umask).

    It rolls over before a record once the file holds `max_bytes` or more, so a file
    passes the limit by at most one line and a line is never split between two files;
    unlike the standard check, the record is not formatted (and redacted) twice.
    """

    def __init__(self, path: Path, settings: LogSettings) -> None:
        super().__init__(path, maxBytes=settings.max_bytes, backupCount=settings.keep,
                         encoding="utf-8")

    def _open(self) -> io.TextIOWrapper:
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                     0o600)
        return open(fd, "a", encoding=self.encoding, errors=self.errors)

    def shouldRollover(self, record: logging.LogRecord) -> bool:
        if self.stream is None:
            self.stream = self._open()
        return self.stream.tell() >= self.maxBytes


def configure_logging(
    service: str,
    path: Path | None,
    *,
    level: str = "info",
    redact: Callable[[str], str] | None = None,
    rotation: LogSettings | None = None,
) -> logging.Logger:
    """Send every logger of the process to `path` (rolled over by `rotation`, default
    settings when None) or, when `path` is None, to stdout, as JSON lines."""
    handler: logging.Handler
    if path is None:
        handler = logging.StreamHandler(sys.stdout)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = PrivateRotatingFileHandler(path, rotation or LogSettings())  # type: ignore[call-arg]
    handler.setFormatter(JsonFormatter(service, redact))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # uvicorn's own loggers propagate to ours; its access log is replaced by kit.access.
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return logging.getLogger(f"sonia.{service}")
