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
    └── ConfigError             settings that cannot work together
"""

from __future__ import annotations

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
