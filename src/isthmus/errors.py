"""The one exception tree of isthmus.

Every failure a caller can act on is one of these; foreign exceptions (SQLAlchemy, aiohttp,
cryptography, ...) are translated at the adapter that meets them. The API maps each class to
one HTTP status in ``isthmus.api.problems``; whether a failure is worth retrying is a property
of its class (``retryable``), never re-derived from status codes downstream::

    IsthmusError
    ├── InvalidInput            bad input; carries field errors (422)
    │   └── PayloadTooLarge     body over the cap (413)
    ├── NotFound                no such row *for this tenant* (404)
    ├── Conflict                unique name taken, state does not allow it (409)
    ├── AuthError
    │   ├── Unauthenticated     missing, malformed, unknown, expired or revoked key (401)
    │   └── Forbidden           the key lacks a scope (403)
    ├── RateLimited             budget spent; carries retry_after seconds (429)
    ├── VaultError
    │   ├── DecryptionFailed    ciphertext does not open for this row (or the key is gone)
    │   └── MasterKeyError      master keys missing, malformed, or unusable
    ├── StoreUnavailable        the database cannot be reached (retryable)
    ├── ConfigError             settings that cannot work together
    └── OutboundError           an outbound HTTP call failed (isthmus.http); error_class names it
        ├── InvalidURL              not an absolute http(s) URL                 invalid_url
        ├── BlockedAddress          destination not public (SSRF guard)         blocked
        ├── TransportError          no complete response came back
        │   ├── DNSFailure          the name does not resolve (retryable)       dns
        │   ├── ConnectionRefused   nothing listens there (retryable)           refused
        │   ├── OutboundTimeout     connect or total timeout (retryable)        timeout
        │   ├── TLSFailure          handshake or certificate failed             tls
        │   └── NetworkError        reset, disconnect, broken reply (retryable) network
        ├── ResponseTooLarge        body over the response cap                  too_large
        ├── UpstreamStatusError     a non-2xx answer, from raise_for_status()   http_status
        │   ├── UpstreamRedirected  3xx: redirects are never followed           redirected
        │   ├── UpstreamAuthError   401, 403                                    auth
        │   │   └── ReauthorizationNeeded  the grant is gone (invalid_grant)    reauthorize
        │   ├── UpstreamNotFound    404                                         not_found
        │   ├── UpstreamRateLimited 429; retry_after seconds (retryable)        rate_limited
        │   ├── UpstreamUnavailable 5xx; retry_after when sent (retryable)      unavailable
        │   └── UpstreamRejected    any other 4xx; carries the body's message   rejected
        ├── BadResponse             2xx but unusable: not JSON, no records      bad_response
        │   └── PaginationLoop      the API sent a cursor it had sent before    pagination_loop
        └── BudgetExhausted         the integration's own rate budget has no    budget
                                    room within its maximum wait (retryable)

The upstream classes are deliberately not AuthError, NotFound or RateLimited: those describe
the hub's own caller (the API answers them with 401/404/429), an upstream's answer does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class FieldError:
    """One problem with one input field; ``field`` is a dotted path (``config.apiEndpoint``)."""

    field: str
    message: str


class IsthmusError(Exception):
    """Base of every error isthmus raises on purpose."""

    retryable: ClassVar[bool] = False
    title: ClassVar[str] = "Error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(IsthmusError):
    title = "Invalid input"

    def __init__(self, message: str, errors: list[FieldError] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []

    @classmethod
    def field(cls, field: str, message: str) -> InvalidInput:
        return cls(f"{field}: {message}", [FieldError(field, message)])

    @classmethod
    def of(cls, errors: Sequence[FieldError]) -> InvalidInput:
        """One error reads ``field: message``; several, ``N invalid fields: a, b`` (each
        field's message is in ``errors``)."""
        if len(errors) == 1:
            return cls.field(errors[0].field, errors[0].message)
        fields = list(dict.fromkeys(e.field for e in errors))
        plural = "" if len(fields) == 1 else "s"
        return cls(f"{len(fields)} invalid field{plural}: {', '.join(fields)}", list(errors))


class PayloadTooLarge(InvalidInput):
    title = "Payload too large"


class NotFound(IsthmusError):
    title = "Not found"

    @classmethod
    def of(cls, kind: str, ident: str) -> NotFound:
        return cls(f"{kind} {ident!r} does not exist")


class Conflict(IsthmusError):
    title = "Conflict"


class AuthError(IsthmusError):
    title = "Authentication failed"


class Unauthenticated(AuthError):
    title = "Unauthenticated"


class Forbidden(AuthError):
    title = "Forbidden"


class RateLimited(IsthmusError):
    retryable = True
    title = "Rate limit exceeded"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class VaultError(IsthmusError):
    title = "Vault error"


class DecryptionFailed(VaultError):
    title = "Credential cannot be decrypted"


class MasterKeyError(VaultError):
    title = "Master key error"


class StoreUnavailable(IsthmusError):
    retryable = True
    title = "Store unavailable"


class ConfigError(IsthmusError):
    title = "Configuration error"


# -- outbound HTTP (isthmus.http) ----------------------------------------------------------


class OutboundError(IsthmusError):
    """An outbound HTTP call failed.

    ``error_class`` is the short, stable name delivery and request logs record; ``url`` is the
    target with its secrets redacted (safe to log and to show).
    """

    title = "Outbound request failed"
    error_class: ClassVar[str] = "network"

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__(message)
        self.url = url


class InvalidURL(OutboundError):
    title = "Invalid URL"
    error_class = "invalid_url"


class BlockedAddress(OutboundError):
    """The destination is not a public address and no allowlisted network holds it."""

    title = "Blocked address"
    error_class = "blocked"


class TransportError(OutboundError):
    """No complete response came back; nothing is known about what the upstream did."""

    title = "Upstream unreachable"


class DNSFailure(TransportError):
    retryable = True
    title = "DNS resolution failed"
    error_class = "dns"


class ConnectionRefused(TransportError):
    retryable = True
    title = "Connection refused"
    error_class = "refused"


class OutboundTimeout(TransportError):
    retryable = True
    title = "Upstream timed out"
    error_class = "timeout"


class TLSFailure(TransportError):
    title = "TLS error"
    error_class = "tls"


class NetworkError(TransportError):
    retryable = True
    title = "Network error"
    error_class = "network"


class ResponseTooLarge(OutboundError):
    title = "Response too large"
    error_class = "too_large"

    def __init__(self, message: str, *, limit: int, url: str | None = None) -> None:
        super().__init__(message, url=url)
        self.limit = limit


class UpstreamStatusError(OutboundError):
    """The upstream answered with a status the caller treats as failure.

    ``upstream_message`` is the message found in a JSON error body, if any; ``retry_after`` is
    the clamped Retry-After in seconds where the status gives one meaning (429, 5xx).
    """

    title = "Upstream error"
    error_class = "http_status"

    def __init__(
        self,
        message: str,
        *,
        status: int,
        url: str | None = None,
        upstream_message: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, url=url)
        self.status = status
        self.upstream_message = upstream_message
        self.retry_after = retry_after


class UpstreamRedirected(UpstreamStatusError):
    title = "Upstream redirected"
    error_class = "redirected"


class UpstreamAuthError(UpstreamStatusError):
    title = "Upstream refused the credentials"
    error_class = "auth"


class UpstreamNotFound(UpstreamStatusError):
    title = "Not found upstream"
    error_class = "not_found"


class UpstreamRateLimited(UpstreamStatusError):
    retryable = True
    title = "Rate limited upstream"
    error_class = "rate_limited"


class UpstreamUnavailable(UpstreamStatusError):
    retryable = True
    title = "Upstream unavailable"
    error_class = "unavailable"


class UpstreamRejected(UpstreamStatusError):
    title = "Upstream rejected the request"
    error_class = "rejected"


class ReauthorizationNeeded(UpstreamAuthError):
    """The authorization server refused the refresh token (``invalid_grant``): a person has
    to authorize the integration again."""

    title = "Reauthorization needed"
    error_class = "reauthorize"


class BadResponse(OutboundError):
    """A 2xx answer that cannot be used: not JSON, not the shape expected, or the data
    selector finds nothing in it."""

    title = "Unusable upstream response"
    error_class = "bad_response"


class PaginationLoop(BadResponse):
    """The API handed back a cursor (or next URL) it had already sent in this run; following
    it would loop for ever."""

    title = "Pagination loop"
    error_class = "pagination_loop"


class BudgetExhausted(OutboundError):
    """The integration's own rate-limit budget has no room for a call within its maximum
    wait; ``retry_after`` says when there will be (nothing was sent)."""

    retryable = True
    title = "Rate budget exhausted"
    error_class = "budget"

    def __init__(self, message: str, *, retry_after: float, url: str | None = None) -> None:
        super().__init__(message, url=url)
        self.retry_after = retry_after
