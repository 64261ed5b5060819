"""Idempotency hashes stay what earlier versions stored: a key repeated after an upgrade
with the same data must still be a duplicate, not a 422."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from isthmus.webhooks.publish import _hash
from isthmus.webhooks.signing import data_json


def stored_by_earlier_versions(event_type: str, data: Any) -> str:
    canonical = json.dumps(
        [event_type, data], sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"b": 1, "a": [3, 2, {"z": None, "y": True}]},
        {"name": "Zoë Ångström 東京", "quote": 'say "hi"\n', "n": 1.5, "big": 10**20},
        [1, "two", {"three": 3}],
        "just a string",
        None,
    ],
)
def test_the_payload_hash_is_unchanged(data: Any) -> None:
    assert _hash("contact.créé", data_json(data)) == stored_by_earlier_versions(
        "contact.créé", data
    )
