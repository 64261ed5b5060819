"""The delivery log over the real app and store: list with filters and cursor, a delivery
with its attempts, manual retry, recover of a window, bad input, scopes and tenants, audit."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from api_support import assert_problem, audit_rows, bearer, key_for, walk
from delivery_log_support import Attempt, deliver_jobs, finish, publish_event
from webhook_support import WEBHOOKS, Receiver, create_webhook

from isthmus.config import Settings
from isthmus.domain.auth import Actor
from isthmus.domain.webhooks import SubscriptionStatus
from isthmus.hub import Hub
from isthmus.services.access import IssuedKey
from isthmus.store import queue
from isthmus.store import subscriptions as subscriptions_store
from isthmus.webhooks.delivery_log import DeliveryLogService
from isthmus.webhooks.publish import DELIVER
from isthmus.worker import Worker

DELIVERIES = f"{WEBHOOKS}/deliveries"
NO_DELIVERY = "dlv_01jzzzzzzzzzzzzzzzzzzzzzzz"
NO_WEBHOOK = "wh_01jzzzzzzzzzzzzzzzzzzzzzzz"
FIELDS = {
    "id",
    "subscriptionId",
    "eventId",
    "eventType",
    "status",
    "attempts",
    "nextAttemptAt",
    "lastStatusCode",
    "lastError",
    "deliveredAt",
    "createdAt",
    "updatedAt",
}
ATTEMPT_FIELDS = {
    "attemptedAt",
    "statusCode",
    "responseBody",
    "latencyMs",
    "errorClass",
    "errorMessage",
}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # The end-to-end tests send to a local receiver; PUBLIC_URL needs no allowlist anyway.
    return settings.model_copy(update={"outbound_allowlist": ["127.0.0.0/8"]})


@pytest.fixture
def tenant(admin_key: IssuedKey) -> str:
    return admin_key.key.tenant_id


def _log(webhook_id: str) -> str:
    return f"{WEBHOOKS}/{webhook_id}/deliveries"


async def _jobs_of(hub: Hub, delivery_id: str, status: str) -> list[queue.JobRow]:
    async with hub.store.read() as conn:
        found = [await queue.get(conn, j) for j in await deliver_jobs(conn, delivery_id)]
    return [j for j in found if j is not None and j.status == status]


# -- list --------------------------------------------------------------------------------------


async def test_list_walks_newest_first_and_filters(
    api: httpx.AsyncClient, hub: Hub, tenant: str
) -> None:
    hook = await create_webhook(api)
    other = await create_webhook(api, name="other")
    for event_type in ["contact.created", "contact.updated"] * 3:
        assert len(await publish_event(hub, tenant, event_type)) == 2
    page = await walk(api, _log(hook["id"]), limit=200)
    ids = [d["id"] for d in page]
    assert len(ids) == 6 and ids == sorted(ids, reverse=True)
    await finish(hub, ids[0], "failed")
    await finish(hub, ids[1], "delivered", attempts=[Attempt(200, "ok", 3.0, None, None)])

    walked = await walk(api, _log(hook["id"]), limit=4)
    assert [d["id"] for d in walked] == ids
    first = walked[0]
    assert set(first) == FIELDS
    assert first["subscriptionId"] == hook["id"]
    assert first["status"] == "failed" and first["attempts"] == 1
    assert first["lastStatusCode"] == 500 and first["lastError"]
    assert walked[1]["status"] == "delivered" and walked[1]["deliveredAt"]
    assert {d["status"] for d in walked[2:]} == {"pending"}

    failed = await walk(api, _log(hook["id"]), status="failed")
    assert [d["id"] for d in failed] == [ids[0]]
    updated = await walk(api, _log(hook["id"]), eventType="contact.updated", limit=1)
    assert len(updated) == 3 and {d["eventType"] for d in updated} == {"contact.updated"}
    both = await walk(api, _log(hook["id"]), eventType="contact.updated", status="pending")
    assert len(both) == 3 - sum(1 for d in walked[:2] if d["eventType"] == "contact.updated")
    theirs = await walk(api, _log(other["id"]))
    assert len(theirs) == 6 and not {d["id"] for d in theirs} & set(ids)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"status": "lost"}, "status"),
        ({"limit": 0}, "limit"),
        ({"limit": 201}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"eventType": "x" * 101}, "eventType"),
    ],
)
async def test_bad_list_parameters_are_422(
    api: httpx.AsyncClient, params: dict[str, Any], field: str
) -> None:
    hook = await create_webhook(api)
    assert_problem(await api.get(_log(hook["id"]), params=params), 422, {field})


async def test_the_log_of_an_unknown_webhook_is_404(api: httpx.AsyncClient) -> None:
    assert_problem(await api.get(_log(NO_WEBHOOK)), 404)


# -- one delivery ------------------------------------------------------------------------------


async def test_a_delivery_shows_its_event_and_every_attempt_oldest_first(
    api: httpx.AsyncClient, hub: Hub, tenant: str
) -> None:
    hook = await create_webhook(api)
    data = {"id": "c_1", "email": "ada@example.com"}
    (delivery_id,) = await publish_event(hub, tenant, "contact.created", data)
    long_body = "é" * 3000  # 6000 bytes of UTF-8
    tries = [
        Attempt(None, None, 5000.0, "timeout", "timed out after 10 s"),
        Attempt(500, long_body, 40.0, "http_status", "500"),
        Attempt(503, "busy", 8.0, "http_status", "503"),
    ]
    await finish(hub, delivery_id, "failed", attempts=tries)

    response = await api.get(f"{DELIVERIES}/{delivery_id}")

    assert response.status_code == 200, response.text
    got = response.json()
    assert set(got) == FIELDS | {"event", "attemptLog"}
    assert got["id"] == delivery_id and got["subscriptionId"] == hook["id"]
    assert got["status"] == "failed" and got["attempts"] == 3
    assert got["event"]["type"] == "contact.created" and got["event"]["data"] == data
    assert got["event"]["id"] == got["eventId"]
    log = got["attemptLog"]
    assert [set(a) for a in log] == [ATTEMPT_FIELDS] * 3
    assert [a["errorClass"] for a in log] == ["timeout", "http_status", "http_status"]
    assert [a["statusCode"] for a in log] == [None, 500, 503]
    assert log[0]["latencyMs"] == 5000.0 and log[0]["responseBody"] is None
    assert len(log[1]["responseBody"].encode()) == 4096
    assert long_body.startswith(log[1]["responseBody"])
    assert log[2]["responseBody"] == "busy"
    assert [a["attemptedAt"] for a in log] == sorted(a["attemptedAt"] for a in log)


async def test_an_unknown_delivery_is_404(api: httpx.AsyncClient) -> None:
    assert_problem(await api.get(f"{DELIVERIES}/{NO_DELIVERY}"), 404)
    assert_problem(await api.post(f"{DELIVERIES}/{NO_DELIVERY}/retry"), 404)


# -- retry -------------------------------------------------------------------------------------


async def test_retry_makes_a_failed_delivery_pending_with_a_new_job(
    api: httpx.AsyncClient, hub: Hub, tenant: str
) -> None:
    hook = await create_webhook(api)
    (delivery_id,) = await publish_event(hub, tenant)
    await finish(hub, delivery_id, "failed", attempts=[Attempt()] * 8)
    assert await _jobs_of(hub, delivery_id, "queued") == []

    response = await api.post(f"{DELIVERIES}/{delivery_id}/retry")

    assert response.status_code == 202, response.text
    got = response.json()
    assert set(got) == FIELDS
    assert got["status"] == "pending" and got["attempts"] == 8  # the log keeps counting
    assert got["nextAttemptAt"] is not None
    (job,) = await _jobs_of(hub, delivery_id, "queued")
    assert job.kind == "webhook.deliver"
    assert job.payload == {"deliveryId": delivery_id}
    assert job.group == hook["id"] and job.tenant_id == tenant
    assert job.run_at <= datetime.now(UTC)
    shown = (await api.get(f"{DELIVERIES}/{delivery_id}")).json()
    assert shown["status"] == "pending" and len(shown["attemptLog"]) == 8

    (row,) = await audit_rows(api, action="webhook.delivery.retry")
    assert row["resourceType"] == "delivery" and row["resourceId"] == delivery_id
    assert row["diff"] == {
        "webhookId": hook["id"],
        "eventId": got["eventId"],
        "status": {"from": "failed", "to": "pending"},
    }


async def test_a_delivered_or_cancelled_delivery_can_be_sent_again(
    api: httpx.AsyncClient, hub: Hub, tenant: str
) -> None:
    await create_webhook(api)
    delivered, cancelled = (
        (await publish_event(hub, tenant))[0],
        (await publish_event(hub, tenant))[0],
    )
    await finish(hub, delivered, "delivered", attempts=[Attempt(200, "ok", 2.0, None, None)])
    await finish(hub, cancelled, "cancelled", attempts=[])

    for delivery_id in (delivered, cancelled):
        response = await api.post(f"{DELIVERIES}/{delivery_id}/retry")
        assert response.status_code == 202, response.text
        assert response.json()["status"] == "pending"
        assert response.json()["deliveredAt"] is None
        assert len(await _jobs_of(hub, delivery_id, "queued")) == 1


async def test_a_pending_delivery_is_409_and_gets_no_second_job(
    api: httpx.AsyncClient, hub: Hub, tenant: str
) -> None:
    await create_webhook(api)
    (delivery_id,) = await publish_event(hub, tenant)
    await finish(hub, delivery_id, "failed")
    assert (await api.post(f"{DELIVERIES}/{delivery_id}/retry")).status_code == 202

    again = await api.post(f"{DELIVERIES}/{delivery_id}/retry")

    doc = assert_problem(again, 409)
    assert "already pending" in doc["detail"]
    assert len(await _jobs_of(hub, delivery_id, "queued")) == 1
    assert len(await audit_rows(api, action="webhook.delivery.retry")) == 1


async def test_a_delivery_of_a_deleted_webhook_is_409(
    api: httpx.AsyncClient, hub: Hub, tenant: str
) -> None:
    hook = await create_webhook(api)
    (delivery_id,) = await publish_event(hub, tenant)
    await finish(hub, delivery_id, "cancelled", attempts=[])
    assert (await api.delete(f"{WEBHOOKS}/{hook['id']}")).status_code == 204

    doc = assert_problem(await api.post(f"{DELIVERIES}/{delivery_id}/retry"), 409)

    assert "deleted" in doc["detail"]
    assert await _jobs_of(hub, delivery_id, "queued") == []
    # The log of a deleted webhook is gone with it; the delivery itself stays readable.
    assert (await api.get(f"{DELIVERIES}/{delivery_id}")).json()["status"] == "cancelled"


async def test_a_paused_or_disabled_webhook_refuses_retry_and_recover(
    api: httpx.AsyncClient, hub: Hub, tenant: str
) -> None:
    hook = await create_webhook(api)
    (delivery_id,) = await publish_event(hub, tenant)
    await finish(hub, delivery_id, "failed")
    since = {"since": "2000-01-01T00:00:00Z"}

    assert (await api.patch(f"{WEBHOOKS}/{hook['id']}", json={"isActive": False})).is_success
    for response in (
        await api.post(f"{DELIVERIES}/{delivery_id}/retry"),
        await api.post(f"{WEBHOOKS}/{hook['id']}/recover", json=since),
    ):
        assert "re-enable it first" in assert_problem(response, 409)["detail"]

    assert (await api.patch(f"{WEBHOOKS}/{hook['id']}", json={"isActive": True})).is_success
    async with hub.store.transaction() as conn:
        sub = await subscriptions_store.get(conn, tenant, hook["id"])
        assert sub is not None
        await subscriptions_store.update(
            conn, replace(sub, status=SubscriptionStatus.DISABLED, disabled_reason="410 Gone")
        )
    recover = await api.post(f"{WEBHOOKS}/{hook['id']}/recover", json=since)
    doc = assert_problem(recover, 409)
    assert "410 Gone" in doc["detail"] and "re-enable it first" in doc["detail"]
    assert await _jobs_of(hub, delivery_id, "queued") == []

    assert (await api.patch(f"{WEBHOOKS}/{hook['id']}", json={"isActive": True})).is_success
    recovered = await api.post(f"{WEBHOOKS}/{hook['id']}/recover", json=since)
    assert recovered.status_code == 202 and recovered.json()["queued"] == 1


async def test_retry_and_recover_send_again_through_the_real_handler(
    api: httpx.AsyncClient, hub: Hub, tenant: str
) -> None:
    receiver = Receiver()
    await receiver.start()
    try:
        hook = await create_webhook(api, url=receiver.url("/fail"), retrySchedule=[0])
        worker = Worker(hub.store)
        worker.register(DELIVER, hub.deliver)
        (one,) = await publish_event(hub, tenant)
        (two,) = await publish_event(hub, tenant)
        assert await worker.run_pending() == 2
        assert {(await api.get(f"{DELIVERIES}/{d}")).json()["status"] for d in (one, two)} == {
            "failed"
        }
        fixed = await api.patch(f"{WEBHOOKS}/{hook['id']}", json={"url": receiver.url("/ok")})
        assert fixed.is_success, fixed.text

        assert (await api.post(f"{DELIVERIES}/{one}/retry")).status_code == 202
        assert await worker.run_pending() == 1
        since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
        recovered = await api.post(f"{WEBHOOKS}/{hook['id']}/recover", json={"since": since})
        assert recovered.json() == {"queued": 1, "more": False}
        assert await worker.run_pending() == 1
    finally:
        await receiver.stop()

    for d in (one, two):
        got = (await api.get(f"{DELIVERIES}/{d}")).json()
        assert got["status"] == "delivered" and got["attempts"] == 2
        assert [a["statusCode"] for a in got["attemptLog"]] == [500, 200]
    assert [r.path for r in receiver.received] == ["/fail", "/fail", "/ok", "/ok"]


# -- recover -----------------------------------------------------------------------------------


async def test_recover_queues_exactly_the_failed_deliveries_of_the_window(
    api: httpx.AsyncClient, hub: Hub, tenant: str
) -> None:
    hook = await create_webhook(api, events=["contact.created"])
    other = await create_webhook(api, name="other", events=["lead.created"])
    now = datetime.now(UTC).replace(microsecond=0)

    async def made(hours_ago: float, status: str, event_type: str = "contact.created") -> str:
        (d,) = await publish_event(hub, tenant, event_type, now=now - timedelta(hours=hours_ago))
        await finish(hub, d, status)
        return d

    too_old = await made(5, "failed")
    at_since = await made(4, "failed")
    inside = await made(2, "failed")
    delivered = await made(2, "delivered")
    cancelled = await made(1.5, "cancelled")
    theirs = await made(2, "failed", "lead.created")
    at_until = await made(1, "failed")
    since, until = now - timedelta(hours=4), now - timedelta(hours=1)

    response = await api.post(
        f"{WEBHOOKS}/{hook['id']}/recover",
        json={"since": since.isoformat(), "until": until.isoformat().replace("+00:00", "Z")},
    )

    assert response.status_code == 202, response.text
    assert response.json() == {"queued": 2, "more": False}
    statuses = {d["id"]: d["status"] for d in await walk(api, _log(hook["id"]))}
    assert statuses == {
        too_old: "failed",
        at_since: "pending",
        inside: "pending",
        delivered: "delivered",
        cancelled: "cancelled",
        at_until: "failed",
    }
    assert [d["status"] for d in await walk(api, _log(other["id"]))] == ["failed"]
    for d in (at_since, inside):
        (job,) = await _jobs_of(hub, d, "queued")
        assert job.group == hook["id"] and job.payload == {"deliveryId": d}
    for d in (too_old, delivered, cancelled, theirs, at_until):
        assert await _jobs_of(hub, d, "queued") == []

    (row,) = await audit_rows(api, action="webhook.recover")
    assert row["resourceType"] == "webhook" and row["resourceId"] == hook["id"]
    assert row["diff"] == {"since": since.isoformat(), "until": until.isoformat(), "queued": 2}

    again = await api.post(f"{WEBHOOKS}/{hook['id']}/recover", json={"since": since.isoformat()})
    assert again.json() == {"queued": 1, "more": False}  # until defaults to now: at_until too
    assert len(await _jobs_of(hub, at_until, "queued")) == 1


async def test_recover_is_bounded_and_says_more_remain(
    api: httpx.AsyncClient, hub: Hub, tenant: str
) -> None:
    hook = await create_webhook(api)
    for _ in range(3):
        (d,) = await publish_event(hub, tenant)
        await finish(hub, d, "failed")
    service = DeliveryLogService(hub.store, recover_batch=2)
    actor = Actor(tenant, "test")
    since = datetime.now(UTC) - timedelta(hours=1)

    first = await service.recover(actor, hook["id"], since=since)
    second = await service.recover(actor, hook["id"], since=since)

    assert (first.queued, first.more) == (2, True)
    assert (second.queued, second.more) == (1, False)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "since"),
        ({"since": "2026-01-01T00:00:00"}, "since"),
        ({"since": "2026-01-01T00:00:00Z", "until": "2026-01-02T00:00:00"}, "until"),
        ({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "until"),
        ({"since": "2026-01-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "until"),
        ({"since": "yesterday"}, "since"),
        ({"since": "2026-01-01T00:00:00Z", "extra": 1}, "extra"),
    ],
)
async def test_bad_recover_windows_are_422(
    api: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    hook = await create_webhook(api)
    assert_problem(await api.post(f"{WEBHOOKS}/{hook['id']}/recover", json=body), 422, {field})
    assert await audit_rows(api, action="webhook.recover") == []


async def test_recover_of_an_unknown_webhook_is_404(api: httpx.AsyncClient) -> None:
    response = await api.post(
        f"{WEBHOOKS}/{NO_WEBHOOK}/recover", json={"since": "2026-01-01T00:00:00Z"}
    )
    assert_problem(response, 404)


# -- scopes and tenants ------------------------------------------------------------------------


async def test_a_read_key_reads_the_log_but_cannot_send_again(
    api: httpx.AsyncClient, hub: Hub, tenant: str
) -> None:
    hook = await create_webhook(api)
    (delivery_id,) = await publish_event(hub, tenant)
    await finish(hub, delivery_id, "failed")
    reader = bearer(await key_for(hub, tenant, "read"))

    assert (await api.get(_log(hook["id"]), headers=reader)).status_code == 200
    assert (await api.get(f"{DELIVERIES}/{delivery_id}", headers=reader)).status_code == 200
    retry = await api.post(f"{DELIVERIES}/{delivery_id}/retry", headers=reader)
    recover = await api.post(
        f"{WEBHOOKS}/{hook['id']}/recover", json={"since": "2026-01-01T00:00:00Z"}, headers=reader
    )
    assert_problem(retry, 403)
    assert_problem(recover, 403)
    assert await _jobs_of(hub, delivery_id, "queued") == []


@dataclass
class Tenants:
    api: httpx.AsyncClient
    webhook_id: str
    delivery_id: str
    b: dict[str, str]


@pytest.fixture
async def tenants(api: httpx.AsyncClient, hub: Hub, tenant: str) -> Tenants:
    hook = await create_webhook(api)
    (delivery_id,) = await publish_event(hub, tenant)
    await finish(hub, delivery_id, "failed")
    tenant_b = await hub.access.create_tenant("tenant-b")
    return Tenants(api, hook["id"], delivery_id, bearer(await key_for(hub, tenant_b.id, "admin")))


ROUTES: list[Any] = [
    pytest.param("GET", "{webhook}/deliveries", None, id="list"),
    pytest.param("GET", "deliveries/{delivery}", None, id="get"),
    pytest.param("POST", "deliveries/{delivery}/retry", None, id="retry"),
    pytest.param("POST", "{webhook}/recover", {"since": "2000-01-01T00:00:00Z"}, id="recover"),
]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
async def test_other_tenants_ids_answer_like_missing_ones(
    tenants: Tenants, hub: Hub, method: str, path: str, body: Any
) -> None:
    def url(webhook: str, delivery: str) -> str:
        return f"{WEBHOOKS}/" + path.format(webhook=webhook, delivery=delivery)

    a_audit = await audit_rows(tenants.api)
    cross = await tenants.api.request(
        method, url(tenants.webhook_id, tenants.delivery_id), json=body, headers=tenants.b
    )
    absent = await tenants.api.request(
        method, url(NO_WEBHOOK, NO_DELIVERY), json=body, headers=tenants.b
    )

    assert_problem(cross, 404)
    assert_problem(absent, 404)
    mine = (tenants.webhook_id, tenants.delivery_id)
    missing = (NO_WEBHOOK, NO_DELIVERY)
    shown = cross.json()["detail"]
    for ours, none in zip(mine, missing, strict=True):
        shown = shown.replace(ours, none)
    assert shown == absent.json()["detail"]
    assert await audit_rows(tenants.api) == a_audit
    assert await _jobs_of(hub, tenants.delivery_id, "queued") == []
    got = (await tenants.api.get(f"{DELIVERIES}/{tenants.delivery_id}")).json()
    assert got["status"] == "failed"
