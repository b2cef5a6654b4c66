"""One error shape for every service: RFC 9457 problem+json.

    {type, title, status, detail, code, correlation_id}

`problem_response` builds it; `install_handlers` makes every way a request can
fail (an ApiError, a validation error, an unknown route, a bug) answer in it.
Validation failures are 400 INVALID_ARGUMENT, never FastAPI's bare 422 body.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from sonia.errors import (
    ApiError,
    Internal,
    InvalidArgument,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Unauthenticated,
    describe_exception,
)
from sonia.kit import correlation

MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "urn:sonia:problem:"

log = logging.getLogger("sonia.problems")


def problem_body(error: ApiError) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": TYPE_BASE + error.code.lower().replace("_", "-"),
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
        "code": error.code,
        "correlation_id": correlation.current(),
    }
    for key, value in error.extra.items():
        body.setdefault(key, value)
    return body


def problem_response(error: ApiError) -> JSONResponse:
    headers = {correlation.HEADER: correlation.current()}
    if isinstance(error, Unauthenticated):
        headers["www-authenticate"] = "Bearer"
    if isinstance(error, RateLimited) and "retry_after" in error.extra:
        headers["retry-after"] = str(int(error.extra["retry_after"]))
    return JSONResponse(problem_body(error), status_code=error.status, media_type=MEDIA_TYPE,
                        headers=headers)


def _describe(errors: list[Any]) -> str:
    parts = []
    for err in errors[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return problem_response(exc)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return problem_response(InvalidArgument(_describe(list(exc.errors()))))


_HTTP_STATUS: dict[int, type[ApiError]] = {
    400: InvalidArgument, 401: Unauthenticated, 404: NotFound, 405: MethodNotAllowed,
    413: PayloadTooLarge, 422: InvalidArgument, 429: RateLimited,
}


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    cls = _HTTP_STATUS.get(exc.status_code, Internal)
    detail = str(exc.detail) if exc.detail else ""
    if cls is NotFound:
        detail = f"no route {request.method} {request.url.path}"
    elif cls is MethodNotAllowed:
        detail = f"{request.method} is not allowed on {request.url.path}"
    return problem_response(cls(detail))


async def _unhandled(request: Request, exc: Exception) -> Response:
    # Runs in Starlette's ServerErrorMiddleware (outermost): render, and Starlette re-raises.
    log.error("unhandled error: %s", describe_exception(exc))
    return problem_response(Internal("an internal error occurred; see the service log"))


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unhandled)
