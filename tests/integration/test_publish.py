"""Publishing events: ``POST /api/v1/events``, the internal ``publish`` it calls, and
``publish_many`` for batches.

An event, its deliveries and their jobs are written in one transaction: all or nothing.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import httpx
import pytest
import sqlalchemy as sa
from api_support import assert_problem
from webhook_support import EVENT_TYPES, create_webhook

from isthmus.errors import InvalidInput, PayloadTooLarge
from isthmus.hub import Hub
from isthmus.services.access import IssuedKey
from isthmus.store import notify
from isthmus.store.tables import deliveries, events, jobs
from isthmus.webhooks.publish import DELIVER, NewEvent, PublishResult, publish, publish_many

EVENTS = "/api/v1/events"


async def counts(hub: Hub) -> tuple[int, int, int]:
    async with hub.store.read() as conn:
        found = [
            (await conn.execute(sa.select(sa.func.count()).select_from(t))).scalar_one()
            for t in (events, deliveries, jobs)
        ]
    return found[0], found[1], found[2]


async def post(api: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await api.post(EVENTS, json=body)


async def test_publish_fans_out_to_matching_active_subscriptions_only(
    api: httpx.AsyncClient, hub: Hub
) -> None:
    exact = await create_webhook(api, name="exact", events=["contact.created"])
    prefix = await create_webhook(api, name="prefix", events=["contact.*"])
    everything = await create_webhook(api, name="all", events=["*"])
    await create_webhook(api, name="other type", events=["lead.created"])
    await create_webhook(api, name="switched off", events=["*"], isActive=False)
    disabled = await create_webhook(api, name="disabled", events=["*"])
    async with hub.store.transaction() as conn:
        await conn.execute(
            sa.text("UPDATE webhook_subscriptions SET status = 'disabled' WHERE id = :id"),
            {"id": disabled["id"]},
        )

    response = await post(api, type="contact.created", data={"email": "a@example.com"})

    assert response.status_code == 202, response.text
    body = response.json()
    assert body["id"].startswith("evt_")
    assert body == {"id": body["id"], "deliveries": 3, "duplicate": False}
    async with hub.store.read() as conn:
        rows = (await conn.execute(sa.select(deliveries))).all()
        queued = (await conn.execute(sa.select(jobs))).all()
    assert {r.subscription_id for r in rows} == {exact["id"], prefix["id"], everything["id"]}
    assert all(r.status == "pending" and r.attempts == 0 for r in rows)
    assert all(r.event_id == body["id"] for r in rows)
    # One job per delivery, grouped by subscription.
    assert sorted((j.kind, j.payload["deliveryId"], j.group_key) for j in queued) == sorted(
        (DELIVER, r.id, r.subscription_id) for r in rows
    )


async def test_publish_joins_the_callers_transaction(
    api: httpx.AsyncClient, hub: Hub, admin_key: IssuedKey
) -> None:
    await create_webhook(api, events=["*"])
    tenant = admin_key.key.tenant_id

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with hub.store.transaction() as conn:
            result = await publish(conn, tenant_id=tenant, event_type="lead.created", data={})
            assert result.deliveries == 1
            raise Boom
    assert await counts(hub) == (0, 0, 0)

    async with hub.store.transaction() as conn:
        await publish(conn, tenant_id=tenant, event_type="lead.created", data={})
    assert await counts(hub) == (1, 1, 1)


async def test_the_same_idempotency_key_returns_the_first_event(
    api: httpx.AsyncClient, hub: Hub
) -> None:
    await create_webhook(api, events=["*"])
    first = await post(api, type="contact.created", data={"a": 1, "b": 2}, idempotencyKey="k1")
    # The same data with its keys in another order is the same payload.
    again = await post(api, type="contact.created", data={"b": 2, "a": 1}, idempotencyKey="k1")

    assert first.status_code == again.status_code == 202
    assert again.json() == {"id": first.json()["id"], "deliveries": 0, "duplicate": True}
    assert await counts(hub) == (1, 1, 1)

    other = await post(api, type="contact.created", data={"a": 2}, idempotencyKey="k1")
    assert_problem(other, 422, {"idempotencyKey"})
    other_type = await post(api, type="lead.created", data={"a": 1, "b": 2}, idempotencyKey="k1")
    assert_problem(other_type, 422, {"idempotencyKey"})
    fresh = await post(api, type="contact.created", data={"a": 2}, idempotencyKey="k2")
    assert fresh.json()["duplicate"] is False
    assert await counts(hub) == (2, 2, 2)


async def test_an_expired_idempotency_key_makes_a_new_event(
    api: httpx.AsyncClient, hub: Hub, admin_key: IssuedKey
) -> None:
    tenant = admin_key.key.tenant_id
    async with hub.store.transaction() as conn:
        first = await publish(
            conn, tenant_id=tenant, event_type="lead.created", data={}, idempotency_key="k"
        )
        await conn.execute(
            sa.text("UPDATE events SET created_at = created_at - interval '25 hours'")
            if conn.dialect.name == "postgresql"
            else sa.text("UPDATE events SET created_at = datetime(created_at, '-25 hours')")
        )
    async with hub.store.transaction() as conn:
        second = await publish(
            conn, tenant_id=tenant, event_type="lead.created", data={"x": 1}, idempotency_key="k"
        )
    assert second.event_id != first.event_id and not second.duplicate


async def test_data_must_match_the_event_types_schema(api: httpx.AsyncClient) -> None:
    schema = {
        "type": "object",
        "properties": {"email": {"type": "string"}},
        "required": ["email"],
    }
    created = await api.post(EVENT_TYPES, json={"name": "signup.done", "schema": schema})
    assert created.status_code == 201, created.text

    bad = await post(api, type="signup.done", data={"email": 5})
    assert_problem(bad, 422, {"data.email"})
    missing = await post(api, type="signup.done", data={})
    assert_problem(missing, 422, {"data"})
    good = await post(api, type="signup.done", data={"email": "a@example.com"})
    assert good.status_code == 202, good.text


async def test_unknown_and_archived_types_are_refused(api: httpx.AsyncClient) -> None:
    assert_problem(await post(api, type="nope.never", data={}), 422, {"type"})
    archived = await api.patch(f"{EVENT_TYPES}/lead.created", json={"archived": True})
    assert archived.status_code == 200, archived.text
    assert_problem(await post(api, type="lead.created", data={}), 422, {"type"})


async def test_a_payload_over_the_cap_is_refused_with_413(api: httpx.AsyncClient) -> None:
    big = {"blob": "x" * (256 * 1024)}
    assert_problem(await post(api, type="contact.created", data=big), 413)
    small = {"blob": "x" * (200 * 1024)}
    assert (await post(api, type="contact.created", data=small)).status_code == 202


async def test_publishing_needs_the_write_scope(
    client: httpx.AsyncClient, hub: Hub, admin_key: IssuedKey
) -> None:
    from api_support import bearer, key_for

    reader = await key_for(hub, admin_key.key.tenant_id, "read")
    response = await client.post(
        EVENTS, json={"type": "lead.created", "data": {}}, headers=bearer(reader)
    )
    assert_problem(response, 403)


# -- publish_many: a batch in the caller's transaction ---------------------------------------


async def publish_batch(
    hub: Hub, tenant: str, batch: list[NewEvent]
) -> tuple[list[PublishResult], int]:
    """``publish_many`` in a transaction of its own: its results and how many statements it
    sent to the database."""
    sent = 0

    def count(*_args: Any) -> None:
        nonlocal sent
        sent += 1

    async with hub.store.transaction() as conn:
        sa.event.listen(hub.store.engine.sync_engine, "before_cursor_execute", count)
        try:
            results = await publish_many(conn, tenant, batch)
        finally:
            sa.event.remove(hub.store.engine.sync_engine, "before_cursor_execute", count)
    return results, sent


def contact(n: int, type_: str = "contact.created", key: str | None = None) -> NewEvent:
    return NewEvent(type_, {"n": n}, key)


async def test_publish_many_writes_a_batch_with_a_constant_number_of_statements(
    api: httpx.AsyncClient, hub: Hub, admin_key: IssuedKey
) -> None:
    tenant = admin_key.key.tenant_id
    everything = await create_webhook(api, name="all", events=["*"])
    contacts = await create_webhook(api, name="contacts", events=["contact.*"])

    small = [contact(0), contact(1, "lead.created"), contact(2, "contact.updated")]
    results, few = await publish_batch(hub, tenant, small)
    assert [(r.deliveries, r.duplicate) for r in results] == [(2, False), (1, False), (2, False)]
    assert len({r.event_id for r in results}) == 3
    assert await counts(hub) == (3, 5, 5)

    large = [contact(n, "lead.created" if n % 3 else "contact.updated") for n in range(3, 33)]
    results, many = await publish_batch(hub, tenant, large)
    assert [r.deliveries for r in results] == [2 if n % 3 == 0 else 1 for n in range(3, 33)]
    assert many == few  # ten times the events, the same statements
    assert await counts(hub) == (33, 5 + 40, 5 + 40)

    async with hub.store.read() as conn:
        written = {r.id: r for r in (await conn.execute(sa.select(events))).all()}
        rows = (await conn.execute(sa.select(deliveries))).all()
        queued = (await conn.execute(sa.select(jobs))).all()
    assert [written[r.event_id].data for r in results] == [{"n": n} for n in range(3, 33)]
    by_event: dict[str, set[str]] = {}
    for d in rows:
        by_event.setdefault(d.event_id, set()).add(d.subscription_id)
    assert by_event[results[0].event_id] == {everything["id"], contacts["id"]}
    assert by_event[results[1].event_id] == {everything["id"]}
    assert sorted((j.kind, j.payload["deliveryId"], j.group_key, j.status) for j in queued) == (
        sorted((DELIVER, d.id, d.subscription_id, "queued") for d in rows)
    )


async def test_publish_many_joins_the_callers_transaction(
    api: httpx.AsyncClient, hub: Hub, admin_key: IssuedKey
) -> None:
    await create_webhook(api, events=["*"])

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with hub.store.transaction() as conn:
            results = await publish_many(conn, admin_key.key.tenant_id, [contact(1), contact(2)])
            assert [r.deliveries for r in results] == [1, 1]
            raise Boom
    assert await counts(hub) == (0, 0, 0)


async def test_publish_many_keeps_idempotency_keys_within_the_batch_and_across_calls(
    api: httpx.AsyncClient, hub: Hub, admin_key: IssuedKey
) -> None:
    tenant = admin_key.key.tenant_id
    await create_webhook(api, events=["*"])

    first, _ = await publish_batch(
        hub, tenant, [contact(1, key="k1"), contact(2, key="k2"), contact(1, key="k1"), contact(3)]
    )
    assert [(r.deliveries, r.duplicate) for r in first] == [
        (1, False),
        (1, False),
        (0, True),
        (1, False),
    ]
    assert first[2].event_id == first[0].event_id
    assert await counts(hub) == (3, 3, 3)

    again, _ = await publish_batch(hub, tenant, [contact(2, key="k2"), contact(4, key="k3")])
    assert (again[0].event_id, again[0].duplicate) == (first[1].event_id, True)
    assert (again[1].duplicate, again[1].deliveries) == (False, 1)
    assert await counts(hub) == (4, 4, 4)

    # The same key with other data, in one call or against a stored event: refused, nothing
    # written, and the field names the event.
    with pytest.raises(InvalidInput) as within:
        await publish_batch(hub, tenant, [contact(5, key="k4"), contact(6, key="k4")])
    assert [e.field for e in within.value.errors] == ["events[1].idempotencyKey"]
    with pytest.raises(InvalidInput) as stored:
        await publish_batch(hub, tenant, [contact(9, key="k1")])
    assert [e.field for e in stored.value.errors] == ["idempotencyKey"]
    assert await counts(hub) == (4, 4, 4)


async def test_publish_many_checks_every_event_before_writing_any(
    api: httpx.AsyncClient, hub: Hub, admin_key: IssuedKey
) -> None:
    tenant = admin_key.key.tenant_id
    await create_webhook(api, events=["*"])
    schema = {"type": "object", "properties": {"email": {"type": "string"}}}
    created = await api.post(EVENT_TYPES, json={"name": "signup.done", "schema": schema})
    assert created.status_code == 201, created.text
    good = NewEvent("signup.done", {"email": "a@example.com"})

    with pytest.raises(InvalidInput) as bad_schema:
        await publish_batch(hub, tenant, [good, NewEvent("signup.done", {"email": 5})])
    assert [e.field for e in bad_schema.value.errors] == ["events[1].data.email"]

    with pytest.raises(PayloadTooLarge) as too_big:
        huge = NewEvent("signup.done", {"blob": "x" * 300_000})
        await publish_batch(hub, tenant, [good, good, huge])
    assert [e.field for e in too_big.value.errors] == ["events[2].data"]

    with pytest.raises(InvalidInput) as unknown:
        await publish_batch(hub, tenant, [NewEvent("nope.never", {}), good])
    assert [e.field for e in unknown.value.errors] == ["events[0].type"]

    with pytest.raises(InvalidInput) as long_key:
        await publish_batch(hub, tenant, [good, NewEvent("signup.done", {}, "k" * 201)])
    assert [e.field for e in long_key.value.errors] == ["events[1].idempotencyKey"]
    assert await counts(hub) == (0, 0, 0)

    results, _ = await publish_batch(hub, tenant, [good, good])
    assert [r.deliveries for r in results] == [1, 1]


async def test_a_concurrent_publish_of_the_same_key_returns_the_first_event(
    api: httpx.AsyncClient, hub: Hub, admin_key: IssuedKey
) -> None:
    tenant = admin_key.key.tenant_id
    await create_webhook(api, events=["*"])
    first_written = asyncio.Event()
    release_first = asyncio.Event()

    async def first() -> PublishResult:
        async with hub.store.transaction() as conn:
            result = await publish(
                conn, tenant_id=tenant, event_type="lead.created", data={}, idempotency_key="k"
            )
            first_written.set()
            await asyncio.wait_for(release_first.wait(), 10)
        return result

    holder = asyncio.create_task(first())
    await asyncio.wait_for(first_written.wait(), 10)
    # The second publish waits for the first transaction's key (its insert on PostgreSQL, its
    # write lock on SQLite), then returns that event as the result.
    second = asyncio.create_task(
        publish_batch(hub, tenant, [NewEvent("lead.created", {}, "k"), contact(1)])
    )
    await asyncio.sleep(0.3)
    assert not second.done()
    release_first.set()
    earlier = await asyncio.wait_for(holder, 10)
    results, _ = await asyncio.wait_for(second, 10)
    assert (results[0].event_id, results[0].duplicate, results[0].deliveries) == (
        earlier.event_id,
        True,
        0,
    )
    assert (results[1].duplicate, results[1].deliveries) == (False, 1)
    assert await counts(hub) == (2, 2, 2)


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # NOTIFY is PostgreSQL's
async def test_a_publishing_transaction_wakes_the_workers_once_and_only_when_committed(
    api: httpx.AsyncClient, hub: Hub, admin_key: IssuedKey, db_url: str
) -> None:
    await create_webhook(api, events=["*"])
    await create_webhook(api, name="second", events=["*"])
    heard: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(db_url)
    await listener.add_listener(notify.CHANNEL, lambda *args: heard.put_nowait(args[3]))
    try:

        class Boom(Exception):
            pass

        with pytest.raises(Boom):
            async with hub.store.transaction() as conn:
                await publish_many(conn, admin_key.key.tenant_id, [contact(n) for n in range(5)])
                raise Boom
        async with hub.store.transaction() as conn:
            await publish_many(conn, admin_key.key.tenant_id, [contact(n) for n in range(20)])
        assert await asyncio.wait_for(heard.get(), 5) == DELIVER
        await asyncio.sleep(0.3)
        assert heard.empty()  # one wake-up for 40 jobs, none for the rolled-back batch
    finally:
        await listener.close()
