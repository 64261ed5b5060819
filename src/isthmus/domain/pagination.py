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
    value = _decoded(cursor)
    if "_" not in value or not value.isprintable():
        raise InvalidInput.field("cursor", "is not a cursor this API returned")
    return value


def decode_name_cursor(cursor: str | None) -> str | None:
    """The cursor of a list ordered by name rather than id (event types): any printable
    name, so the id rule above (a ``prefix_``) does not apply."""
    if not cursor:
        return None
    value = _decoded(cursor)
    if not value or not value.isprintable():
        raise InvalidInput.field("cursor", "is not a cursor this API returned")
    return value


def _decoded(cursor: str) -> str:
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidInput.field("cursor", "is not a cursor this API returned") from exc
