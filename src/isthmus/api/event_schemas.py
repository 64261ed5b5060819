"""Bodies of ``/api/v1/events``: publish, and the event log."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import Field, StrictStr

from isthmus.api.delivery_schemas import DeliveryOut
from isthmus.api.schemas import Body, Out
from isthmus.store.delivery_log import DeliveryStatus, EventRow
from isthmus.webhooks.event_log import EventDetail, EventSummary
from isthmus.webhooks.publish import MAX_IDEMPOTENCY_KEY, PublishResult


class EventIn(Body):
    type: StrictStr = Field(min_length=1, max_length=100, examples=["contact.created"])
    data: Any = Field(description="Any JSON; checked against the type's schema when it has one.")
    idempotency_key: StrictStr | None = Field(
        None,
        min_length=1,
        max_length=MAX_IDEMPOTENCY_KEY,
        description="The same key within 24 h returns the first event (another payload: 422).",
    )


class EventAccepted(Out):
    id: str
    deliveries: int = Field(description="Deliveries made now (0 for a duplicate).")
    duplicate: bool

    @classmethod
    def of(cls, result: PublishResult) -> EventAccepted:
        return cls(id=result.event_id, deliveries=result.deliveries, duplicate=result.duplicate)


class DeliveryCounts(Out):
    """How many of the event's deliveries are in each status."""

    pending: int = 0
    delivered: int = 0
    failed: int = 0
    cancelled: int = 0

    @classmethod
    def of(cls, counts: Mapping[DeliveryStatus, int]) -> DeliveryCounts:
        return cls(**{str(status): n for status, n in counts.items()})


class EventSummaryOut(Out):
    id: str
    type: str
    data: Any
    idempotency_key: str | None
    created_at: datetime
    delivery_counts: DeliveryCounts = Field(
        description="Its deliveries by status: one per subscription it matched when published."
    )

    @classmethod
    def of(cls, event: EventRow, counts: Mapping[DeliveryStatus, int]) -> EventSummaryOut:
        return cls(
            id=event.id,
            type=event.type,
            data=event.data,
            idempotency_key=event.idempotency_key,
            created_at=event.created_at,
            delivery_counts=DeliveryCounts.of(counts),
        )

    @classmethod
    def of_summary(cls, summary: EventSummary) -> EventSummaryOut:
        return cls.of(summary.event, summary.deliveries)


class EventDetailOut(EventSummaryOut):
    deliveries: list[DeliveryOut] = Field(
        description="Every delivery, oldest first; each one's attempts are at "
        "`GET /api/v1/webhooks/deliveries/{deliveryId}`."
    )

    @classmethod
    def of_detail(cls, detail: EventDetail) -> EventDetailOut:
        counts = Counter(d.status for d in detail.deliveries)
        base = EventSummaryOut.of(detail.event, counts).model_dump()
        return cls(**base, deliveries=[DeliveryOut.of(d) for d in detail.deliveries])
