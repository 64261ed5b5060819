"""API keys and scopes: generation, hashing and the scope rule."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from enum import StrEnum

#: Fixed prefix so secret scanners can find leaked keys.
KEY_PREFIX = "isk_"
_DISPLAY_CHARS = 8


class Scope(StrEnum):
    READ = "read"
    WRITE = "write"
    ADMIN = "admin"


# admin can do everything write can, write everything read can.
_IMPLIES = {
    Scope.ADMIN: {Scope.ADMIN, Scope.WRITE, Scope.READ},
    Scope.WRITE: {Scope.WRITE, Scope.READ},
    Scope.READ: {Scope.READ},
}


def grants(held: tuple[str, ...] | frozenset[str], needed: Scope) -> bool:
    return any(needed in _IMPLIES[Scope(s)] for s in held if s in Scope.__members__.values())


def generate_key() -> str:
    """``isk_`` + 32 random bytes, base64url (43 characters)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def display_prefix(key: str) -> str:
    """The first characters, kept so a person can tell keys apart in a list."""
    return key[: len(KEY_PREFIX) + _DISPLAY_CHARS]


@dataclass(frozen=True)
class Actor:
    """Who does something: an API key (``key_...``) or an operator at the CLI (``cli``)."""

    tenant_id: str
    id: str
    scopes: frozenset[str] = frozenset()
    client_ip: str | None = None
