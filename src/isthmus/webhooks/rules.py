"""Checks of a subscription's fields that need no I/O; each failure names its API field.

The checks that do need I/O (is the URL's destination allowed, do the named event types
exist) are in :mod:`isthmus.webhooks.subscriptions`, which calls these first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from isthmus.domain.webhooks import (
    MAX_CONCURRENCY,
    MAX_FILTERS,
    MAX_GRACE_HOURS,
    MAX_RATE_LIMIT,
    MAX_TIMEOUT,
    MAX_URL_LENGTH,
    MIN_CONCURRENCY,
    MIN_RATE_LIMIT,
    MIN_TIMEOUT,
    is_event_type_name,
    is_wildcard,
)
from isthmus.errors import InvalidInput
from isthmus.webhooks.retry import parse_schedule
from isthmus.webhooks.signing import check_custom_headers

MAX_NAME = 200
MAX_DESCRIPTION = 2000


def clean_name(name: str) -> str:
    name = name.strip()
    if len(name) > MAX_NAME:
        raise InvalidInput.field("name", f"must be at most {MAX_NAME} characters")
    return name


def check_description(description: str) -> str:
    if len(description) > MAX_DESCRIPTION:
        raise InvalidInput.field("description", f"must be at most {MAX_DESCRIPTION} characters")
    return description


def check_url_text(url: str) -> str:
    """Length and surrounding space only; scheme and destination are the HTTP layer's call."""
    url = url.strip()
    if not url:
        raise InvalidInput.field("url", "is required")
    if len(url) > MAX_URL_LENGTH:
        raise InvalidInput.field("url", f"must be at most {MAX_URL_LENGTH} characters")
    return url


def check_filters(filters: Sequence[str]) -> tuple[str, ...]:
    """The filters, duplicates dropped, in the order given; each is ``*``, ``prefix.*`` or an
    event type name (whether that type exists is checked against the store)."""
    if not filters:
        raise InvalidInput.field("events", "give at least one event type, prefix.* or *")
    if len(filters) > MAX_FILTERS:
        raise InvalidInput.field("events", f"at most {MAX_FILTERS} filters")
    for i, event_filter in enumerate(filters):
        if not isinstance(event_filter, str) or not (
            is_wildcard(event_filter) or is_event_type_name(event_filter)
        ):
            raise InvalidInput.field(
                f"events.{i}",
                f"{event_filter!r} is not an event type name (contact.created), "
                "a prefix wildcard (contact.*) or *",
            )
    return tuple(dict.fromkeys(filters))


def _bounded(field: str, value: Any, low: int, high: int) -> int:
    # bool is an int in Python, but "true requests per second" is a mistake.
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput.field(field, f"must be a whole number from {low} to {high}")
    return value


def check_rate_limit(value: Any) -> int | None:
    if value is None:
        return None
    return _bounded("rateLimitPerSecond", value, MIN_RATE_LIMIT, MAX_RATE_LIMIT)


def check_concurrency(value: Any) -> int | None:
    if value is None:
        return None
    return _bounded("maxConcurrency", value, MIN_CONCURRENCY, MAX_CONCURRENCY)


def check_timeout(value: Any) -> int:
    return _bounded("timeoutSeconds", value, MIN_TIMEOUT, MAX_TIMEOUT)


def check_grace_hours(value: Any) -> int:
    return _bounded("graceHours", value, 0, MAX_GRACE_HOURS)


def check_schedule(value: Any) -> tuple[float, ...]:
    """A preset name (``default``, ``seed``), a list of delays in seconds, or None (default)."""
    return parse_schedule(value)


def check_headers(headers: Mapping[str, object] | None) -> dict[str, str]:
    return check_custom_headers(headers)


def merge_headers(
    current: Mapping[str, str], changes: Mapping[str, str | None]
) -> dict[str, object]:
    """``current`` with ``changes`` applied: a value sets the header, None removes it.

    Names match without regard to case (as HTTP's do), and a header given a new value takes
    the spelling the change uses. The result still has to pass :func:`check_headers`.
    """
    changed = {name.lower() for name in changes}
    merged: dict[str, object] = {k: v for k, v in current.items() if k.lower() not in changed}
    merged.update({k: v for k, v in changes.items() if v is not None})
    return merged
