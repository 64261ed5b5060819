"""The tokens of integrations authorized with the OAuth2 authorization code grant.

:class:`OAuth2AuthorizationCode` is the ``types.Auth`` of one such integration. Token values are
sealed in ``secrets`` (owner ``oauth:<integration id>``, fields ``accessToken`` and
``refreshToken``); the ``oauth_tokens`` row holds the rest and is the row a refresh locks, so
that across processes one refresh at a time runs per integration and the others, re-reading
after the lock, take its result instead of spending the refresh token again. Getting the first
tokens (authorize, callback) is ``connectors.oauth``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from isthmus.connectors.auth import (
    REFRESH_LEEWAY,
    ClientAuthMethod,
    Clock,
    TokenSet,
    bearer_value,
    request_token,
    token_due,
)
from isthmus.connectors.types import Request
from isthmus.domain.auth import Actor
from isthmus.domain.integrations import IntegrationStatus
from isthmus.errors import InvalidInput, ReauthorizationNeeded
from isthmus.http import OutboundHTTP
from isthmus.services.audit import record
from isthmus.services.credentials import SecretBox
from isthmus.services.integrations import RESOURCE
from isthmus.store import integrations as integrations_repo
from isthmus.store import oauth as repo
from isthmus.store.db import Store
from isthmus.store.oauth import TokenRow, token_owner
from isthmus.store.types import utcnow
from isthmus.vault import Vault

AUTH_TYPE = "oauth2_authorization_code"
REAUTHORIZE_MESSAGE = "reauthorization needed"
#: Who the audit trail names for what the OAuth flow does without an API key.
OAUTH_ACTOR = "oauth"
_ACCESS, _REFRESH = "accessToken", "refreshToken"


@dataclass(frozen=True)
class OAuthClient:
    """The OAuth2 client an integration's config and credentials describe."""

    authorize_url: str
    token_url: str
    client_id: str
    client_secret: str = field(repr=False)
    scopes: tuple[str, ...] = ()
    client_auth: ClientAuthMethod = "client_secret_post"

    @classmethod
    def of(cls, config: Mapping[str, Any], credentials: Mapping[str, str]) -> OAuthClient:
        """From an integration's config ``auth`` block and its credentials; InvalidInput
        when the integration does not use the authorization code grant."""
        auth = config.get("auth") or {}
        auth_type = auth.get("type", "bearer")
        if auth_type != AUTH_TYPE:
            raise InvalidInput.field(
                "config.auth.type",
                f"is {auth_type!r}; OAuth2 authorization needs {AUTH_TYPE!r}",
            )
        missing = [
            name
            for name, present in (
                ("config.auth.authorizeUrl", auth.get("authorizeUrl")),
                ("config.auth.tokenUrl", auth.get("tokenUrl")),
                ("credentials.clientId", credentials.get("clientId")),
                ("credentials.clientSecret", credentials.get("clientSecret")),
            )
            if not present
        ]
        if missing:
            raise InvalidInput.field(missing[0], f"is required for auth type {AUTH_TYPE!r}")
        return cls(
            authorize_url=auth["authorizeUrl"],
            token_url=auth["tokenUrl"],
            client_id=credentials["clientId"],
            client_secret=credentials["clientSecret"],
            scopes=tuple(auth.get("scopes") or ()),
            client_auth=auth.get("clientAuthMethod", "client_secret_post"),
        )


async def save_tokens(
    conn: AsyncConnection,
    vault: Vault,
    tenant_id: str,
    integration_id: str,
    tokens: TokenSet,
    *,
    refreshed: TokenRow | None = None,
) -> TokenRow:
    """Seal the token values and write the row with its version bumped.

    For a new grant the refresh token is replaced or, when none came, dropped. For a
    refresh of ``refreshed`` the old refresh token and scope are kept when the response
    omits them (RFC 6749 6: the server may keep the refresh token; scope unchanged).
    """
    box = SecretBox(vault, tenant_id, token_owner(integration_id))
    values = {_ACCESS: tokens.access_token}
    if tokens.refresh_token:
        values[_REFRESH] = tokens.refresh_token
    elif refreshed is None:
        await box.remove(conn, [_REFRESH])
    await box.write(conn, values)
    previous = refreshed or await repo.get_token(conn, tenant_id, integration_id)
    scope = tokens.scope
    if scope is None and refreshed is not None:
        scope = refreshed.scope
    row = TokenRow(
        integration_id=integration_id,
        tenant_id=tenant_id,
        token_type=tokens.token_type[:40],
        scope=scope,
        expires_at=tokens.expires_at,
        version=(previous.version if previous else 0) + 1,
        updated_at=tokens.issued_at,
    )
    await repo.save_token(conn, row)
    return row


@dataclass(frozen=True)
class _Current:
    """An access token as read from the store, and the row version it came with."""

    access_token: str = field(repr=False)
    issued_at: datetime
    expires_at: datetime | None
    version: int

    def due(self, now: datetime, leeway: timedelta) -> bool:
        return token_due(self.issued_at, self.expires_at, now, leeway)


