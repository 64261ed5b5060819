"""/api/v1/events: publish; thin: parse, call the service, shape the answer."""

from __future__ import annotations

from fastapi import APIRouter

from isthmus.api.deps import HubDep, Writer
from isthmus.api.event_schemas import EventAccepted, EventIn

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
