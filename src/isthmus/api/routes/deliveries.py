"""The delivery log of /api/v1/webhooks: list, read, retry, recover; thin.

Included before the webhooks router: ``/webhooks/deliveries/{id}`` would otherwise be read
as ``/webhooks/{id}``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from isthmus.api.delivery_schemas import (
    DeliveryDetailOut,
    DeliveryOut,
    RecoverIn,
    RecoverOut,
)
from isthmus.api.deps import CursorQ, HubDep, LimitQ, Reader, Writer, utc_instant
from isthmus.api.schemas import PageOut
from isthmus.domain.pagination import DEFAULT_LIMIT
from isthmus.store.delivery_log import DeliveryStatus
from isthmus.webhooks.delivery_log import DeliveryLogService

router = APIRouter(prefix="/api/v1/webhooks", tags=["webhook deliveries"])


def get_log(hub: HubDep) -> DeliveryLogService:
    # A few attributes over the hub's store: cheaper to build per request than to keep.
    return DeliveryLogService(hub.store)


LogDep = Annotated[DeliveryLogService, Depends(get_log)]


@router.get("/deliveries/{delivery_id}", summary="A delivery with its event and every attempt")
async def get_delivery(delivery_id: str, log: LogDep, actor: Reader) -> DeliveryDetailOut:
    return DeliveryDetailOut.of_detail(await log.get(actor.tenant_id, delivery_id))


@router.post(
    "/deliveries/{delivery_id}/retry",
    status_code=202,
    summary="Send a delivery again (409 while it is pending)",
)
async def retry_delivery(delivery_id: str, log: LogDep, actor: Writer) -> DeliveryOut:
    return DeliveryOut.of(await log.retry(actor, delivery_id))


@router.get("/{webhook_id}/deliveries", summary="A webhook's deliveries, newest first")
async def list_deliveries(
    webhook_id: str,
    log: LogDep,
    actor: Reader,
    status: Annotated[DeliveryStatus | None, Query(description="Only this status.")] = None,
    event_type: Annotated[
        str | None,
        Query(alias="eventType", max_length=100, description="Only events of this type."),
    ] = None,
    cursor: CursorQ = None,
    limit: LimitQ = DEFAULT_LIMIT,
) -> PageOut[DeliveryOut]:
    page = await log.list(
        actor.tenant_id,
        webhook_id,
        status=status,
        event_type=event_type,
        cursor=cursor,
        limit=limit,
    )
    return PageOut(data=[DeliveryOut.of(d) for d in page.items], next_cursor=page.next_cursor)


@router.post(
    "/{webhook_id}/recover",
    status_code=202,
    summary="Send again every failed delivery of a time window",
)
async def recover(webhook_id: str, body: RecoverIn, log: LogDep, actor: Writer) -> RecoverOut:
    since = utc_instant("since", body.since)
    until = utc_instant("until", body.until)
    assert since is not None  # required by the body
    return RecoverOut.of(await log.recover(actor, webhook_id, since=since, until=until))
