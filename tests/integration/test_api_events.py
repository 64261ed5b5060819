"""The event log over the real app and store: what was published, newest first, with its
filters and cursor, each event's deliveries by status as the worker settles them, one event
with its deliveries, bad filters, scopes and tenants."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from api_support import assert_problem, bearer, key_for, walk
from delivery_support import ScriptedReceiver, delivery_rows
from webhook_support import create_webhook

from isthmus.config import Settings
from isthmus.hub import Hub
from isthmus.runtime import run_workers
from isthmus.services.access import IssuedKey

EVENTS = "/api/v1/events"
NO_EVENT = "evt_01jzzzzzzzzzzzzzzzzzzzzzzz"
SUMMARY_FIELDS = {"id", "type", "data", "idempotencyKey", "createdAt", "deliveryCounts"}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"outbound_allowlist": ["127.0.0.0/8"]})


async def publish(api: httpx.AsyncClient, event_type: str, data: Any, **more: Any) -> str:
    response = await api.post(EVENTS, json={"type": event_type, "data": data, **more})
    assert response.status_code == 202, response.text
    event_id: str = response.json()["id"]
    return event_id


async def test_the_log_lists_what_was_published_newest_first_with_its_deliveries(
    api: httpx.AsyncClient, hub: Hub, receiver: ScriptedReceiver
) -> None:
    contacts = await create_webhook(api, url=receiver.url("/contacts"), events=["contact.*"])
    await create_webhook(api, url=receiver.url("/all"), events=["*"])
    first = await publish(api, "contact.created", {"n": 1}, idempotencyKey="import-1")
    second = await publish(api, "lead.created", {"n": 2})
    third = await publish(api, "contact.updated", {"n": 3})

    events = await walk(api, EVENTS, limit=2)  # two pages

    assert [e["id"] for e in events] == [third, second, first]
    assert all(set(e) == SUMMARY_FIELDS for e in events)
    assert [e["type"] for e in events] == ["contact.updated", "lead.created", "contact.created"]
    assert [e["data"] for e in events] == [{"n": 3}, {"n": 2}, {"n": 1}]
    assert [e["idempotencyKey"] for e in events] == [None, None, "import-1"]
    # Nothing has been sent yet: one pending delivery per subscription each matched.
    pending = [e["deliveryCounts"] for e in events]
    assert pending == [
        {"pending": 2, "delivered": 0, "failed": 0, "cancelled": 0},
        {"pending": 1, "delivered": 0, "failed": 0, "cancelled": 0},
        {"pending": 2, "delivered": 0, "failed": 0, "cancelled": 0},
    ]

    # The contacts endpoint is gone (410 disables its webhook); the other takes all.
    receiver.script("/contacts", [410, 410])
    hub_stop = asyncio.Event()
    workers = asyncio.create_task(run_workers(hub, hub_stop))
    try:
        for _ in range(500):
            rows = await delivery_rows(hub.store)
            if all(r["status"] != "pending" for r in rows):
                break
            await asyncio.sleep(0.02)
    finally:
        hub_stop.set()
        await workers
    counts = {e["id"]: e["deliveryCounts"] for e in await walk(api, EVENTS)}
    assert counts[second] == {"pending": 0, "delivered": 1, "failed": 0, "cancelled": 0}
    # Each contact event: delivered by the catch-all; failed with the 410, or cancelled
    # when the webhook was disabled before its turn.
    for contact_event in (first, third):
        got = counts[contact_event]
        assert got["pending"] == 0 and got["delivered"] == 1, got
        assert got["failed"] + got["cancelled"] == 1, got
    assert counts[first]["failed"] + counts[third]["failed"] >= 1
    first_counts = counts[first]

    one = await api.get(f"{EVENTS}/{first}")
    assert one.status_code == 200, one.text
    detail = one.json()
    assert set(detail) == SUMMARY_FIELDS | {"deliveries"}
    assert detail["deliveryCounts"] == first_counts
    by_webhook = {d["subscriptionId"]: d for d in detail["deliveries"]}
    assert len(by_webhook) == 2 and by_webhook[contacts["id"]]["status"] in {"failed", "cancelled"}
    assert all(d["eventId"] == first for d in detail["deliveries"])


async def test_filters_by_type_and_time(api: httpx.AsyncClient) -> None:
    created = await publish(api, "contact.created", {})
    lead = await publish(api, "lead.created", {})
    updated = await publish(api, "contact.updated", {})
    stamps = {e["id"]: e["createdAt"] for e in await walk(api, EVENTS)}

    def ids(**params: Any) -> Any:
        return walk(api, EVENTS, **params)

    assert [e["id"] for e in await ids(type="contact.*")] == [updated, created]
    assert [e["id"] for e in await ids(type="lead.created")] == [lead]
    assert [e["id"] for e in await ids(type="*")] == [updated, lead, created]
    assert await ids(type="contact.deleted") == []
    since = stamps[lead]
    assert [e["id"] for e in await ids(since=since)] == [updated, lead]
    assert [e["id"] for e in await ids(until=since)] == [created]
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert await ids(since=later) == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        pytest.param({"type": "contact"}, "type", id="type-without-dot"),
        pytest.param({"type": "contact.*.x"}, "type", id="bad-wildcard"),
        pytest.param({"type": "Contact.Created"}, "type", id="upper-case"),
        pytest.param({"since": "2026-01-01T00:00:00"}, "since", id="no-zone"),
        pytest.param(
            {"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
            "until",
            id="until-before-since",
        ),
        pytest.param({"limit": 0}, "limit", id="limit"),
        pytest.param({"status": "failed"}, "status", id="unknown-parameter"),
    ],
)
async def test_bad_filters_are_422s_naming_them(
    api: httpx.AsyncClient, params: dict[str, Any], field: str
) -> None:
    response = await api.get(EVENTS, params=params)
    doc = assert_problem(response, 422)
    assert field in doc["detail"], doc


async def test_another_tenants_events_are_neither_listed_nor_found(
    api: httpx.AsyncClient, hub: Hub, admin_key: IssuedKey
) -> None:
    mine = await publish(api, "contact.created", {"secret": "tenant a's"})
    tenant_b = await hub.access.create_tenant("tenant-b")
    b = bearer(await key_for(hub, tenant_b.id, "read"))

    listed = await api.get(EVENTS, headers=b)
    cross = await api.get(f"{EVENTS}/{mine}", headers=b)
    absent = await api.get(f"{EVENTS}/{NO_EVENT}", headers=b)

    assert listed.status_code == 200 and listed.json()["data"] == []
    assert_problem(cross, 404)
    assert_problem(absent, 404)
    assert cross.json()["detail"].replace(mine, NO_EVENT) == absent.json()["detail"]
    # The read scope is enough; publishing needs write.
    reader = bearer(await key_for(hub, admin_key.key.tenant_id, "read"))
    assert (await api.get(f"{EVENTS}/{mine}", headers=reader)).status_code == 200
    assert_problem(
        await api.post(EVENTS, json={"type": "lead.created", "data": {}}, headers=reader), 403
    )
