"""OAuth2 authorization code grant with PKCE (RFC 6749 4.1, RFC 7636) for integrations.

A person starts it (:meth:`OAuthService.authorize` gives the provider's authorize URL, with a
one-use ``state`` bound to tenant and integration and the PKCE challenge), the provider sends
their browser back to ``/api/v1/oauth/callback`` (:meth:`OAuthService.complete` exchanges the
code with the verifier and stores the tokens), and from then on
:class:`~isthmus.connectors.oauth_tokens.OAuth2AuthorizationCode` (built by
:meth:`OAuthService.auth`) puts the access token on the integration's requests, refreshing it
shortly before it expires.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from authlib.common.security import generate_token  # type: ignore[import-untyped]
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri  # type: ignore[import-untyped]
from authlib.oauth2.rfc7636 import create_s256_code_challenge  # type: ignore[import-untyped]
from sqlalchemy.ext.asyncio import AsyncConnection

from isthmus.connectors.auth import Clock, request_token
from isthmus.connectors.oauth_tokens import (
    AUTH_TYPE,
    OAUTH_ACTOR,
    REAUTHORIZE_MESSAGE,
    OAuth2AuthorizationCode,
    OAuthClient,
    save_tokens,
)
from isthmus.domain.auth import Actor
from isthmus.domain.integrations import IntegrationStatus
from isthmus.domain.records import Integration
from isthmus.errors import InvalidInput, NotFound
from isthmus.http import OutboundHTTP
from isthmus.services.audit import record
from isthmus.services.credentials import SecretBox
from isthmus.services.integrations import RESOURCE, owner_of
from isthmus.store import integrations as integrations_repo
from isthmus.store import oauth as repo
from isthmus.store.db import Store
from isthmus.store.oauth import OAuthState
from isthmus.store.types import utcnow
from isthmus.vault import Vault

CALLBACK_PATH = "/api/v1/oauth/callback"
STATE_LIFETIME = timedelta(minutes=10)
_NO_INTEGRATION = (
    "is not bound to an integration of its tenant (was it deleted?); start the authorization again"
)


@dataclass(frozen=True)
class AuthorizationStart:
    """Where to send the person's browser, and the state that brings them back."""

    authorize_url: str
    state: str
    expires_at: datetime
    redirect_uri: str


@dataclass(frozen=True)
class Connected:
    """An integration just authorized: as it now is, and what the provider granted."""

    integration: Integration
    scope: str | None
    expires_at: datetime | None


