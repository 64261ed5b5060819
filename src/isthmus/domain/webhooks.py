"""Outbound webhook vocabulary: event type names, subscription filters and their limits.

Pure rules, no I/O: whether a name or a filter is well formed, and whether a filter list
matches an event type.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from enum import StrEnum

# Dot notation: two or more lower-case segments, ``contact.created``, ``invoice.line.added``.
EVENT_TYPE_NAME = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)+$")
# An audit row names its resource in 60 characters; an event type's name is its id.
MAX_EVENT_TYPE_NAME = 60
WILDCARD = "*"
_PREFIX = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)*$")

#: The event types every tenant starts with (name -> description).
PRELOADED_EVENT_TYPES: dict[str, str] = {
    "contact.created": "A contact was created.",
    "contact.updated": "A contact was updated.",
    "contact.deleted": "A contact was deleted (the data is the contact as it was).",
    "lead.created": "A lead was created.",
    "opportunity.created": "An opportunity was created.",
    "task.completed": "A task was marked as complete.",
    "ticket.created": "A support ticket was created.",
    "card.viewed": "A card was viewed.",
    "link.clicked": "A link was clicked.",
    "subscription.updated": "A subscription was updated.",
    "integration.disabled": "An integration was disabled after repeated failures.",
    "webhook.disabled": "A webhook subscription was disabled after repeated failures.",
}

#: The event type of the signed sample ``POST /webhooks/{id}/test`` sends; never published.
TEST_EVENT_TYPE = "webhook.test"

MAX_FILTERS = 100
MIN_RATE_LIMIT, MAX_RATE_LIMIT = 1, 1000
MIN_CONCURRENCY, MAX_CONCURRENCY = 1, 100
MIN_TIMEOUT, MAX_TIMEOUT, DEFAULT_TIMEOUT = 1, 30, 10
MAX_URL_LENGTH = 2000
MAX_GRACE_HOURS, DEFAULT_GRACE_HOURS = 168, 24


class SubscriptionStatus(StrEnum):
    """``disabled`` is set by the delivery engine (410, too many failures), with a reason;
    ``is_active`` is the subscriber's own switch, kept apart so neither overwrites the other."""

    ACTIVE = "active"
    DISABLED = "disabled"


def is_event_type_name(name: str) -> bool:
    return len(name) <= MAX_EVENT_TYPE_NAME and EVENT_TYPE_NAME.match(name) is not None


def is_wildcard(event_filter: str) -> bool:
    """``*`` or ``prefix.*`` (``contact.*``, ``billing.invoice.*``)."""
    if event_filter == WILDCARD:
        return True
    prefix, dot_star, rest = event_filter.rpartition(".*")
    return (
        bool(dot_star)
        and not rest
        and len(event_filter) <= MAX_EVENT_TYPE_NAME
        and _PREFIX.match(prefix) is not None
    )


def matches(filters: Iterable[str], event_type: str) -> bool:
    """Whether a subscription with ``filters`` receives events of ``event_type``.

    ``*`` matches every type; ``contact.*`` every type under ``contact.`` at any depth
    (``contact.created``, ``contact.note.added``) but not ``contact`` itself nor
    ``contacts.created``; any other filter matches exactly that name.
    """
    for event_filter in filters:
        if event_filter in (WILDCARD, event_type):
            return True
        if event_filter.endswith(".*") and event_type.startswith(event_filter[:-1]):
            return True
    return False
