"""/api/v1/webhooks: subscriptions; thin: parse, call the service, shape the answer."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from isthmus.api.deps import CursorQ, HubDep, LimitQ, Reader, Writer
from isthmus.api.schemas import (
    PageOut,
    RotateIn,
    WebhookCreate,
    WebhookOut,
    WebhookPatch,
    WebhookTestOut,
    WebhookWithSecret,
)
from isthmus.domain.pagination import DEFAULT_LIMIT
from isthmus.domain.webhooks import DEFAULT_GRACE_HOURS, MAX_GRACE_HOURS, SubscriptionStatus

router = APIRouter(prefix="/api/v1/webhooks", tags=["webhooks"])


@router.post(
    "", status_code=201, summary="Create a subscription; its signing secret is shown this once"
)
async def create(body: WebhookCreate, hub: HubDep, actor: Writer) -> WebhookWithSecret:
    issued = await hub.webhooks.create(
        actor,
        name=body.name,
        url=body.url,
        events=list(body.events),
        is_active=body.is_active,
        description=body.description,
        headers=dict(body.headers),
        rate_limit_per_second=body.rate_limit_per_second,
        max_concurrency=body.max_concurrency,
        timeout_seconds=body.timeout_seconds,
        retry_schedule=body.retry_schedule,
    )
    return WebhookWithSecret.of(issued.subscription, secret=issued.secret)


@router.get("", summary="List subscriptions")
async def list_webhooks(
    hub: HubDep,
    actor: Reader,
    status: Annotated[SubscriptionStatus | None, Query(description="Only this status.")] = None,
    is_active: Annotated[
        bool | None, Query(alias="isActive", description="Only active (true) or paused (false).")
    ] = None,
    cursor: CursorQ = None,
    limit: LimitQ = DEFAULT_LIMIT,
) -> PageOut[WebhookOut]:
    page = await hub.webhooks.list(
        actor.tenant_id, status=status, is_active=is_active, cursor=cursor, limit=limit
    )
    return PageOut(data=[WebhookOut.of(s) for s in page.items], next_cursor=page.next_cursor)


@router.get("/{webhook_id}", summary="Get a subscription")
async def get(webhook_id: str, hub: HubDep, actor: Reader) -> WebhookOut:
    return WebhookOut.of(await hub.webhooks.get(actor.tenant_id, webhook_id))


@router.patch("/{webhook_id}", summary="Change a subscription")
async def patch(webhook_id: str, body: WebhookPatch, hub: HubDep, actor: Writer) -> WebhookOut:
    return WebhookOut.of(await hub.webhooks.update(actor, webhook_id, body.changes()))


@router.delete("/{webhook_id}", status_code=204, summary="Delete a subscription")
async def delete(webhook_id: str, hub: HubDep, actor: Writer) -> Response:
    await hub.webhooks.delete(actor, webhook_id)
    return Response(status_code=204)


@router.post(
    "/{webhook_id}/secret/rotate",
    summary="Rotate the signing secret; the old one keeps signing for a grace period",
)
async def rotate_secret(
    webhook_id: str,
    hub: HubDep,
    actor: Writer,
    body: RotateIn | None = None,
    grace_hours: Annotated[
        int | None,
        Query(alias="graceHours", ge=0, le=MAX_GRACE_HOURS, description="Or in the body."),
    ] = None,
) -> WebhookWithSecret:
    # The body's graceHours wins over the query's; neither means the default.
    chosen = body.grace_hours if body and body.grace_hours is not None else grace_hours
    grace = DEFAULT_GRACE_HOURS if chosen is None else chosen
    issued = await hub.webhooks.rotate_secret(actor, webhook_id, grace_hours=grace)
    return WebhookWithSecret.of(issued.subscription, secret=issued.secret)


@router.post(
    "/{webhook_id}/test",
    summary="Send a signed webhook.test event now and report how the endpoint answered",
)
async def send_test(webhook_id: str, hub: HubDep, actor: Writer) -> WebhookTestOut:
    return WebhookTestOut.of(await hub.webhooks.send_test(actor.tenant_id, webhook_id))
