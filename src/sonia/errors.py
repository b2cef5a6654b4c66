"""The one exception tree of Sonia.

    SoniaError
    ├── ConfigError            bad configuration or home; the CLI exits 2
    ├── SupervisorError        a process could not be started, stopped or found
    ├── GateError              a gate could not run (not a NO-GO verdict)
    ├── ReleaseError           a release bundle could not be made or verified
    ├── BackupError            a backup is missing, truncated or altered
    └── ApiError               an HTTP answer in problem+json form (status, code)
        ├── Unauthenticated        401 UNAUTHENTICATED
        ├── Forbidden              403 FORBIDDEN
        ├── InvalidArgument        400 INVALID_ARGUMENT
        ├── PolicyDenied           403 POLICY_DENIED
        ├── InvalidApproval        401 INVALID_APPROVAL
        ├── AlreadyDecided         409 ALREADY_DECIDED
        ├── InvalidCommand         400 INVALID_COMMAND
        ├── PathOutsideSandbox     403 PATH_OUTSIDE_SANDBOX
        ├── SymlinkDenied          403 SYMLINK_DENIED
        ├── InvalidPath            400 INVALID_PATH
        ├── NotFound               404 NOT_FOUND
        ├── MethodNotAllowed       405 METHOD_NOT_ALLOWED
        ├── PayloadTooLarge        413 PAYLOAD_TOO_LARGE
        ├── RateLimited            429 RATE_LIMITED
        ├── Unavailable            503 UNAVAILABLE
        ├── SandboxUnavailable     503 SANDBOX_UNAVAILABLE
        ├── Timeout                504 TIMEOUT
        └── Internal               500 INTERNAL

Every ApiError carries its `status` and stable machine `code` (DESIGN.md, "Error
codes"), so one function renders all of them the same way.
"""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any, ClassVar


class SoniaError(Exception):
    """Base of every error Sonia raises on purpose."""


class ConfigError(SoniaError):
    """Configuration or home is unusable; `key` names what to fix."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class SupervisorError(SoniaError):
    """A process could not be started, stopped or found."""


class GateError(SoniaError):
    """A gate could not run at all (as opposed to a NO-GO verdict)."""


class ReleaseError(SoniaError):
    """A release bundle could not be made, signed or verified."""


class BackupError(SoniaError):
    """A backup is missing, truncated, altered or cannot be restored."""


class ApiError(SoniaError):
    """An error answered over HTTP as problem+json."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "INTERNAL"
    title: ClassVar[str] = "Internal error"

    def __init__(self, detail: str = "", *, extra: dict[str, Any] | None = None) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra or {}


class Unauthenticated(ApiError):
    status, code, title = 401, "UNAUTHENTICATED", "Missing or wrong credentials"


class Forbidden(ApiError):
    status, code, title = 403, "FORBIDDEN", "Not allowed"


class InvalidArgument(ApiError):
    status, code, title = 400, "INVALID_ARGUMENT", "Invalid request"


class PolicyDenied(ApiError):
    status, code, title = 403, "POLICY_DENIED", "Denied by policy"


class InvalidApproval(ApiError):
    status, code, title = 401, "INVALID_APPROVAL", "Invalid execution grant"


class AlreadyDecided(ApiError):
    status, code, title = 409, "ALREADY_DECIDED", "Action is no longer pending"


class InvalidCommand(ApiError):
    status, code, title = 400, "INVALID_COMMAND", "Command outside the allowlist"


class PathOutsideSandbox(ApiError):
    status, code, title = 403, "PATH_OUTSIDE_SANDBOX", "Path resolves outside the workspace"


class SymlinkDenied(ApiError):
    status, code, title = 403, "SYMLINK_DENIED", "Path goes through a symbolic link"


class InvalidPath(ApiError):
    status, code, title = 400, "INVALID_PATH", "Malformed path"


class NotFound(ApiError):
    status, code, title = 404, "NOT_FOUND", "Not found"


class MethodNotAllowed(ApiError):
    status, code, title = 405, "METHOD_NOT_ALLOWED", "Method not allowed"


class PayloadTooLarge(ApiError):
    status, code, title = 413, "PAYLOAD_TOO_LARGE", "Request body too large"


class RateLimited(ApiError):
    status, code, title = 429, "RATE_LIMITED", "Too many requests"


class Unavailable(ApiError):
    status, code, title = 503, "UNAVAILABLE", "A dependency is unavailable"


class SandboxUnavailable(ApiError):
    status, code, title = 503, "SANDBOX_UNAVAILABLE", "No sandbox can contain commands"


class Timeout(ApiError):
    status, code, title = 504, "TIMEOUT", "Ran out of time"


class Internal(ApiError):
    status, code, title = 500, "INTERNAL", "Internal error"


API_ERRORS: dict[str, type[ApiError]] = {
    cls.code: cls
    for cls in (
        Unauthenticated, Forbidden, InvalidArgument, PolicyDenied, InvalidApproval,
        AlreadyDecided, InvalidCommand, PathOutsideSandbox, SymlinkDenied, InvalidPath,
        NotFound, MethodNotAllowed, PayloadTooLarge, RateLimited, Unavailable,
        SandboxUnavailable, Timeout, Internal,
    )
}
"""Every API error class by its code, so a client can rebuild the error it was sent."""


def api_error_for(code: str, detail: str, extra: dict[str, Any] | None = None) -> ApiError:
    """Rebuild the ApiError a downstream service answered (unknown codes become INTERNAL)."""
    return API_ERRORS.get(code, Internal)(detail, extra=extra)


MAX_FRAMES = 8
"""Innermost frames of an exception written to the log."""


def describe_exception(exc: BaseException) -> str:
    """Type and place of `exc`, for the log, without its message.

    An exception's message and arguments may hold the request body (a
    UnicodeEncodeError holds the whole string it failed on), and its repr once put a
    150 KB body through the log redactor. The log gets what a reader needs to find
    the bug: the type and the frames (file, line, function) where it was raised; the
    correlation id on the line ties it to the request."""
    frames = traceback.extract_tb(exc.__traceback__)[-MAX_FRAMES:]
    where = " <- ".join(f"{Path(f.filename).name}:{f.lineno} in {f.name}"
                        for f in reversed(frames))
    return f"{type(exc).__module__}.{type(exc).__qualname__} at {where or 'unknown'}"
