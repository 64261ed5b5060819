"""Secrets where an integration's config would keep them in the clear.

A config is stored as it is, shown by the API, written to the audit log and exported without
``--with-secrets``; credentials are sealed in the vault. A header or a query parameter of the
endpoint whose name says it holds a secret (``Authorization``, ``X-API-Key``, ``api_key``, by
``isthmus.http.redact``'s rule) is refused there, with the way to send it as a credential.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from yarl import URL

from isthmus.errors import FieldError
from isthmus.http.redact import is_secret_name


def secret_errors(config: object) -> Iterator[FieldError]:
    """One error per secret-looking header of ``config.headers`` and query parameter of
    ``config.apiEndpoint``."""
    if not isinstance(config, Mapping):
        return
    headers = config.get("headers")
    if isinstance(headers, Mapping):
        for name in headers:
            if not isinstance(name, str) or not is_secret_name(name):
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
            if is_secret_name(name):
                yield FieldError(
                    "config.apiEndpoint",
                    f"its query parameter {name!r} looks like a secret, and the config is "
                    'stored and shown as it is: send it as a credential (auth {"type": '
                    f'"query", "paramName": "{name}"}} and the value as credentials.apiKey)',
                )
