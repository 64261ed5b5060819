"""/api/v1/event-types: thin: parse, call the service, shape the answer."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from isthmus.api.deps import CursorQ, HubDep, LimitQ, Reader, Writer
from isthmus.api.schemas import EventTypeCreate, EventTypeOut, EventTypePatch, PageOut
from isthmus.domain.pagination import DEFAULT_LIMIT

router = APIRouter(prefix="/api/v1/event-types", tags=["event types"])


@router.get("", summary="List event types (preloaded ones included), by name")
async def list_event_types(
    hub: HubDep,
    actor: Reader,
    archived: Annotated[
        bool | None, Query(description="Only archived (true) or only live (false) types.")
    ] = None,
    cursor: CursorQ = None,
    limit: LimitQ = DEFAULT_LIMIT,
) -> PageOut[EventTypeOut]:
    page = await hub.event_types.list(
        actor.tenant_id, archived=archived, cursor=cursor, limit=limit
    )
    return PageOut(data=[EventTypeOut.of(e) for e in page.items], next_cursor=page.next_cursor)


@router.post("", status_code=201, summary="Create an event type")
async def create(body: EventTypeCreate, hub: HubDep, actor: Writer) -> EventTypeOut:
    created = await hub.event_types.create(
        actor,
        name=body.name,
        description=body.description,
        schema=body.payload_schema,
        archived=body.archived,
    )
    return EventTypeOut.of(created)


@router.get("/{name}", summary="Get an event type")
async def get(name: str, hub: HubDep, actor: Reader) -> EventTypeOut:
    return EventTypeOut.of(await hub.event_types.get(actor.tenant_id, name))


@router.patch("/{name}", summary="Change an event type's description, schema or archived flag")
async def patch(name: str, body: EventTypePatch, hub: HubDep, actor: Writer) -> EventTypeOut:
    changes = body.changes()
    if "payload_schema" in changes:
        changes["schema"] = changes.pop("payload_schema")
    return EventTypeOut.of(await hub.event_types.update(actor, name, changes))
