"""/api/v1/events: publish, and read what was published; thin: parse, call the service,
shape the answer."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from isthmus.api.deps import CursorQ, HubDep, LimitQ, Reader, Writer, utc_instant
from isthmus.api.event_schemas import EventAccepted, EventDetailOut, EventIn, EventSummaryOut
from isthmus.api.schemas import PageOut
from isthmus.domain.pagination import DEFAULT_LIMIT
from isthmus.webhooks.event_log import EventLogService

router = APIRouter(prefix="/api/v1/events", tags=["events"])


@router.post(
    "",
    status_code=202,
    summary="Publish an event; one delivery per matching active subscription is queued",
    responses={413: {"description": "The event's payload is over the cap"}},
)
async def publish(body: EventIn, hub: HubDep, actor: Writer) -> EventAccepted:
    result = await hub.events.publish(
        actor, event_type=body.type, data=body.data, idempotency_key=body.idempotency_key
    )
    return EventAccepted.of(result)


@router.get("", summary="Published events, newest first, with their deliveries by status")
async def list_events(
    hub: HubDep,
    actor: Reader,
    event_type: Annotated[
        str | None,
        Query(
            alias="type",
            max_length=100,
            description="Only this type, or a wildcard as subscriptions take them (`contact.*`).",
        ),
    ] = None,
    since: Annotated[datetime | None, Query(description="Published at or after this time.")] = None,
    until: Annotated[datetime | None, Query(description="Published before this time.")] = None,
    cursor: CursorQ = None,
    limit: LimitQ = DEFAULT_LIMIT,
) -> PageOut[EventSummaryOut]:
    page = await EventLogService(hub.store).list(
        actor.tenant_id,
        event_type=event_type,
        since=utc_instant("since", since),
        until=utc_instant("until", until),
        cursor=cursor,
        limit=limit,
    )
    data = [EventSummaryOut.of_summary(s) for s in page.items]
    return PageOut(data=data, next_cursor=page.next_cursor)


@router.get("/{event_id}", summary="One event with every delivery made of it")
async def get_event(event_id: str, hub: HubDep, actor: Reader) -> EventDetailOut:
    return EventDetailOut.of_detail(await EventLogService(hub.store).get(actor.tenant_id, event_id))
