"""Secrets where an integration's config would keep them in the clear.

A config is stored as it is, shown by the API, written to the audit log and exported without
``--with-secrets``; credentials are sealed in the vault. A header or a query parameter of the
endpoint whose name says it holds a credential (``Authorization``, ``X-API-Key``, ``api_key``,
``access_token``, Google's ``key``) is refused there, with the way to send it as one. The
rule is narrower than the logs' (``isthmus.http.redact``), which mask ``country_code`` or
``session_id`` at no cost: refusing those would refuse good configs.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

from yarl import URL

from isthmus.errors import FieldError

# In the lowercased name without punctuation ("X-API-Key" -> "xapikey").
_WORDS: tuple[str, ...] = ("token", "secret", "passw", "apikey", "accesskey", "authoriz")
_WORDS += ("credential", "privatekey", "signature")
_WHOLE = frozenset({"key", "auth", "xauth", "jwt", "pwd"})
_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def holds_credential(name: str) -> bool:
    """Whether a header or query parameter called ``name`` carries a credential."""
    flat = _NON_ALNUM.sub("", name.lower())
    return flat in _WHOLE or any(word in flat for word in _WORDS)


def secret_errors(config: object) -> Iterator[FieldError]:
    """One error per secret-looking header of ``config.headers`` and query parameter of
    ``config.apiEndpoint``."""
    if not isinstance(config, Mapping):
        return
    headers = config.get("headers")
    if isinstance(headers, Mapping):
        for name in headers:
            if not isinstance(name, str) or not holds_credential(name):
                continue
            how = (
                'auth {"type": "bearer"} and the token as credentials.apiKey, or "basic"'
                if name.lower() == "authorization"
                else f'auth {{"type": "header", "headerName": "{name}"}} and the value as '
                "credentials.apiKey"
            )
            yield FieldError(
                f"config.headers.{name}",
                "looks like a secret, and the config is stored and shown as it is: send it "
                f"as a credential ({how})",
            )
    endpoint = config.get("apiEndpoint")
    if isinstance(endpoint, str):
        try:
            query = URL(endpoint).query
        except (TypeError, ValueError):
            return  # the schema says what is wrong with it
        for name in dict.fromkeys(query):
            if holds_credential(name):
                yield FieldError(
                    "config.apiEndpoint",
                    f"its query parameter {name!r} looks like a secret, and the config is "
                    'stored and shown as it is: send it as a credential (auth {"type": '
                    f'"query", "paramName": "{name}"}} and the value as credentials.apiKey)',
                )
