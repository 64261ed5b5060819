"""Bodies of the delivery log routes (``/api/v1/webhooks/.../deliveries``, retry, recover)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from isthmus.api.schemas import Body, Out
from isthmus.store.delivery_log import AttemptRow, DeliveryRow, DeliveryStatus, EventRow
from isthmus.webhooks.delivery_log import DeliveryDetail, Recovered


class DeliveryOut(Out):
    id: str
    subscription_id: str = Field(description="The webhook this delivery goes to.")
    event_id: str
    event_type: str
    status: DeliveryStatus = Field(
        description="pending (queued or waiting for a retry), delivered, failed (attempts "
        "spent; can be sent again), cancelled (webhook deleted or disabled)."
    )
    attempts: int = Field(description="How many times it was tried.")
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, d: DeliveryRow) -> DeliveryOut:
        return cls(
            id=d.id,
            subscription_id=d.subscription_id,
            event_id=d.event_id,
            event_type=d.event_type,
            status=d.status,
            attempts=d.attempts,
            next_attempt_at=d.next_attempt_at,
            last_status_code=d.last_status_code,
            last_error=d.last_error,
            delivered_at=d.delivered_at,
            created_at=d.created_at,
            updated_at=d.updated_at,
        )


class EventOut(Out):
    id: str
    type: str
    data: Any
    created_at: datetime

    @classmethod
    def of(cls, e: EventRow) -> EventOut:
        return cls(id=e.id, type=e.type, data=e.data, created_at=e.created_at)


class AttemptOut(Out):
    attempted_at: datetime
    status_code: int | None = Field(description="The endpoint's status, if it answered.")
    response_body: str | None = Field(description="What it answered, cut at 4 KB.")
    latency_ms: float | None
    error_class: str | None = Field(
        description="Why it failed: blocked, refused, timeout, dns, tls, network, too_large, "
        "unavailable, ..."
    )
    error_message: str | None

    @classmethod
    def of(cls, a: AttemptRow) -> AttemptOut:
        return cls(
            attempted_at=a.attempted_at,
            status_code=a.status_code,
            response_body=a.response_body,
            latency_ms=a.latency_ms,
            error_class=a.error_class,
            error_message=a.error_message,
        )


class DeliveryDetailOut(DeliveryOut):
    event: EventOut | None = Field(
        description="The event and its payload; null once retention has removed it."
    )
    attempt_log: list[AttemptOut] = Field(description="Every attempt, oldest first.")

    @classmethod
    def of_detail(cls, detail: DeliveryDetail) -> DeliveryDetailOut:
        base = DeliveryOut.of(detail.delivery).model_dump()
        return cls(
            **base,
            event=EventOut.of(detail.event) if detail.event else None,
            attempt_log=[AttemptOut.of(a) for a in detail.attempts],
        )


class RecoverIn(Body):
    since: datetime = Field(
        description="Failed deliveries created at or after this time (with a time zone) are "
        "queued again.",
        examples=["2026-01-31T00:00:00Z"],
    )
    until: datetime | None = Field(
        None, description="...and before this time (with a time zone); default: now."
    )


class RecoverOut(Out):
    queued: int = Field(description="How many failed deliveries were queued again.")
    more: bool = Field(
        description="The batch limit (10,000) was reached: failed deliveries of the window "
        "may remain; send the same request again for the next ones."
    )

    @classmethod
    def of(cls, recovered: Recovered) -> RecoverOut:
        return cls(queued=recovered.queued, more=recovered.more)