class OAuth2AuthorizationCode:
    """The auth of one integration authorized with the authorization code grant.

    The access token is read from the store and cached in memory; shortly before it expires
    (or on ``renew()`` after a 401) it is refreshed in one transaction that locks the
    integration's token row, re-reads it, and calls the token endpoint only if the token is
    still stale: a refresh another process made meanwhile is used, not repeated. The rotated
    refresh token is saved in the same transaction (the old one kept when none came back).
    ``invalid_grant`` sets the integration to status ``error`` ("reauthorization needed") and
    raises ReauthorizationNeeded.
    """

    def __init__(
        self,
        store: Store,
        vault: Vault,
        http: OutboundHTTP,
        *,
        tenant_id: str,
        integration_id: str,
        client: OAuthClient,
        clock: Clock = utcnow,
        leeway: timedelta = REFRESH_LEEWAY,
    ) -> None:
        self.store = store
        self.vault = vault
        self.http = http
        self.tenant_id = tenant_id
        self.integration_id = integration_id
        self.client = client
        self.clock = clock
        self.leeway = leeway
        self._current: _Current | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"OAuth2AuthorizationCode(integration_id={self.integration_id!r})"

    async def apply(self, request: Request) -> None:
        request.headers["Authorization"] = bearer_value(await self.token())

    async def renew(self) -> bool:
        seen = self._current.version if self._current else None
        async with self._lock:
            if self._current is None or self._current.version == seen:
                self._current = await self._refresh(seen, force=True)
        return True

    async def token(self) -> str:
        """The access token, refreshed first when it is due."""
        current = self._current
        if current is not None and not current.due(self.clock(), self.leeway):
            return current.access_token
        async with self._lock:
            current = self._current
            if current is None or current.due(self.clock(), self.leeway):
                async with self.store.read() as conn:
                    current, _ = await self._read(conn, await self._row(conn))
                if current.due(self.clock(), self.leeway):
                    current = await self._refresh(current.version, force=False)
                self._current = current
            return current.access_token

    def _box(self) -> SecretBox:
        return SecretBox(self.vault, self.tenant_id, token_owner(self.integration_id))

    async def _row(self, conn: AsyncConnection, *, for_update: bool = False) -> TokenRow:
        row = await repo.get_token(conn, self.tenant_id, self.integration_id, for_update=for_update)
        if row is None:
            raise ReauthorizationNeeded(
                f"integration {self.integration_id!r} is not authorized yet: start the OAuth2 "
                f"authorization (POST /api/v1/integrations/{self.integration_id}/oauth/authorize)",
                status=401,
            )
        return row

    async def _read(self, conn: AsyncConnection, row: TokenRow) -> tuple[_Current, str | None]:
        """The stored access token, and the refresh token if there is one."""
        values = await self._box().read(conn)
        if _ACCESS not in values:
            raise ReauthorizationNeeded(
                f"integration {self.integration_id!r} has no access token stored; "
                "authorize it again",
                status=401,
            )
        current = _Current(values[_ACCESS], row.updated_at, row.expires_at, row.version)
        return current, values.get(_REFRESH)

    async def _refresh(self, seen: int | None, *, force: bool) -> _Current:
        failure: ReauthorizationNeeded | None = None
        async with self.store.transaction() as conn:
            row = await self._row(conn, for_update=True)
            current, refresh_token = await self._read(conn, row)
            renewed_elsewhere = seen is not None and row.version != seen
            if not current.due(self.clock(), self.leeway) and (renewed_elsewhere or not force):
                return current
            try:
                if not refresh_token:
                    raise ReauthorizationNeeded(
                        f"integration {self.integration_id!r} has no refresh token; "
                        "authorize it again",
                        status=401,
                    )
                tokens = await request_token(
                    self.http,
                    self.client.token_url,
                    "refresh_token",
                    {"refresh_token": refresh_token},
                    client_id=self.client.client_id,
                    client_secret=self.client.client_secret,
                    client_auth=self.client.client_auth,
                    now=self.clock(),
                )
            except ReauthorizationNeeded as exc:
                failure = exc
                await self._mark_reauthorization(conn, exc)
            else:
                saved = await save_tokens(
                    conn,
                    self.vault,
                    self.tenant_id,
                    self.integration_id,
                    tokens,
                    refreshed=row,
                )
                return _Current(
                    tokens.access_token, saved.updated_at, saved.expires_at, saved.version
                )
        # Outside the block: the status change above is committed before the error travels.
        assert failure is not None
        raise failure

    async def _mark_reauthorization(
        self, conn: AsyncConnection, failure: ReauthorizationNeeded
    ) -> None:
        current = await integrations_repo.get(conn, self.tenant_id, self.integration_id)
        already = current is not None and (current.status, current.status_message) == (
            IntegrationStatus.ERROR,
            REAUTHORIZE_MESSAGE,
        )
        if current is None or already:
            return  # one audit entry per lost grant, however often it is tried meanwhile
        await integrations_repo.set_status(
            conn,
            self.tenant_id,
            self.integration_id,
            IntegrationStatus.ERROR,
            REAUTHORIZE_MESSAGE,
            now=self.clock(),
        )
        diff = {
            "status": {"from": str(current.status), "to": str(IntegrationStatus.ERROR)},
            "statusMessage": REAUTHORIZE_MESSAGE,
            "reason": failure.upstream_message or failure.message,
        }
        actor = Actor(self.tenant_id, OAUTH_ACTOR)
        await record(conn, actor, "integration.oauth.refresh_failed", RESOURCE, current.id, diff)
