"""The delivery log: what happened to each event sent to a subscription, and the two ways to
send again, one delivery (retry) or every failed one of a time window (recover).

Queueing again makes a delivery ``pending`` and writes its ``webhook.deliver`` job in the
same transaction; the delivery handler then sends it as any other. A delivery that is
already pending has a job (or a retry) under way and is refused, so none is sent twice at
once. Both are refused while the subscription is disabled or paused: the handler would
only cancel them again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from isthmus.domain.auth import Actor
from isthmus.domain.pagination import DEFAULT_LIMIT, decode_cursor
from isthmus.domain.records import Page, WebhookSubscription
from isthmus.domain.webhooks import SubscriptionStatus
from isthmus.errors import Conflict, InvalidInput, NotFound
from isthmus.services.audit import record
from isthmus.store import delivery_log as repo
from isthmus.store import subscriptions as subscriptions_repo
from isthmus.store.db import Store
from isthmus.store.delivery_log import AttemptRow, DeliveryRow, DeliveryStatus, EventRow
from isthmus.store.types import utcnow

#: Recover queues at most this many deliveries per call; calling again takes the next ones.
RECOVER_BATCH = 10_000
#: A response body is shown cut to this many bytes of UTF-8.
MAX_RESPONSE_BODY = 4096

DELIVERY = "delivery"
WEBHOOK = "webhook"


@dataclass(frozen=True)
class DeliveryDetail:
    """One delivery, the event it carries, and every attempt, oldest first."""

    delivery: DeliveryRow
    event: EventRow | None
    attempts: list[AttemptRow]


@dataclass(frozen=True)
class Recovered:
    """``queued`` deliveries were queued again; ``more`` says the batch limit was reached and
    failed deliveries of the window remain (call again)."""

    queued: int
    more: bool


def cut_body(body: str | None, limit: int = MAX_RESPONSE_BODY) -> str | None:
    """``body`` cut to ``limit`` bytes of UTF-8, never inside a character."""
    if body is None:
        return None
    raw = body.encode()
    return body if len(raw) <= limit else raw[:limit].decode(errors="ignore")


class DeliveryLogService:
    def __init__(self, store: Store, *, recover_batch: int = RECOVER_BATCH) -> None:
        self.store = store
        self.recover_batch = recover_batch

    @staticmethod
    async def _subscription(
        conn: AsyncConnection, tenant_id: str, sub_id: str, *, for_update: bool = False
    ) -> WebhookSubscription:
        found = await subscriptions_repo.get(conn, tenant_id, sub_id, for_update=for_update)
        if found is None:
            raise NotFound.of(WEBHOOK, sub_id)
        return found

    @staticmethod
    def _check_enabled(sub: WebhookSubscription) -> None:
        if sub.status is SubscriptionStatus.DISABLED:
            why = f" ({sub.disabled_reason})" if sub.disabled_reason else ""
            raise Conflict(
                f"webhook {sub.id!r} is disabled{why}; re-enable it first "
                "(PATCH it with isActive: true), then send again"
            )
        if not sub.is_active:
            raise Conflict(
                f"webhook {sub.id!r} is paused (isActive is false); re-enable it first "
                "(PATCH it with isActive: true), then send again"
            )

    # -- reads -----------------------------------------------------------------------------

    async def list(
        self,
        tenant_id: str,
        sub_id: str,
        *,
        status: DeliveryStatus | None = None,
        event_type: str | None = None,
        cursor: str | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> Page[DeliveryRow]:
        """A subscription's deliveries, newest first."""
        async with self.store.read() as conn:
            await self._subscription(conn, tenant_id, sub_id)
            return await repo.query(
                conn,
                tenant_id,
                sub_id,
                status=str(status) if status else None,
                event_type=event_type,
                before=decode_cursor(cursor),
                limit=limit,
            )

    async def get(self, tenant_id: str, delivery_id: str) -> DeliveryDetail:
        """A delivery with its event and attempts; response bodies cut to 4 KB."""
        async with self.store.read() as conn:
            delivery = await repo.get(conn, tenant_id, delivery_id)
            if delivery is None:
                raise NotFound.of(DELIVERY, delivery_id)
            event = await repo.event(conn, tenant_id, delivery.event_id)
            attempts = await repo.attempts(conn, tenant_id, delivery_id)
        shown = [
            AttemptRow(**{**a.__dict__, "response_body": cut_body(a.response_body)})
            for a in attempts
        ]
        return DeliveryDetail(delivery, event, shown)

    # -- send again ------------------------------------------------------------------------

    async def retry(
        self, actor: Actor, delivery_id: str, *, now: datetime | None = None
    ) -> DeliveryRow:
        """Queue one delivery again (delivered, failed or cancelled ones alike): it becomes
        pending and its job is due at once. Conflict when it is pending already, or when
        its subscription is gone, disabled or paused."""
        now = now or utcnow()
        async with self.store.transaction() as conn:
            current = await repo.get(conn, actor.tenant_id, delivery_id)
            if current is None:
                raise NotFound.of(DELIVERY, delivery_id)
            # The subscription is locked first, as its own changes and deletes lock it, so a
            # retry and a delete of the subscription happen one after the other.
            sub = await subscriptions_repo.get(
                conn, actor.tenant_id, current.subscription_id, for_update=True
            )
            if sub is None:
                raise Conflict(
                    f"delivery {delivery_id!r} cannot be sent again: its webhook "
                    f"{current.subscription_id!r} was deleted"
                )
            self._check_enabled(sub)
            updated = await repo.requeue(conn, actor.tenant_id, delivery_id, now=now)
            if updated is None:
                raise Conflict(
                    f"delivery {delivery_id!r} is already pending: it is queued or waiting "
                    "for its next attempt"
                )
            diff = {
                "webhookId": sub.id,
                "eventId": updated.event_id,
                "status": {"from": str(current.status), "to": str(updated.status)},
            }
            await record(conn, actor, "webhook.delivery.retry", DELIVERY, delivery_id, diff)
        return updated

    async def recover(
        self,
        actor: Actor,
        sub_id: str,
        *,
        since: datetime,
        until: datetime | None = None,
        now: datetime | None = None,
    ) -> Recovered:
        """Queue again every failed delivery of the subscription created in [since, until)
        (``until`` defaults to now), oldest first, up to the batch limit. Times must be
        timezone-aware."""
        now = now or utcnow()
        until = until or now
        for field, value in (("since", since), ("until", until)):
            if value.tzinfo is None:
                raise InvalidInput.field(field, "needs a time zone, e.g. 2026-01-31T12:00:00Z")
        if since >= until:
            raise InvalidInput.field("until", "must be after since")
        async with self.store.transaction() as conn:
            sub = await self._subscription(conn, actor.tenant_id, sub_id, for_update=True)
            self._check_enabled(sub)
            ids = await repo.requeue_failed(
                conn,
                actor.tenant_id,
                sub_id,
                since=since,
                until=until,
                limit=self.recover_batch,
                now=now,
            )
            diff = {
                "since": since.isoformat(),
                "until": until.isoformat(),
                "queued": len(ids),
            }
            await record(conn, actor, "webhook.recover", WEBHOOK, sub_id, diff)
        return Recovered(queued=len(ids), more=len(ids) == self.recover_batch)
