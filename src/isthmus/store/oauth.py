"""OAuth2 authorizations in flight (``oauth_states``) and the non-secret half of an
integration's tokens (``oauth_tokens``); the token values themselves are sealed in ``secrets``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from isthmus.store.tables import oauth_states, oauth_tokens


def token_owner(integration_id: str) -> str:
    """The ``secrets`` owner holding an integration's token values."""
    return f"oauth:{integration_id}"


@dataclass(frozen=True)
class OAuthState:
    state: str
    tenant_id: str
    integration_id: str
    code_verifier: str
    redirect_uri: str
    created_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class TokenRow:
    integration_id: str
    tenant_id: str
    token_type: str
    scope: str | None
    expires_at: datetime | None
    version: int
    updated_at: datetime


async def insert_state(conn: AsyncConnection, state: OAuthState, *, now: datetime) -> None:
    # Abandoned authorizations go as new ones start: the table stays as small as its traffic.
    await conn.execute(oauth_states.delete().where(oauth_states.c.expires_at < now))
    await conn.execute(oauth_states.insert().values(**state.__dict__))


async def take_state(conn: AsyncConnection, state: str) -> OAuthState | None:
    """The state row, deleted in the same step so it can be used once; None when unknown or
    already taken (by a concurrent callback too: only one delete can win)."""
    row = (await conn.execute(oauth_states.select().where(oauth_states.c.state == state))).first()
    if row is None:
        return None
    deleted = await conn.execute(oauth_states.delete().where(oauth_states.c.state == state))
    return OAuthState(**row._mapping) if deleted.rowcount == 1 else None


async def get_token(
    conn: AsyncConnection, tenant_id: str, integration_id: str, *, for_update: bool = False
) -> TokenRow | None:
    """The token row; ``for_update`` locks it until the transaction ends (PostgreSQL; a
    SQLite write transaction holds the whole database already)."""
    query = oauth_tokens.select().where(
        oauth_tokens.c.integration_id == integration_id, oauth_tokens.c.tenant_id == tenant_id
    )
    if for_update:
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    return TokenRow(**row._mapping) if row else None


async def save_token(conn: AsyncConnection, row: TokenRow) -> None:
    """Write the row as given (the caller sets ``version``), inserting it the first time."""
    values = row.__dict__
    updated = await conn.execute(
        oauth_tokens.update()
        .where(
            oauth_tokens.c.integration_id == row.integration_id,
            oauth_tokens.c.tenant_id == row.tenant_id,
        )
        .values(**values)
    )
    if updated.rowcount == 0:
        await conn.execute(oauth_tokens.insert().values(**values))
