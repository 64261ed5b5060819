"""The text a sync publishes for a contact is the event data the API's serialisation gives:
the same bytes are delivered and signed, and the same payload hash is stored."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta, timezone

import pytest

from isthmus.domain.contacts import Contact, Source, contact_json, contact_json_text
from isthmus.errors import InvalidInput
from isthmus.webhooks.signing import data_json

_TEXTS = [
    "",
    "Ada",
    'quo"te',
    "back\\slash",
    "tab\there",
    "line\nbreak",
    "\x01ctl",
    "é ü ß",
    "日本語",
    "emoji 😀",
    "\u2028sep",
    "</script>",
    "null",
]


def _text(rng: random.Random) -> str | None:
    return None if rng.random() < 0.2 else rng.choice(_TEXTS) + rng.choice(_TEXTS)


def _custom(rng: random.Random) -> dict[str, object]:
    values: list[object] = [1, -2.5, 1e16, 0.1, True, None, "x", ["a", 1], {"z": 1, "a": [2]}]
    return {rng.choice(_TEXTS) + str(i): rng.choice(values) for i in range(rng.randint(0, 4))}


def _contact(rng: random.Random) -> Contact:
    zone = timezone(timedelta(hours=rng.choice([0, 2, -5])))
    moment = datetime(2026, 3, 29, 1, 30, rng.randint(0, 59), rng.randint(0, 999_999), zone)
    return Contact(
        id=f"con_{rng.randint(0, 10**9)}",
        tenant_id="ten_1",
        email=f"{rng.choice(_TEXTS)}@example.com",
        first_name=_text(rng),
        last_name=_text(rng),
        phone=_text(rng),
        company=_text(rng),
        job_title=_text(rng),
        custom=_custom(rng),
        sources=tuple(Source(f"int_{i}", _text(rng)) for i in range(rng.randint(0, 3))),
        hash="h",
        created_at=moment,
        updated_at=moment.astimezone(UTC) + timedelta(seconds=rng.randint(0, 10**6)),
    )


def test_equals_the_serialised_contact_json() -> None:
    rng = random.Random(20261123)
    for _ in range(2000):
        contact = _contact(rng)
        text = contact_json_text(contact, data_json)
        assert text == data_json(contact_json(contact))
        assert json.loads(text) == contact_json(contact)


def test_custom_fields_that_are_not_json_fail_as_data_json_does() -> None:
    contact = _contact(random.Random(1))
    contact = Contact(**{**contact.__dict__, "custom": {"score": float("nan")}})
    with pytest.raises(InvalidInput, match="not JSON"):
        contact_json_text(contact, data_json)
