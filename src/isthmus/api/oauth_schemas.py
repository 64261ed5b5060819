"""Bodies of the OAuth2 routes (``/api/v1/integrations/{id}/oauth/authorize``, the callback)."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from isthmus.api.schemas import Out
from isthmus.connectors.oauth import AuthorizationStart, Connected
from isthmus.domain.integrations import IntegrationStatus


class OAuthAuthorizeOut(Out):
    authorize_url: str = Field(description="Send the person's browser here to authorize.")
    state: str = Field(description="Binds the provider's redirect to this integration; one use.")
    expires_at: datetime = Field(description="The authorization must finish before this.")
    redirect_uri: str = Field(description="Register it with the provider as the redirect URI.")

    @classmethod
    def of(cls, start: AuthorizationStart) -> OAuthAuthorizeOut:
        return cls(
            authorize_url=start.authorize_url,
            state=start.state,
            expires_at=start.expires_at,
            redirect_uri=start.redirect_uri,
        )


class OAuthConnectedOut(Out):
    connected: bool = True
    integration_id: str
    name: str
    status: IntegrationStatus
    verified_at: datetime | None
    scope: str | None = Field(description="What the provider granted, when it says.")
    expires_at: datetime | None = Field(description="When the access token expires.")

    @classmethod
    def of(cls, done: Connected) -> OAuthConnectedOut:
        i = done.integration
        return cls(
            integration_id=i.id,
            name=i.name,
            status=i.status,
            verified_at=i.verified_at,
            scope=done.scope,
            expires_at=done.expires_at,
        )
