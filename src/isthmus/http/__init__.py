"""Outbound HTTP: the one way isthmus calls anything outside itself.

Build one :class:`OutboundHTTP` per process (``OutboundHTTP.from_settings(settings)``), call
:meth:`OutboundHTTP.request`, decide on statuses with :func:`raise_for_status`. Failures are
the ``OutboundError`` branch of :mod:`isthmus.errors`; each class knows whether it is
``retryable`` and its short ``error_class`` for logs.
"""

from __future__ import annotations

from isthmus.http.client import USER_AGENT, OutboundHTTP, OutboundResponse
from isthmus.http.redact import is_secret_name, redact_header_value, redact_headers, redact_url
from isthmus.http.resolver import (
    AddressPolicy,
    GuardedResolver,
    parse_ip,
    parse_legacy_ipv4,
    parse_networks,
)
from isthmus.http.statuses import (
    MAX_RETRY_AFTER,
    parse_retry_after,
    raise_for_status,
    upstream_message,
)

__all__ = [
    "MAX_RETRY_AFTER",
    "USER_AGENT",
    "AddressPolicy",
    "GuardedResolver",
    "OutboundHTTP",
    "OutboundResponse",
    "is_secret_name",
    "parse_ip",
    "parse_legacy_ipv4",
    "parse_networks",
    "parse_retry_after",
    "raise_for_status",
    "redact_header_value",
    "redact_headers",
    "redact_url",
    "upstream_message",
]
