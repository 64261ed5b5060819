"""Errors as RFC 9457 problem documents; never a stack trace or an internal detail."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from isthmus.errors import (
    BlockedAddress,
    Conflict,
    DecryptionFailed,
    FieldError,
    Forbidden,
    InvalidInput,
    InvalidURL,
    IsthmusError,
    NotFound,
    OutboundError,
    OutboundTimeout,
    PayloadTooLarge,
    RateLimited,
    StoreUnavailable,
    Unauthenticated,
)

log = logging.getLogger("isthmus.api")

PROBLEM_JSON = "application/problem+json"

_STATUS: list[tuple[type[IsthmusError], int]] = [
    (PayloadTooLarge, 413),
    (InvalidInput, 422),
    (NotFound, 404),
    (Conflict, 409),
    (Unauthenticated, 401),
    (Forbidden, 403),
    (RateLimited, 429),
    (StoreUnavailable, 503),
    (DecryptionFailed, 500),
    # A URL the hub refuses to call is the caller's input; a failed call is a bad gateway.
    (InvalidURL, 422),
    (BlockedAddress, 422),
    (OutboundTimeout, 504),
    (OutboundError, 502),
]


def status_of(exc: IsthmusError) -> int:
    return next((status for kind, status in _STATUS if isinstance(exc, kind)), 500)


def problem(
    status: int,
    title: str,
    detail: str,
    *,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    body["detail"] = detail
    if errors:
        body["errors"] = [{"field": e.field, "message": e.message} for e in errors]
    body.update(extra)
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


def _field_path(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


async def _isthmus_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, IsthmusError)
    status = status_of(exc)
    if status >= 500:
        log.warning("request failed: %s: %s", type(exc).__name__, exc.message)
    headers: dict[str, str] = {}
    if isinstance(exc, Unauthenticated):
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, RateLimited):
        return rate_limited(exc.message, exc.retry_after)
    errors = exc.errors if isinstance(exc, InvalidInput) else None
    return problem(status, exc.title, exc.message, errors=errors, headers=headers)


def rate_limited(
    detail: str, retry_after: int, headers: dict[str, str] | None = None
) -> JSONResponse:
    """429 in the problem shape, plus the members clients of the seed systems read."""
    return problem(
        429,
        RateLimited.title,
        detail,
        headers={**(headers or {}), "Retry-After": str(retry_after)},
        statusCode=429,
        message=RateLimited.title,
        retryAfter=retry_after,
    )


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    raw = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in raw):
        reason = next(e for e in raw if e.get("type") == "json_invalid")
        why = (reason.get("ctx") or {}).get("error", "malformed")
        return problem(400, "Malformed JSON", f"the request body is not valid JSON: {why}")
    invalid = InvalidInput.of([FieldError(_field_path(tuple(e["loc"])), _message(e)) for e in raw])
    return problem(422, invalid.title, invalid.message, errors=invalid.errors)


def _message(error: Any) -> str:
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        return "is not a known field"
    if kind == "missing":
        return "is required"
    if tuple(error.get("loc", ())) == ("body",):
        # Not an object: a JSON array or scalar, or a body not sent as JSON (curl -d).
        return "must be a JSON object, sent with Content-Type: application/json"
    return str(error.get("msg", "is invalid"))


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    titles = {404: "Not found", 405: "Method not allowed"}
    title = titles.get(exc.status_code, "Error")
    detail = exc.detail if isinstance(exc.detail, str) else title
    if exc.status_code == 404 and detail == "Not Found":
        detail = "no such route"
    return problem(exc.status_code, title, detail, headers=getattr(exc, "headers", None))


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error", exc_info=exc)
    return problem(500, "Internal error", "the server failed to handle this request")


def install(app: FastAPI) -> None:
    app.add_exception_handler(IsthmusError, _isthmus_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
