"""What a sync writes as text is what the JSON encoder would write: a contact's event data
(the same bytes are delivered and signed, the same payload hash stored), and the canonical
JSON its change hash is taken over (stored hashes must keep matching, or every contact
would look changed at the next sync)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from datetime import UTC, datetime, timedelta, timezone

import pytest

from isthmus.domain.contacts import (
    Contact,
    Mapped,
    Source,
    contact_hash,
    contact_json,
    contact_json_text,
)
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


def test_the_change_hash_is_taken_over_the_encoders_canonical_json() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        c = _contact(rng)
        fields = [c.email, c.first_name, c.last_name, c.phone, c.company, c.job_title, c.custom]
        text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert contact_hash(c) == hashlib.sha256(text.encode()).hexdigest()


def test_the_bulk_constructors_make_what_the_dataclasses_make() -> None:
    rng = random.Random(11)
    for _ in range(200):
        like = _contact(rng)
        fields = {
            name: getattr(like, name)
            for name in ("email", "first_name", "last_name", "phone", "company", "job_title")
        }
        external_id = rng.choice([None, "17"])
        mapped = Mapped.made(**fields, custom=like.custom, external_id=external_id)
        plain = Mapped(**fields, custom=like.custom, external_id=external_id)
        assert mapped == plain
        assert mapped.hash == plain.hash == contact_hash(plain)

        for source in (mapped, plain):
            made = Contact.new_from(
                source, id=like.id, tenant_id="ten_1", sources=like.sources, now=like.created_at
            )
            expected = Contact(
                **fields,
                custom=like.custom,
                id=like.id,
                tenant_id="ten_1",
                sources=like.sources,
                hash=plain.hash,
                created_at=like.created_at,
                updated_at=like.created_at,
            )
            assert made == expected
            assert repr(made) == repr(expected)
            assert dataclasses.replace(made, phone="1") == dataclasses.replace(expected, phone="1")
            with pytest.raises(dataclasses.FrozenInstanceError):
                made.email = "other@example.com"  # type: ignore[misc]
