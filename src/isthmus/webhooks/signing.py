"""Signed body and headers of one outbound webhook delivery (pure: no I/O, no clock).

Two signature styles go out on every request, so receivers written for either one work:

- Standard Webhooks: ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature``, which
  holds ``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}." + body>`` once per active secret,
  keyed with the base64-decoded bytes after ``whsec_`` (what the official ``standardwebhooks``
  library verifies);
- the seeds' ``X-Webhook-Signature: sha256=<hex HMAC-SHA256 of the raw body>``, keyed with the
  secret string as the user sees it, plus ``X-Webhook-Id`` (the subscription id) and
  ``X-Webhook-Event``.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import json
import re
import secrets as _random
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from isthmus.errors import FieldError, InvalidInput

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
SECRET_BYTES = 32

MAX_CUSTOM_HEADERS = 20
MAX_HEADER_NAME = 256
MAX_HEADER_VALUE = 4096

# Headers a delivery sets itself. A subscription's custom headers may not replace them: a
# receiver must be able to trust that the signature, id and timestamp are ours.
RESERVED_HEADERS = frozenset(
    {
        "content-type",
        "user-agent",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "x-webhook-signature",
        "x-webhook-id",
        "x-webhook-event",
    }
)
# Headers that describe the connection or the framing rather than the message: the HTTP client
# owns them, and a user-given value would break or smuggle the request.
TRANSPORT_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "content-encoding",
        "expect",
    }
)
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # RFC 9110 field-name
_BAD_VALUE_CHARS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # CR/LF/NUL would inject headers


def generate_secret() -> str:
    """A new signing secret: ``whsec_`` + standard base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(_random.token_bytes(SECRET_BYTES)).decode("ascii")


@functools.lru_cache(maxsize=4096)
def _key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret: the bytes its base64 part decodes to
    (remembered: a worker signs with the same few secrets thousands of times a second)."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"a signing secret starts with {SECRET_PREFIX!r}")
    encoded = secret[len(SECRET_PREFIX) :]
    try:
        # Unpadded base64 is accepted, as the official library accepts it.
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except binascii.Error as exc:
        raise ValueError("a signing secret is whsec_ followed by base64") from exc
    if not key:
        raise ValueError("a signing secret may not be empty")
    return key


