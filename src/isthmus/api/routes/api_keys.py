"""/api/v1/api-keys: the tenant's keys (admin)."""

from __future__ import annotations

from fastapi import APIRouter

from isthmus.api.deps import Admin, HubDep, utc_instant
from isthmus.api.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyOut, PageOut

router = APIRouter(prefix="/api/v1/api-keys", tags=["api keys"])


@router.get("", summary="List API keys (never the keys themselves)")
async def list_keys(hub: HubDep, actor: Admin) -> PageOut[ApiKeyOut]:
    keys = await hub.access.list_keys(actor.tenant_id)
    return PageOut(data=[ApiKeyOut.of(k) for k in keys], next_cursor=None)


@router.post("", status_code=201, summary="Create an API key (shown once)")
async def create_key(body: ApiKeyCreate, hub: HubDep, actor: Admin) -> ApiKeyCreated:
    expires_at = utc_instant("expiresAt", body.expires_at)
    issued = await hub.access.create_key(actor, body.name, body.scopes, expires_at)
    return ApiKeyCreated(**ApiKeyOut.of(issued.key).model_dump(), key=issued.secret)


@router.delete("/{key_id}", summary="Revoke an API key")
async def revoke_key(key_id: str, hub: HubDep, actor: Admin) -> ApiKeyOut:
    return ApiKeyOut.of(await hub.access.revoke_key(actor, key_id))
