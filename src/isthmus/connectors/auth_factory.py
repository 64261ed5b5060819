"""One function from an integration's ``auth`` config block and credentials to its Auth."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from isthmus.connectors.auth import (
    BasicAuth,
    BearerAuth,
    Clock,
    HeaderAuth,
    NoAuth,
    OAuth2ClientCredentials,
    QueryAuth,
)
from isthmus.connectors.oauth import AUTH_TYPE, OAuthService
from isthmus.connectors.types import Auth
from isthmus.domain.records import Integration
from isthmus.errors import InvalidInput
from isthmus.http import OutboundHTTP
from isthmus.store.types import utcnow

DEFAULT_AUTH_TYPE = "bearer"


def auth_for(
    config: Mapping[str, Any],
    credentials: Mapping[str, str],
    *,
    http: OutboundHTTP,
    clock: Clock = utcnow,
    oauth: OAuthService | None = None,
    integration: Integration | None = None,
) -> Auth:
    """The Auth an ``api_endpoint``-style config asks for (``config["auth"]["type"]``,
    bearer when unset: ``apiKey`` as ``Authorization: Bearer``).

    ``oauth2_authorization_code`` needs the saved ``integration`` (its tokens are stored
    per integration) and the ``oauth`` service. A credential the type needs but that is
    missing, or an unknown type, is InvalidInput naming the field.
    """
    block: Mapping[str, Any] = config.get("auth") or {}
    kind = block.get("type") or DEFAULT_AUTH_TYPE

    def need(name: str) -> str:
        value = credentials.get(name)
        if not value:
            raise InvalidInput.field(f"credentials.{name}", f"is required for auth type {kind!r}")
        return value

    if kind == "none":
        return NoAuth()
    if kind == "bearer":
        return BearerAuth(need("apiKey"))
    if kind == "header":
        return HeaderAuth(need("apiKey"), block.get("headerName") or "X-API-Key")
    if kind == "query":
        return QueryAuth(need("apiKey"), block.get("paramName") or "api_key")
    if kind == "basic":
        return BasicAuth(need("username"), need("password"))
    if kind == "oauth2_client_credentials":
        token_url = block.get("tokenUrl")
        if not token_url:
            raise InvalidInput.field("config.auth.tokenUrl", f"is required for auth type {kind!r}")
        return OAuth2ClientCredentials(
            token_url,
            need("clientId"),
            need("clientSecret"),
            tuple(block.get("scopes") or ()),
            http=http,
            clock=clock,
            client_auth=block.get("clientAuthMethod") or "client_secret_post",
        )
    if kind == AUTH_TYPE:
        if oauth is None or integration is None:
            raise InvalidInput.field(
                "config.auth.type",
                f"{AUTH_TYPE!r} works only for a saved integration, once authorized "
                "(POST /api/v1/integrations/{id}/oauth/authorize)",
            )
        return oauth.auth(integration.tenant_id, integration.id, config, credentials, clock=clock)
    raise InvalidInput.field("config.auth.type", f"unknown auth type {kind!r}")
