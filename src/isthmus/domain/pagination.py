"""Opaque cursors for keyset pagination over time-ordered ids."""

from __future__ import annotations

import base64
import binascii

from isthmus.errors import InvalidInput

MAX_LIMIT = 200
DEFAULT_LIMIT = 50


def encode_cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> str | None:
    if not cursor:
        return None
    try:
        value = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidInput.field("cursor", "is not a cursor this API returned") from exc
    if "_" not in value or not value.isprintable():
        raise InvalidInput.field("cursor", "is not a cursor this API returned")
    return value