class OAuthService:
    """Starts and completes authorizations; builds the auth of an authorized integration."""

    def __init__(
        self,
        store: Store,
        vault: Vault,
        http: OutboundHTTP,
        *,
        public_url: str,
        clock: Clock = utcnow,
    ) -> None:
        self.store = store
        self.vault = vault
        self.http = http
        self.redirect_uri = public_url.rstrip("/") + CALLBACK_PATH
        self.clock = clock

    async def authorize(self, actor: Actor, integration_id: str) -> AuthorizationStart:
        now = self.clock()
        async with self.store.transaction() as conn:
            integration = await integrations_repo.get(conn, actor.tenant_id, integration_id)
            if integration is None:
                raise NotFound.of(RESOURCE, integration_id)
            client = await self._client(conn, integration)
            verifier = generate_token(64)
            state = OAuthState(
                state=generate_token(43),
                tenant_id=actor.tenant_id,
                integration_id=integration_id,
                code_verifier=verifier,
                redirect_uri=self.redirect_uri,
                created_at=now,
                expires_at=now + STATE_LIFETIME,
            )
            url = prepare_grant_uri(
                client.authorize_url,
                client.client_id,
                "code",
                redirect_uri=state.redirect_uri,
                scope=list(client.scopes) or None,
                state=state.state,
                code_challenge=create_s256_code_challenge(verifier),
                code_challenge_method="S256",
            )
            await repo.insert_state(conn, state, now=now)
            await record(conn, actor, "integration.oauth.authorize", RESOURCE, integration_id)
        return AuthorizationStart(str(url), state.state, state.expires_at, state.redirect_uri)

    async def complete(
        self,
        *,
        state: str | None,
        code: str | None,
        error: str | None = None,
        error_description: str | None = None,
        client_ip: str | None = None,
    ) -> Connected:
        """Finish an authorization from the provider's redirect. Every refusal of the
        redirect itself is InvalidInput (the route answers 400); a failed code exchange is
        the token endpoint's OutboundError."""
        now = self.clock()
        taken = None
        if state and len(state) <= 100:
            async with self.store.transaction() as conn:
                taken = await repo.take_state(conn, state)
        if error:
            raise InvalidInput.field("error", _provider_error(error, error_description))
        if not state:
            raise InvalidInput.field("state", "is missing: this is not a provider's redirect")
        if taken is None:
            raise InvalidInput.field(
                "state", "is unknown or was already used; start the authorization again"
            )
        if taken.expires_at <= now:
            raise InvalidInput.field(
                "state",
                "has expired (an authorization must finish within "
                f"{STATE_LIFETIME.seconds // 60} minutes); start the authorization again",
            )
        if not code:
            raise InvalidInput.field("code", "is missing from the provider's redirect")

        async with self.store.read() as conn:
            integration = await integrations_repo.get(conn, taken.tenant_id, taken.integration_id)
            if integration is None:
                raise InvalidInput.field("state", _NO_INTEGRATION)
            client = await self._client(conn, integration)
        tokens = await request_token(
            self.http,
            client.token_url,
            "authorization_code",
            {
                "code": code,
                "redirect_uri": taken.redirect_uri,
                "code_verifier": taken.code_verifier,
            },
            client_id=client.client_id,
            client_secret=client.client_secret,
            client_auth=client.client_auth,
            now=now,
        )
        actor = Actor(taken.tenant_id, OAUTH_ACTOR, client_ip=client_ip)
        async with self.store.transaction() as conn:
            # Locked, so two callbacks for one integration write one after the other.
            current = await integrations_repo.get(
                conn, taken.tenant_id, taken.integration_id, for_update=True
            )
            if current is None:
                raise InvalidInput.field("state", _NO_INTEGRATION)
            await save_tokens(conn, self.vault, taken.tenant_id, taken.integration_id, tokens)
            status = IntegrationStatus.ACTIVE if current.enabled else IntegrationStatus.INACTIVE
            await integrations_repo.set_status(
                conn, current.tenant_id, current.id, status, None, now=now, verified=True
            )
            diff = {
                "status": {"from": str(current.status), "to": str(status)},
                "scope": tokens.scope,
            }
            await record(conn, actor, "integration.oauth.connect", RESOURCE, current.id, diff)
            updated = replace(
                current, status=status, status_message=None, verified_at=now, updated_at=now
            )
        return Connected(updated, tokens.scope, tokens.expires_at)

    def auth(
        self,
        tenant_id: str,
        integration_id: str,
        config: Mapping[str, Any],
        credentials: Mapping[str, str],
        *,
        clock: Clock | None = None,
    ) -> OAuth2AuthorizationCode:
        """The auth of an integration using the authorization code grant (its config and
        credentials give the client; the tokens are read from the store when needed)."""
        return OAuth2AuthorizationCode(
            self.store,
            self.vault,
            self.http,
            tenant_id=tenant_id,
            integration_id=integration_id,
            client=OAuthClient.of(config, credentials),
            clock=clock or self.clock,
        )

    async def auth_for(
        self, tenant_id: str, integration_id: str, *, clock: Clock | None = None
    ) -> OAuth2AuthorizationCode:
        """Like :meth:`auth`, reading the integration and its credentials first."""
        async with self.store.read() as conn:
            integration = await integrations_repo.get(conn, tenant_id, integration_id)
            if integration is None:
                raise NotFound.of(RESOURCE, integration_id)
            credentials = await self._credentials(conn, integration)
        return self.auth(tenant_id, integration_id, integration.config, credentials, clock=clock)

    async def _client(self, conn: AsyncConnection, integration: Integration) -> OAuthClient:
        return OAuthClient.of(integration.config, await self._credentials(conn, integration))

    async def _credentials(self, conn: AsyncConnection, integration: Integration) -> dict[str, str]:
        box = SecretBox(self.vault, integration.tenant_id, owner_of(integration.id))
        return await box.read(conn)


def _provider_error(error: str, description: str | None) -> str:
    said = f": {' '.join(description.split())[:300]}" if description else ""
    if error == "access_denied":
        return f"the provider reports that access was denied (access_denied){said}"
    return f"the provider refused the authorization ({error[:100]}){said}"


__all__ = [
    "AUTH_TYPE",
    "CALLBACK_PATH",
    "REAUTHORIZE_MESSAGE",
    "STATE_LIFETIME",
    "AuthorizationStart",
    "Connected",
    "OAuth2AuthorizationCode",
    "OAuthClient",
    "OAuthService",
    "save_tokens",
]
