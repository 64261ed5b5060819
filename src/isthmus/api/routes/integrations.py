"""/api/v1/integrations: thin: parse, call the service, shape the answer."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from isthmus.api.deps import Admin, CursorQ, HubDep, LimitQ, Reader, Writer
from isthmus.api.schemas import (
    CredentialFieldOut,
    IntegrationCreate,
    IntegrationOut,
    IntegrationPatch,
    PageOut,
    ProviderOut,
    RevealIn,
    RevealOut,
)
from isthmus.domain.integrations import IntegrationStatus, IntegrationType
from isthmus.domain.pagination import DEFAULT_LIMIT
from isthmus.errors import FieldError, InvalidInput

router = APIRouter(prefix="/api/v1/integrations", tags=["integrations"])


@router.get("/providers", summary="The provider catalog")
async def providers(hub: HubDep, _: Reader) -> PageOut[ProviderOut]:
    return PageOut(
        data=[
            ProviderOut(
                name=p.name,
                display_name=p.display_name,
                category=p.category,
                description=p.description,
                credentials=[CredentialFieldOut(**c.model_dump()) for c in p.credentials],
                auth_types=p.auth.types,
                default_auth_type=p.auth.default,
                config_schema=p.config_schema,
            )
            for p in hub.catalog.all()
        ],
        next_cursor=None,
    )


@router.post("", status_code=201, summary="Create an integration")
async def create(body: IntegrationCreate, hub: HubDep, actor: Writer) -> IntegrationOut:
    view = await hub.integrations.create(
        actor,
        name=body.name,
        provider=body.provider,
        type=body.type,
        description=body.description,
        config=body.config,
        credentials=dict(body.credentials),
        enabled=body.enabled,
    )
    return IntegrationOut.of(view)


@router.get("", summary="List integrations")
async def list_integrations(
    hub: HubDep,
    actor: Reader,
    provider: Annotated[
        str | None, Query(description="Only this provider (`api_endpoint`, `hubspot`, ...).")
    ] = None,
    type: Annotated[IntegrationType | None, Query(description="Only this type.")] = None,
    status: Annotated[IntegrationStatus | None, Query(description="Only this status.")] = None,
    cursor: CursorQ = None,
    limit: LimitQ = DEFAULT_LIMIT,
) -> PageOut[IntegrationOut]:
    page = await hub.integrations.list(
        actor.tenant_id,
        provider=provider,
        type=type,
        status=status,
        cursor=cursor,
        limit=limit,
    )
    return PageOut(data=[IntegrationOut.of(v) for v in page.items], next_cursor=page.next_cursor)


@router.get("/{integration_id}", summary="Get an integration")
async def get(integration_id: str, hub: HubDep, actor: Reader) -> IntegrationOut:
    return IntegrationOut.of(await hub.integrations.get(actor.tenant_id, integration_id))


@router.patch("/{integration_id}", summary="Change an integration")
async def patch(
    integration_id: str, body: IntegrationPatch, hub: HubDep, actor: Writer
) -> IntegrationOut:
    changes = body.model_dump(exclude_unset=True)
    nulls = [k for k, v in changes.items() if v is None]
    if nulls:
        raise InvalidInput(
            "fields that cannot be null: " + ", ".join(nulls),
            [FieldError(k, "must not be null") for k in nulls],
        )
    view = await hub.integrations.update(actor, integration_id, changes)
    return IntegrationOut.of(view)


@router.delete("/{integration_id}", status_code=204, summary="Delete an integration")
async def delete(integration_id: str, hub: HubDep, actor: Writer) -> Response:
    await hub.integrations.delete(actor, integration_id)
    return Response(status_code=204)


@router.post("/{integration_id}/enable", summary="Enable an integration")
async def enable(integration_id: str, hub: HubDep, actor: Writer) -> IntegrationOut:
    return IntegrationOut.of(await hub.integrations.set_enabled(actor, integration_id, True))


@router.post("/{integration_id}/disable", summary="Disable an integration")
async def disable(integration_id: str, hub: HubDep, actor: Writer) -> IntegrationOut:
    return IntegrationOut.of(await hub.integrations.set_enabled(actor, integration_id, False))


@router.post(
    "/{integration_id}/credentials/reveal",
    summary="Reveal one credential in clear (admin; audited)",
)
async def reveal(integration_id: str, body: RevealIn, hub: HubDep, actor: Admin) -> RevealOut:
    value = await hub.integrations.reveal(actor, integration_id, body.field)
    return RevealOut(field=body.field, value=value)
