"""Publishing an event: the event row, one delivery per receiving subscription, and their
delivery jobs, all in the caller's transaction (no dual write: all or nothing).

``publish`` is the one way in: the REST API (``PublishService``), sync runs and inbound
webhooks all call it inside their own transactions.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from jsonschema.validators import Draft202012Validator, validator_for
from sqlalchemy.ext.asyncio import AsyncConnection

from isthmus.domain.auth import Actor
from isthmus.domain.ids import new_id
from isthmus.domain.jobs import NewJob
from isthmus.domain.webhooks import PRELOADED_EVENT_TYPES, matches
from isthmus.errors import FieldError, InvalidInput, PayloadTooLarge
from isthmus.store import deliveries as deliveries_repo
from isthmus.store import event_types as event_types_repo
from isthmus.store import events as events_repo
from isthmus.store import queue
from isthmus.store import subscriptions as subscriptions_repo
from isthmus.store.db import Store
from isthmus.store.types import utcnow
from isthmus.webhooks.event_types import EventTypeService
from isthmus.webhooks.retry import first_attempt_at
from isthmus.webhooks.signing import payload

#: The job kind of one delivery attempt; its payload is ``{"deliveryId": ...}`` and its
#: group the subscription id.
DELIVER = "webhook.deliver"
DEFAULT_MAX_PAYLOAD_BYTES = 256 * 1024
IDEMPOTENCY_WINDOW = timedelta(hours=24)
MAX_IDEMPOTENCY_KEY = 200


@dataclass(frozen=True)
class PublishResult:
    """The event's id, how many deliveries it made, and whether it is an earlier event
    returned again for a repeated idempotency key (then no delivery was made now)."""

    event_id: str
    deliveries: int
    duplicate: bool


async def publish(
    conn: AsyncConnection,
    *,
    tenant_id: str,
    event_type: str,
    data: Any,
    idempotency_key: str | None = None,
    now: datetime | None = None,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
) -> PublishResult:
    """Publish ``data`` as an event of ``event_type`` in the caller's transaction.

    Checks, each an ``InvalidInput`` (422) naming the field: the type exists for the tenant
    and is not archived (preloaded types are seeded on demand); ``data`` is JSON and fits the
    type's JSON Schema when it has one; an idempotency key repeated within 24 h with another
    type or data. A delivery body over ``max_payload_bytes`` raises ``PayloadTooLarge`` (413).
    The same key within 24 h with the same type and data returns the first event
    (``duplicate``, ``deliveries`` 0). Each subscription of the tenant that is switched on,
    not disabled and whose filters match gets one delivery, its job due at the first entry
    of its retry schedule.
    """
    now = now or utcnow()
    schema = await _live_schema(conn, tenant_id, event_type)
    body = payload(event_type, now, tenant_id, data)  # InvalidInput if data is not JSON
    if len(body) > max_payload_bytes:
        raise PayloadTooLarge(
            f"the event's payload is {len(body)} bytes, over the {max_payload_bytes}-byte cap",
            [FieldError("data", f"at most {max_payload_bytes} bytes serialised")],
        )
    if schema is not None:
        _check_schema(schema, data)
    digest = _hash(event_type, data)
    if idempotency_key is not None:
        if not 1 <= len(idempotency_key) <= MAX_IDEMPOTENCY_KEY:
            raise InvalidInput.field(
                "idempotencyKey", f"between 1 and {MAX_IDEMPOTENCY_KEY} characters"
            )
        earlier = await _earlier(conn, tenant_id, idempotency_key, digest, now)
        if earlier is not None:
            return earlier

    event_id = new_id("evt")
    row = {
        "id": event_id,
        "tenant_id": tenant_id,
        "type": event_type,
        "data": data,
        "idempotency_key": idempotency_key,
        "payload_hash": digest,
        "created_at": now,
    }
    try:
        await events_repo.insert(conn, row)
    except events_repo.DuplicateKey:
        # A concurrent publish with the same key committed first: its result is ours.
        assert idempotency_key is not None
        earlier = await _earlier(conn, tenant_id, idempotency_key, digest, now)
        if earlier is None:
            raise
        return earlier

    receivers = [
        sub
        for sub in await subscriptions_repo.receiving(conn, tenant_id)
        if matches(sub.events, event_type)
    ]
    if conn.dialect.name == "postgresql":
        # The same rows as below, in one statement.
        planned = [
            (new_id("dlv"), sub.id, first_attempt_at(sub.retry_schedule, now)) for sub in receivers
        ]
        await deliveries_repo.insert_with_jobs(
            conn,
            tenant_id=tenant_id,
            event_id=event_id,
            event_type=event_type,
            kind=DELIVER,
            now=now,
            rows=planned,
        )
        return PublishResult(event_id, len(planned), duplicate=False)
    rows: list[dict[str, Any]] = []
    jobs: list[NewJob] = []
    for sub in receivers:
        delivery_id = new_id("dlv")
        due = first_attempt_at(sub.retry_schedule, now)
        rows.append(
            {
                "id": delivery_id,
                "tenant_id": tenant_id,
                "event_id": event_id,
                "subscription_id": sub.id,
                "event_type": event_type,
                "status": deliveries_repo.PENDING,
                "attempts": 0,
                "next_attempt_at": due,
                "last_status_code": None,
                "last_error": None,
                "delivered_at": None,
                "created_at": now,
                "updated_at": now,
            }
        )
        jobs.append(NewJob(DELIVER, {"deliveryId": delivery_id}, tenant_id, due, sub.id))
    await deliveries_repo.insert_many(conn, rows)
    await queue.enqueue_many(conn, jobs, now=now)
    return PublishResult(event_id, len(rows), duplicate=False)


async def _live_schema(
    conn: AsyncConnection, tenant_id: str, event_type: str
) -> dict[str, Any] | None:
    """The type's schema (None: none); InvalidInput if the type is unknown or archived."""
    found = await event_types_repo.get(conn, tenant_id, event_type)
    if found is None and event_type in PRELOADED_EVENT_TYPES:
        # Only a missing preloaded type costs the seeding write.
        await EventTypeService.seed_in(conn, tenant_id)
        found = await event_types_repo.get(conn, tenant_id, event_type)
    if found is None:
        raise InvalidInput.field("type", f"unknown event type {event_type!r}")
    if found.archived:
        raise InvalidInput.field("type", f"event type {event_type!r} is archived")
    return found.schema


