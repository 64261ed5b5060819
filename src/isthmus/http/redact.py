"""Secret redaction for anything outbound that reaches a log: URLs and header sets.

Names decide, not values: a query parameter or header whose name says key, token, secret,
password, signature, auth, cookie or session has its value replaced by ``***``; userinfo in a
URL goes entirely (the user part is often an API key, as with HTTP basic against Stripe), and
so does the fragment (never sent, sometimes an OAuth implicit-flow token). Secrets inside path
segments (e.g. chat webhook URLs) cannot be told from names and are not redacted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import lru_cache

from yarl import URL

MASK = "***"

# Substrings of the lowercased, punctuation-free name ("X-API-Key" -> "xapikey").
_SECRET_WORDS = (
    "token",
    "secret",
    "passw",
    "signature",
    "apikey",
    "authoriz",
    "authentic",
    "credential",
    "cookie",
    "session",
    "privatekey",
)
# Whole words of the name ("api_key", "apiKey", "X-Auth" -> ["api", "key"], ["x", "auth"]).
_SECRET_PARTS = frozenset({"key", "auth", "sig", "pwd", "pass", "code", "jwt", "sid", "otp"})
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NON_ALNUM = re.compile(r"[^a-z0-9]+")


@lru_cache(maxsize=1024)
def is_secret_name(name: str) -> bool:
    """Whether a query parameter or header called ``name`` holds a secret. Cached: the
    same few names come back on every call an integration makes (3 us a name unmemoised)."""
    lowered = name.lower()
    if any(word in _NON_ALNUM.sub("", lowered) for word in _SECRET_WORDS):
        return True
    return any(part in _SECRET_PARTS for part in _NON_ALNUM.split(_CAMEL.sub("_", name).lower()))


def redact_url(url: str | URL) -> str:
    """``url`` with userinfo, fragment and secret query values removed, for logs."""
    try:
        parsed = url if isinstance(url, URL) else URL(url)
        if parsed.user is not None or parsed.password is not None:
            parsed = parsed.with_user(None)
            # Keep a visible trace that credentials were there (and where).
            redacted_authority = f"{MASK}@"
        else:
            redacted_authority = ""
        parsed = parsed.with_fragment(None)
        if parsed.query_string:
            pairs = [(k, MASK if is_secret_name(k) else v) for k, v in parsed.query.items()]
            parsed = parsed.with_query(pairs)
        text = str(parsed)
    except (TypeError, ValueError):
        return "<unparseable url>"
    if redacted_authority and "://" in text:
        scheme, rest = text.split("://", 1)
        text = f"{scheme}://{redacted_authority}{rest}"
    return text


def redact_header_value(name: str, value: str) -> str:
    """The value as it may be logged: secrets masked, an Authorization scheme kept."""
    if not is_secret_name(name):
        return value
    scheme, sep, _ = value.partition(" ")
    if sep and name.lower() in {"authorization", "proxy-authorization"}:
        return f"{scheme} {MASK}"
    return MASK


def redact_headers(
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None,
) -> dict[str, str]:
    """A loggable copy of ``headers``; repeated names are joined with ``, ``."""
    if headers is None:
        return {}
    items = headers.items() if isinstance(headers, Mapping) else headers
    out: dict[str, str] = {}
    for name, value in items:
        shown = redact_header_value(name, value)
        out[name] = f"{out[name]}, {shown}" if name in out else shown
    return out
