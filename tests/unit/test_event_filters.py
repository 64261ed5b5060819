"""Subscription filters against event types, and the names and filters that are well formed."""

from __future__ import annotations

import pytest

from isthmus.domain.webhooks import (
    PRELOADED_EVENT_TYPES,
    is_event_type_name,
    is_wildcard,
    matches,
)

# (filters, event type, delivered?)
MATCHES = [
    (["*"], "contact.created", True),
    (["*"], "invoice.line.added", True),
    (["contact.created"], "contact.created", True),
    (["contact.created"], "contact.updated", False),
    (["contact.*"], "contact.created", True),
    (["contact.*"], "contact.note.added", True),
    (["contact.*"], "contacts.created", False),
    (["contact.*"], "lead.created", False),
    (["contact.note.*"], "contact.note.added", True),
    (["contact.note.*"], "contact.created", False),
    (["lead.created", "contact.*"], "contact.updated", True),
    (["lead.created", "contact.*"], "lead.created", True),
    (["lead.created", "contact.*"], "task.completed", False),
    ([], "contact.created", False),
    # A filter is not a pattern language: only a trailing ".*" is a wildcard.
    (["*.created"], "contact.created", False),
    (["contact*"], "contact.created", False),
    (["contact.created"], "contact.created.extra", False),
]


@pytest.mark.parametrize(("filters", "event_type", "expected"), MATCHES)
def test_matches(filters: list[str], event_type: str, expected: bool) -> None:
    assert matches(filters, event_type) is expected


def test_matches_takes_any_iterable() -> None:
    assert matches(("contact.*",), "contact.created")
    assert matches(iter(["*"]), "x.y")


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("contact.created", True),
        ("invoice.line_item.added", True),
        ("v2.thing", True),
        ("contact", False),
        ("Contact.created", False),
        ("contact..created", False),
        (".contact.created", False),
        ("contact.created.", False),
        ("contact created", False),
        ("contact-created.x", False),
        ("contact.*", False),
        ("a." + "b" * 58, True),  # 60 characters
        ("a." + "b" * 59, False),  # 61
    ],
)
def test_event_type_names(name: str, valid: bool) -> None:
    assert is_event_type_name(name) is valid


@pytest.mark.parametrize(
    ("event_filter", "wildcard"),
    [
        ("*", True),
        ("contact.*", True),
        ("contact.note.*", True),
        ("contact.created", False),
        ("*.created", False),
        ("contact*", False),
        (".*", False),
        ("Contact.*", False),
        ("contact.*.*", False),
        ("**", False),
    ],
)
def test_wildcards(event_filter: str, wildcard: bool) -> None:
    assert is_wildcard(event_filter) is wildcard


def test_preloaded_names_are_valid() -> None:
    assert len(PRELOADED_EVENT_TYPES) == 12
    assert all(is_event_type_name(n) for n in PRELOADED_EVENT_TYPES)
