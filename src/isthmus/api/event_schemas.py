"""Bodies of ``POST /api/v1/events``."""

from __future__ import annotations

from typing import Any

from pydantic import Field, StrictStr

from isthmus.api.schemas import Body, Out
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
