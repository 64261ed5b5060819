"""Statuses into errors, pure: :func:`raise_for_status` turns a non-2xx
:class:`~isthmus.http.client.OutboundResponse` into its ``UpstreamStatusError``, with
:func:`parse_retry_after` (delay-seconds or an HTTP date, clamped) and
:func:`upstream_message` (the human message of a JSON error body)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

from isthmus.errors import (
    UpstreamAuthError,
    UpstreamNotFound,
    UpstreamRateLimited,
    UpstreamRedirected,
    UpstreamRejected,
    UpstreamStatusError,
    UpstreamUnavailable,
)
from isthmus.http.redact import redact_url

if TYPE_CHECKING:
    from isthmus.http.client import OutboundResponse

MAX_RETRY_AFTER = 3600.0
"""Upper clamp for Retry-After, seconds: a server asking for a day is retried within the hour."""

_DELAY_SECONDS = re.compile(r"\d+(\.\d+)?")


def parse_retry_after(
    value: str | None, now: datetime, *, maximum: float = MAX_RETRY_AFTER
) -> float | None:
    """Seconds to wait from a Retry-After value: delay-seconds or an HTTP date.

    Clamped to ``[0, maximum]`` (a date in the past means "now"); None when absent or
    unreadable. ``now`` should be timezone-aware; a naive one is taken as UTC.
    """
    if value is None or not (text := value.strip()):
        return None
    if _DELAY_SECONDS.fullmatch(text):
        seconds = float(text)
    else:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = (_aware(when) - _aware(now)).total_seconds()
    return min(max(seconds, 0.0), maximum)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def upstream_message(body: bytes, *, limit: int = 300) -> str | None:
    """The human message of a JSON error body, if it has one.

    Understands ``{"message"}``, ``{"error": "..."}`` (with OAuth's ``error_description``),
    ``{"error": {"message"}}``, ``{"errors": [{"message"}]}`` and ``{"detail"}``.
    """
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(doc, dict):
        return None
    found: str | None = None
    error = doc.get("error")
    errors = doc.get("errors")
    if isinstance(doc.get("message"), str):
        found = doc["message"]
    elif isinstance(error, str):
        description = doc.get("error_description")
        found = f"{error}: {description}" if isinstance(description, str) else error
    elif isinstance(error, dict) and isinstance(error.get("message"), str):
        found = error["message"]
    elif isinstance(errors, list) and errors and isinstance(errors[0], dict):
        message = errors[0].get("message")
        found = message if isinstance(message, str) else None
    elif isinstance(doc.get("detail"), str):
        found = doc["detail"]
    if not found or not (found := " ".join(found.split())):
        return None
    return found if len(found) <= limit else found[: limit - 1] + "…"


def raise_for_status(
    response: OutboundResponse,
    *,
    now: datetime | None = None,
    max_retry_after: float = MAX_RETRY_AFTER,
) -> OutboundResponse:
    """Return a 2xx response unchanged; raise the UpstreamStatusError for anything else.

    3xx -> UpstreamRedirected, 401/403 -> UpstreamAuthError, 404 -> UpstreamNotFound,
    429 -> UpstreamRateLimited, 5xx -> UpstreamUnavailable (both with ``retry_after`` when the
    upstream sent one), other 4xx -> UpstreamRejected. Messages carry the body's message.
    """
    status = response.status
    if 200 <= status < 300:
        return response
    shown = redact_url(response.url)
    detail = upstream_message(response.body)
    message = f"{shown} answered {status}" + (f": {detail}" if detail else "")
    retry_after = None
    kind: type[UpstreamStatusError]
    if 300 <= status < 400:
        kind = UpstreamRedirected
        if location := response.headers.get("Location"):
            message += f" (redirect to {redact_url(location)} not followed)"
    elif status in (401, 403):
        kind = UpstreamAuthError
    elif status == 404:
        kind = UpstreamNotFound
    elif status == 429 or status >= 500:
        kind = UpstreamRateLimited if status == 429 else UpstreamUnavailable
        retry_after = parse_retry_after(
            response.headers.get("Retry-After"),
            now or datetime.now(UTC),
            maximum=max_retry_after,
        )
    else:
        kind = UpstreamRejected
    raise kind(message, status=status, url=shown, upstream_message=detail, retry_after=retry_after)
