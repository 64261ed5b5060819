"""The event log: what a tenant published, newest first, and where each event went.

Events are kept as long as retention keeps them (``ISTHMUS_WEBHOOK_RETENTION_DAYS``, and
while a delivery still refers to one); their deliveries, with every attempt, are in the
delivery log.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from isthmus.domain.pagination import DEFAULT_LIMIT, decode_cursor
from isthmus.domain.records import Page
from isthmus.domain.webhooks import WILDCARD, is_event_type_name, is_wildcard
from isthmus.errors import InvalidInput, NotFound
from isthmus.store import delivery_log as repo
from isthmus.store.db import Store
from isthmus.store.delivery_log import DeliveryRow, DeliveryStatus, EventRow

EVENT = "event"


@dataclass(frozen=True)
class EventSummary:
    """An event and how many of its deliveries are in each status."""

    event: EventRow
    deliveries: dict[DeliveryStatus, int]


@dataclass(frozen=True)
class EventDetail:
    """An event and every delivery made of it, oldest first."""

    event: EventRow
    deliveries: list[DeliveryRow]


def type_filter(value: str | None) -> tuple[str | None, str | None]:
    """(exact type, type prefix) for a ``type`` filter: a name, ``prefix.*`` or ``*``, as
    subscriptions take them."""
    if value is None or value == WILDCARD:
        return None, None
    if is_wildcard(value):
        return None, value[:-1]  # "contact.*" -> "contact.": not "contacts.created"
    if is_event_type_name(value):
        return value, None
    raise InvalidInput.field(
        "type", f"{value!r} is neither an event type (contact.created) nor a wildcard (contact.*)"
    )


class EventLogService:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def list(
        self,
        tenant_id: str,
        *,
        event_type: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        cursor: str | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> Page[EventSummary]:
        """The tenant's events, newest first, created in [since, until)."""
        exact, prefix = type_filter(event_type)
        if since is not None and until is not None and since >= until:
            raise InvalidInput.field("until", "must be after since")
        async with self.store.read() as conn:
            page = await repo.query_events(
                conn,
                tenant_id,
                event_type=exact,
                type_prefix=prefix,
                since=since,
                until=until,
                before=decode_cursor(cursor),
                limit=limit,
            )
            ids = [e.id for e in page.items]
            counts = await repo.delivery_counts(conn, tenant_id, ids) if ids else {}
        summaries = [EventSummary(e, counts.get(e.id, {})) for e in page.items]
        return Page(summaries, page.next_cursor)

    async def get(self, tenant_id: str, event_id: str) -> EventDetail:
        async with self.store.read() as conn:
            found = await repo.event(conn, tenant_id, event_id)
            if found is None:
                raise NotFound.of(EVENT, event_id)
            return EventDetail(found, await repo.event_deliveries(conn, tenant_id, event_id))
