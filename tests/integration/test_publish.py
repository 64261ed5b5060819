"""Publishing events: ``POST /api/v1/events`` and the internal ``publish`` it calls.

An event, its deliveries and their jobs are written in one transaction: all or nothing.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from api_support import assert_problem
from webhook_support import EVENT_TYPES, create_webhook

from isthmus.hub import Hub
from isthmus.services.access import IssuedKey
from isthmus.store.tables import deliveries, events, jobs
from isthmus.webhooks.publish import DELIVER, publish

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