def sign_standard(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One Standard Webhooks signature: ``v1,<base64 HMAC-SHA256 of "{id}.{ts}." + body>``."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.digest(_key(secret), signed, "sha256")).decode("ascii")


def signature_header(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: one ``v1,...`` per active secret, space-separated.

    During a rotation's grace period the old and the new secret both sign, so a receiver
    holding either one verifies.
    """
    if not secrets:
        raise ValueError("at least one signing secret is needed")
    return " ".join(sign_standard(s, msg_id, timestamp, body) for s in secrets)


def sign_hex(secret: str, body: bytes) -> str:
    """The ``X-Webhook-Signature`` value: ``sha256=<hex HMAC-SHA256 of the raw body>``.

    The key is the UTF-8 of the whole secret string, ``whsec_`` prefix included, not its
    decoded bytes: both seeds verify with Node's ``crypto.createHmac('sha256', secret)`` where
    ``secret`` is the string the user was shown, and Node keys a string HMAC with its UTF-8
    bytes. The ``sha256=`` prefix is the one seed 004 compares against (seed 002 compares the
    bare hex, so its receivers strip the prefix).
    """
    return "sha256=" + hmac.digest(secret.encode("utf-8"), body, "sha256").hex()


def check_custom_headers(headers: Mapping[str, object] | None) -> dict[str, str]:
    """Validate a subscription's custom headers; return them as a plain ``dict``.

    Refused (one ``InvalidInput`` listing every problem): names that are not HTTP tokens,
    values that are not strings or hold control characters (CR/LF would inject headers), the
    headers a delivery sets itself (signatures, ids, timestamp, event, Content-Type,
    User-Agent; anything starting ``webhook-``), hop-by-hop and framing headers (Connection,
    Transfer-Encoding, Host, Content-Length, ...), the same name twice in different case, and
    more than ``MAX_CUSTOM_HEADERS`` headers. Refusing beats ignoring: a header the user set
    and we silently dropped would be a bug report waiting to happen.
    """
    if not headers:
        return {}
    errors: list[FieldError] = []
    if len(headers) > MAX_CUSTOM_HEADERS:
        errors.append(FieldError("headers", f"at most {MAX_CUSTOM_HEADERS} custom headers"))
    seen: set[str] = set()
    result: dict[str, str] = {}
    for name, value in headers.items():
        field = f"headers.{name}"
        lower = name.lower()
        if not _TOKEN.match(name) or len(name) > MAX_HEADER_NAME:
            errors.append(FieldError(field, "not a valid HTTP header name"))
            continue
        if lower in seen:
            errors.append(FieldError(field, "given twice (header names ignore case)"))
            continue
        seen.add(lower)
        if lower in RESERVED_HEADERS or lower.startswith("webhook-"):
            errors.append(FieldError(field, "set by the webhook delivery itself; cannot be set"))
            continue
        if lower in TRANSPORT_HEADERS:
            errors.append(FieldError(field, "a connection header; cannot be set"))
            continue
        if not isinstance(value, str):
            errors.append(FieldError(field, "the value must be a string"))
            continue
        if _BAD_VALUE_CHARS.search(value) or len(value) > MAX_HEADER_VALUE:
            errors.append(
                FieldError(
                    field, f"the value must be at most {MAX_HEADER_VALUE} printable characters"
                )
            )
            continue
        result[name] = value.strip()
    if errors:
        detail = "; ".join(f"{e.field}: {e.message}" for e in errors)
        raise InvalidInput(f"invalid custom headers: {detail}", errors)
    return result


def delivery_headers(
    *,
    secrets: Sequence[str],
    msg_id: str,
    timestamp: int,
    body: bytes,
    subscription_id: str,
    event_type: str,
    user_agent: str,
    extra: Mapping[str, object] | None = None,
) -> dict[str, str]:
    """Every header of one delivery attempt.

    ``secrets`` are the subscription's active secrets, oldest first and newest last; all of
    them sign ``webhook-signature``. ``X-Webhook-Signature`` holds one signature only (the
    seeds' receivers compare the whole header with one expected value), and it is the NEWEST
    secret's: the rotate call hands the user the new secret, so the switch happens when they
    chose to rotate, rather than silently when the grace period ends and nobody is watching.
    Receivers still on the old secret keep verifying through ``webhook-signature``.

    ``extra`` (the subscription's custom headers) goes through ``check_custom_headers``, so it
    can never replace the headers set here; ``InvalidInput`` if it holds a refused header.
    """
    if not secrets:
        raise ValueError("at least one signing secret is needed")
    headers = check_custom_headers(extra)
    headers.update(
        {
            "Content-Type": "application/json",
            "User-Agent": user_agent,
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(secrets, msg_id, timestamp, body),
            "X-Webhook-Signature": sign_hex(secrets[-1], body),
            "X-Webhook-Id": subscription_id,
            "X-Webhook-Event": event_type,
        }
    )
    return headers


def format_timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC with ``Z`` and milliseconds, as JavaScript's ``toISOString()`` writes."""
    if moment.tzinfo is None:
        raise ValueError("a webhook timestamp must be timezone-aware")
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def payload(event_type: str, timestamp: datetime, tenant_id: str, data: Any) -> bytes:
    """The delivery body: ``{"event", "timestamp", "tenantId", "data"}`` as compact UTF-8 JSON.

    The envelope keeps that documented order; keys inside ``data`` are sorted, so the same
    event gives the same bytes however its data was stored (PostgreSQL's JSONB reorders keys).
    Compact separators and unescaped non-ASCII make the body equal to what the seed's
    ``JSON.stringify(JSON.parse(body))`` re-serialises, so its hex check holds too.
    ``InvalidInput`` if ``data`` is not JSON (NaN, infinities, sets, ...).
    """
    return envelope(event_type, timestamp, tenant_id, data_json(data)).encode()


def data_json(data: Any) -> str:
    """``data`` as the body carries it (compact, keys sorted, non-ASCII as is); the one
    serialisation a publish makes of it. ``InvalidInput`` if it is not JSON."""
    try:
        return _dump(data, sort=True)
    except (TypeError, ValueError) as exc:
        raise InvalidInput.field("data", f"not JSON: {exc}") from exc


def envelope(event_type: str, timestamp: datetime, tenant_id: str, data_text: str) -> str:
    """The body around ``data_text`` (from ``data_json``), as text."""
    return (
        f'{{"event":{_dump(event_type)},"timestamp":{_dump(format_timestamp(timestamp))},'
        f'"tenantId":{_dump(tenant_id)},"data":{data_text}}}'
    )


def _dump(value: Any, *, sort: bool = False) -> str:
    return json.dumps(
        value, separators=(",", ":"), ensure_ascii=False, allow_nan=False, sort_keys=sort
    )