def _check_schema(schema: dict[str, Any], data: Any) -> None:
    validator = validator_for(schema, default=Draft202012Validator)(schema)
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if not errors:
        return
    found = [
        FieldError(".".join(["data", *(str(p) for p in e.absolute_path)]), e.message)
        for e in errors[:20]
    ]
    detail = "; ".join(f"{e.field}: {e.message}" for e in found)
    raise InvalidInput(f"data does not match the event type's schema: {detail}", found)


def _hash(event_type: str, data: Any) -> str:
    canonical = json.dumps(
        [event_type, data], sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


async def _earlier(
    conn: AsyncConnection, tenant_id: str, key: str, digest: str, now: datetime
) -> PublishResult | None:
    """The earlier event under ``key`` if it is within the window; an expired one gives the
    key up. InvalidInput if the earlier event had another type or data."""
    found = await events_repo.by_key(conn, tenant_id, key)
    if found is None:
        return None
    if found.created_at <= now - IDEMPOTENCY_WINDOW:
        await events_repo.release_key(conn, found.id)
        return None
    if found.payload_hash != digest:
        raise InvalidInput.field(
            "idempotencyKey",
            f"already used within 24 h by event {found.id} with another type or data",
        )
    return PublishResult(found.id, 0, duplicate=True)


class PublishService:
    """Publishing for the REST API: one transaction per call, the configured payload cap."""

    def __init__(self, store: Store, *, max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES):
        self.store = store
        self.max_payload_bytes = max_payload_bytes

    async def publish(
        self, actor: Actor, *, event_type: str, data: Any, idempotency_key: str | None = None
    ) -> PublishResult:
        async with self.store.transaction() as conn:
            return await publish(
                conn,
                tenant_id=actor.tenant_id,
                event_type=event_type,
                data=data,
                idempotency_key=idempotency_key,
                max_payload_bytes=self.max_payload_bytes,
            )
