"""Tenants and API keys: who may call, for which tenant, with which scopes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from isthmus.domain.auth import (
    Actor,
    Scope,
    display_prefix,
    generate_key,
    grants,
    hash_key,
)
from isthmus.domain.ids import new_id
from isthmus.domain.records import ApiKey, Tenant
from isthmus.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthenticated
from isthmus.services.audit import record
from isthmus.store import api_keys, tenants
from isthmus.store.db import Store
from isthmus.store.types import utcnow

DEFAULT_TENANT = "default"


@dataclass(frozen=True)
class IssuedKey:
    """A new key; ``secret`` exists only here and is shown once."""

    key: ApiKey
    secret: str


class AccessService:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def create_tenant(self, name: str) -> Tenant:
        name = name.strip()
        if not name or len(name) > 100:
            raise InvalidInput.field("name", "must be 1 to 100 characters")
        async with self.store.transaction() as conn:
            return await tenants.create(conn, name)

    async def list_tenants(self) -> list[Tenant]:
        async with self.store.read() as conn:
            return await tenants.list_all(conn)

    async def tenant_named(self, name: str) -> Tenant:
        async with self.store.read() as conn:
            tenant = await tenants.by_name(conn, name)
        if tenant is None:
            raise NotFound.of("tenant", name)
        return tenant

    async def bootstrap(self) -> IssuedKey | None:
        """On first start: the ``default`` tenant and an admin key; None if it already exists."""
        async with self.store.transaction() as conn:
            if await tenants.by_name(conn, DEFAULT_TENANT) is not None:
                return None
            try:
                tenant = await tenants.create(conn, DEFAULT_TENANT)
            except Conflict:
                return None  # another process, starting beside this one, made it first
            return await self._issue(
                conn, Actor(tenant.id, "system"), "bootstrap admin", (Scope.ADMIN,), None
            )

    async def create_key(
        self,
        actor: Actor,
        name: str,
        scopes: list[str],
        expires_at: datetime | None = None,
    ) -> IssuedKey:
        parsed = self._scopes(scopes)
        if expires_at is not None and expires_at <= utcnow():
            raise InvalidInput.field("expiresAt", "must be in the future")
        name = name.strip() or "unnamed"
        if len(name) > 200:
            raise InvalidInput.field("name", "must be at most 200 characters")
        async with self.store.transaction() as conn:
            return await self._issue(conn, actor, name, parsed, expires_at)

    async def _issue(
        self,
        conn: AsyncConnection,
        actor: Actor,
        name: str,
        scopes: tuple[Scope, ...],
        expires_at: datetime | None,
    ) -> IssuedKey:
        secret = generate_key()
        key = ApiKey(
            id=new_id("key"),
            tenant_id=actor.tenant_id,
            name=name,
            prefix=display_prefix(secret),
            scopes=tuple(str(s) for s in scopes),
            created_at=utcnow(),
            expires_at=expires_at,
        )
        await api_keys.insert(conn, key, hash_key(secret))
        diff = {"name": name, "scopes": list(key.scopes), "expiresAt": _iso(expires_at)}
        await record(conn, actor, "api_key.create", "api_key", key.id, diff)
        return IssuedKey(key, secret)

    @staticmethod
    def _scopes(scopes: list[str]) -> tuple[Scope, ...]:
        if not scopes:
            raise InvalidInput.field("scopes", "give at least one of read, write, admin")
        try:
            return tuple(dict.fromkeys(Scope(s) for s in scopes))
        except ValueError as exc:
            raise InvalidInput.field("scopes", "each scope must be read, write or admin") from exc

    async def list_keys(self, tenant_id: str) -> list[ApiKey]:
        async with self.store.read() as conn:
            return await api_keys.list_for(conn, tenant_id)

    async def revoke_key(self, actor: Actor, key_id: str) -> ApiKey:
        async with self.store.transaction() as conn:
            key = await api_keys.get(conn, actor.tenant_id, key_id)
            if key is None:
                raise NotFound.of("API key", key_id)
            if key.revoked_at is None:
                await api_keys.revoke(conn, actor.tenant_id, key_id, utcnow())
                await record(conn, actor, "api_key.revoke", "api_key", key_id, {"name": key.name})
            revoked = await api_keys.get(conn, actor.tenant_id, key_id)
        assert revoked is not None
        return revoked

    async def authenticate(self, token: str, client_ip: str | None) -> Actor:
        """The actor a bearer token stands for. The reason for a refusal is named (revoked,
        expired) because only the key's holder can present it."""
        if not token.startswith("isk_"):
            raise Unauthenticated("the API key is malformed: it must start with isk_")
        async with self.store.read() as conn:
            key = await api_keys.by_hash(conn, hash_key(token))
        if key is None:
            raise Unauthenticated("the API key is not valid")
        if key.revoked_at is not None:
            raise Unauthenticated("the API key has been revoked")
        if key.expires_at is not None and key.expires_at <= utcnow():
            raise Unauthenticated("the API key has expired")
        return Actor(key.tenant_id, key.id, frozenset(key.scopes), client_ip)

    @staticmethod
    def require(actor: Actor, scope: Scope) -> None:
        if not grants(frozenset(actor.scopes), scope):
            raise Forbidden(f"this API key lacks the {scope} scope")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
