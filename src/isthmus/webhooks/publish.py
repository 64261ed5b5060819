"""Publishing events: the event rows, one delivery per receiving subscription, and their
delivery jobs, all in the caller's transaction (no dual write: all or nothing).

``publish`` (one event) and ``publish_many`` (a batch, in a constant number of statements)
are the one way in: the REST API (``PublishService``), sync runs and inbound webhooks all
call them inside their own transactions.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from jsonschema.validators import Draft202012Validator, validator_for
from sqlalchemy.ext.asyncio import AsyncConnection

from isthmus.domain.auth import Actor
from isthmus.domain.ids import new_ids
from isthmus.domain.webhooks import PRELOADED_EVENT_TYPES, matches
from isthmus.errors import Conflict, FieldError, InvalidInput, PayloadTooLarge
from isthmus.store import events as events_repo
from isthmus.store.db import Store
from isthmus.store.events import DeliveryRow, EventRow, Receiver
from isthmus.store.types import utcnow
from isthmus.webhooks.event_types import EventTypeService
from isthmus.webhooks.retry import first_attempt_at
from isthmus.webhooks.signing import data_json, envelope

#: The job kind of one delivery attempt; its payload is ``{"deliveryId": ...}`` and its
#: group the subscription id.
DELIVER = "webhook.deliver"
DEFAULT_MAX_PAYLOAD_BYTES = 256 * 1024
IDEMPOTENCY_WINDOW = timedelta(hours=24)
MAX_IDEMPOTENCY_KEY = 200


# Named tuples, not frozen dataclasses: a sync makes one of each per contact, and a frozen
# dataclass sets each field through ``object.__setattr__`` (twice the cost).
class PublishResult(NamedTuple):
    """The event's id, how many deliveries it made, and whether it is an earlier event
    returned again for a repeated idempotency key (then no delivery was made now)."""

    event_id: str
    deliveries: int
    duplicate: bool


class NewEvent(NamedTuple):
    """One event for ``publish_many``. A caller that has the data serialised already, as
    ``data_json`` writes it, passes that ``text`` instead of ``data`` (a sync publishes
    thousands of events a second; ``data`` is then parsed only for a type's JSON Schema)."""

    type: str
    data: Any = None
    idempotency_key: str | None = None
    text: str | None = None

    def value(self) -> Any:
        return self.data if self.text is None else json.loads(self.text)


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
    results = await publish_many(
        conn,
        tenant_id,
        [NewEvent(event_type, data, idempotency_key)],
        now,
        max_payload_bytes=max_payload_bytes,
    )
    return results[0]


async def publish_many(
    conn: AsyncConnection,
    tenant_id: str,
    new_events: Sequence[NewEvent],
    now: datetime | None = None,
    *,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
) -> list[PublishResult]:
    """``publish`` for many events of one tenant, in the caller's transaction: for a caller
    that publishes a page of events in the transaction that makes them.

    The same rules as ``publish``, checked for every event before anything is written; the
    first failure raises, its fields prefixed ``events[i].`` when there is more than one
    event. A key given twice in one call makes one event, the second a duplicate of the
    first. One read of the types and subscriptions, one of the earlier events when keys
    are given, one write: however many events. Returns one result per event, in order.
    """
    now = now or utcnow()
    new_events = list(new_events)
    if not new_events:
        return []

    def prefix(i: int) -> str:
        return f"events[{i}]." if len(new_events) > 1 else ""

    schemas, receivers = await _reads(conn, tenant_id, new_events, prefix)
    overheads = {t: _envelope_bytes(t, now, tenant_id) for t in {e.type for e in new_events}}
    checked = [
        _checked(e, schemas[e.type], overheads[e.type], max_payload_bytes, prefix, i)
        for i, e in enumerate(new_events)
    ]
    digests = [digest for digest, _text in checked]

    # Who each event is: a new row, or a duplicate of an earlier event (stored, or one of
    # this call: ``same_as``).
    keyed = {e.idempotency_key for e in new_events if e.idempotency_key is not None}
    earlier = await events_repo.by_keys(conn, tenant_id, keyed) if keyed else {}
    results: list[PublishResult | None] = [None] * len(new_events)
    same_as: dict[int, int] = {}
    first_with_key: dict[str, int] = {}
    expired: list[str] = []
    rows: list[EventRow] = []
    row_of: dict[int, EventRow] = {}
    event_ids = new_ids("evt", len(new_events))
    for i, (event, digest) in enumerate(zip(new_events, digests, strict=True)):
        key = event.idempotency_key
        if key is not None and key in first_with_key:
            j = first_with_key[key]
            _same(digests[j], digest, "an earlier event of this call", prefix(i))
            same_as[i] = j
            continue
        if key is not None:
            first_with_key[key] = i
            found = earlier.get(key)
            if found is not None and found.created_at <= now - IDEMPOTENCY_WINDOW:
                expired.append(found.id)  # past the window the key is given up
            elif found is not None:
                _same(found.payload_hash, digest, f"event {found.id}", prefix(i))
                results[i] = PublishResult(found.id, 0, duplicate=True)
                continue
        row_of[i] = EventRow(event_ids[i], event.type, key, digest, checked[i][1])
        rows.append(row_of[i])
    if expired:
        await events_repo.release_keys(conn, expired)

    made: dict[str, int] = {}
    if rows:
        planned = _fan_out(receivers, rows, now, made)
        written = await events_repo.insert_published(
            conn,
            tenant_id=tenant_id,
            kind=DELIVER,
            now=now,
            new_events=rows,
            new_deliveries=planned,
        )
        # A concurrent publish that committed the same key first: its event is the result.
        lost = [row for row in rows if row.id not in written]
        raced = await events_repo.by_keys(
            conn, tenant_id, [row.idempotency_key for row in lost if row.idempotency_key]
        )
        for i, row in row_of.items():
            if row.id in written:
                results[i] = PublishResult(row.id, made[row.id], duplicate=False)
                continue
            found = raced.get(row.idempotency_key or "")
            if found is None:
                raise Conflict("an idempotency key was taken and released again meanwhile")
            _same(found.payload_hash, row.payload_hash, f"event {found.id}", prefix(i))
            results[i] = PublishResult(found.id, 0, duplicate=True)
    for i, j in same_as.items():
        first = results[j]
        assert first is not None
        results[i] = PublishResult(first.event_id, 0, duplicate=True)
    return [r for r in results if r is not None]


async def _reads(
    conn: AsyncConnection,
    tenant_id: str,
    new_events: Sequence[NewEvent],
    prefix: Callable[[int], str],
) -> tuple[dict[str, dict[str, Any] | None], list[Receiver]]:
    """Each named type's schema (None: none) and the tenant's receiving subscriptions;
    InvalidInput for the first event whose type is unknown or archived. Preloaded types
    are seeded on demand, and only a missing one costs the seeding write."""
    names = {e.type for e in new_events}
    types, receivers = await events_repo.publishing_reads(conn, tenant_id, names)
    if not names <= types.keys() and names & PRELOADED_EVENT_TYPES.keys():
        await EventTypeService.seed_in(conn, tenant_id)
        types, receivers = await events_repo.publishing_reads(conn, tenant_id, names)
    for i, event in enumerate(new_events):
        found = types.get(event.type)
        if found is None:
            raise InvalidInput.field(f"{prefix(i)}type", f"unknown event type {event.type!r}")
        if found.archived:
            raise InvalidInput.field(f"{prefix(i)}type", f"event type {event.type!r} is archived")
    return {name: state.schema for name, state in types.items()}, receivers


def _envelope_bytes(event_type: str, now: datetime, tenant_id: str) -> int:
    """The size of a delivery body of this type, time and tenant, less its data's."""
    return len(envelope(event_type, now, tenant_id, "").encode())


def _checked(
    event: NewEvent,
    schema: dict[str, Any] | None,
    envelope_bytes: int,
    max_payload_bytes: int,
    prefix: Callable[[int], str],
    index: int,
) -> tuple[str, str]:
    """The event's payload hash and its data serialised, once its data, size, schema and
    key pass (``envelope_bytes``: the body's size without the data; ``prefix(index)``
    names the event in an error's fields). Only a key's repeat is ever compared: an event
    without one gets no hash (a sync publishes thousands)."""
    try:
        text = data_json(event.data) if event.text is None else event.text  # InvalidInput
        size = envelope_bytes + (len(text) if text.isascii() else len(text.encode()))
        if size > max_payload_bytes:
            raise PayloadTooLarge(
                f"the event's payload is {size} bytes, over the {max_payload_bytes}-byte cap",
                [FieldError("data", f"at most {max_payload_bytes} bytes serialised")],
            )
        if schema is not None:
            _check_schema(schema, event.value())
        key = event.idempotency_key
        if key is not None and not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY:
            raise InvalidInput.field(
                "idempotencyKey", f"between 1 and {MAX_IDEMPOTENCY_KEY} characters"
            )
    except InvalidInput as exc:
        where = prefix(index)  # made only for an error: a sync publishes thousands
        if not where:
            raise
        fields = [FieldError(where + e.field, e.message) for e in exc.errors]
        raise type(exc)(f"{where.rstrip('.')}: {exc}", fields) from exc
    return (_hash(event.type, text) if event.idempotency_key is not None else ""), text


def _same(stored_hash: str, digest: str, holder: str, prefix: str) -> None:
    """InvalidInput unless a repeated key comes with the same type and data."""
    if stored_hash != digest:
        raise InvalidInput.field(
            f"{prefix}idempotencyKey",
            f"already used within 24 h by {holder} with another type or data",
        )


def _fan_out(
    receivers: Sequence[Receiver], rows: Sequence[EventRow], now: datetime, made: dict[str, int]
) -> list[DeliveryRow]:
    """One delivery per event and receiving subscription whose filters match, due at the
    first entry of its retry schedule; ``made`` gets each event's count."""
    by_type: dict[str, list[tuple[str, datetime]]] = {}
    planned: list[DeliveryRow] = []
    for row in rows:
        targets = by_type.get(row.type)
        if targets is None:
            targets = by_type[row.type] = [
                (sub.id, first_attempt_at(sub.retry_schedule, now))
                for sub in receivers
                if matches(sub.events, row.type)
            ]
        planned.extend(DeliveryRow(row.id, row.type, sub_id, due) for sub_id, due in targets)
        made[row.id] = len(targets)
    return planned


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


def _hash(event_type: str, text: str) -> str:
    """Over ``[type, data]`` serialised compact with sorted keys (``text`` is the data so
    serialised, by ``data_json``)."""
    canonical = f"[{json.dumps(event_type, ensure_ascii=False)},{text}]"
    return hashlib.sha256(canonical.encode()).hexdigest()


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
