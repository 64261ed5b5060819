"""Delivering events to real local receivers: signatures, retries on a fake clock, 410,
Retry-After, giving up, auto-disable, and the SSRF guard at delivery time.

Every hub here allowlists 127.0.0.0/8 (the receivers listen there) except where a test
builds one without it. The worker runs with a fake clock and ``run_pending``: nothing sleeps
except the timeout test, which waits for a one-second timeout.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from delivery_support import (
    FakeClock,
    ScriptedReceiver,
    attempt_rows,
    delivery_rows,
    job_statuses,
    subscription_row,
)
from webhook_support import WEBHOOKS, create_webhook

from isthmus import __version__
from isthmus.config import Settings
from isthmus.hub import Hub
from isthmus.services.access import IssuedKey
from isthmus.store.types import utcnow
from isthmus.webhooks.publish import DELIVER
from isthmus.worker import Worker

EVENTS = "/api/v1/events"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"outbound_allowlist": ["127.0.0.0/8"]})


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def worker(hub: Hub, clock: FakeClock) -> Worker:
    built = Worker(hub.store, clock=clock)
    built.register(DELIVER, hub.deliver)
    return built


async def subscribe(
    api: httpx.AsyncClient, receiver: ScriptedReceiver, path: str, **overrides: object
) -> dict[str, object]:
    created = await create_webhook(api, url=receiver.url(path), **overrides)
    receiver.secrets.append(str(created["secret"]))
    return created


async def emit(api: httpx.AsyncClient, type_: str = "contact.created", **data: object) -> str:
    response = await api.post(EVENTS, json={"type": type_, "data": data})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def test_a_delivery_is_signed_shaped_and_verifiable(
    api: httpx.AsyncClient,
    hub: Hub,
    worker: Worker,
    receiver: ScriptedReceiver,
    admin_key: IssuedKey,
) -> None:
    sub = await subscribe(api, receiver, "/ok", headers={"X-Team": "a"})
    event_id = await emit(api, email="a@example.com", name="Ünïcode")

    assert await worker.run_pending() == 1

    [hit] = receiver.hits
    assert hit.standard_ok == [sub["secret"]]  # the official standardwebhooks library
    assert hit.hex_ok == [sub["secret"]]  # X-Webhook-Signature: sha256=<hex>
    [delivery] = await delivery_rows(hub.store)
    assert hit.headers["webhook-id"] == delivery["id"]  # the message id: same on every retry
    assert hit.headers["X-Webhook-Id"] == sub["id"]
    assert hit.headers["X-Webhook-Event"] == "contact.created"
    assert hit.headers["User-Agent"] == f"isthmus/{__version__}"
    assert hit.headers["Content-Type"] == "application/json"
    assert hit.headers["X-Team"] == "a"
    body = json.loads(hit.body)
    assert list(body) == ["event", "timestamp", "tenantId", "data"]
    assert body["event"] == "contact.created"
    assert body["tenantId"] == admin_key.key.tenant_id
    assert body["data"] == {"email": "a@example.com", "name": "Ünïcode"}
    assert abs((datetime.now(UTC) - datetime.fromisoformat(body["timestamp"])).total_seconds()) < 60
    assert delivery["event_id"] == event_id
    assert delivery["status"] == "delivered"
    assert delivery["attempts"] == 1
    assert delivery["last_status_code"] == 200
    [attempt] = await attempt_rows(hub.store, delivery["id"])
    assert attempt["status_code"] == 200
    assert attempt["latency_ms"] > 0
    assert attempt["error_class"] is None
    assert json.loads(attempt["response_body"]) == {"status": 200}
    assert await job_statuses(hub.store) == ["done"]


async def test_during_a_rotation_both_secrets_verify(
    api: httpx.AsyncClient, worker: Worker, receiver: ScriptedReceiver
) -> None:
    sub = await subscribe(api, receiver, "/ok")
    rotated = await api.post(f"{WEBHOOKS}/{sub['id']}/secret/rotate")
    new = rotated.json()["secret"]
    receiver.secrets.append(new)
    await emit(api)

    await worker.run_pending()

    [hit] = receiver.hits
    assert hit.standard_ok == [sub["secret"], new]
    assert hit.hex_ok == [new]


async def test_500_then_200_is_delivered_on_the_second_attempt_at_the_scheduled_time(
    api: httpx.AsyncClient,
    hub: Hub,
    worker: Worker,
    clock: FakeClock,
    receiver: ScriptedReceiver,
) -> None:
    receiver.script("/flaky", [500, 200])
    await subscribe(api, receiver, "/flaky")  # default schedule: now, then 5 s (+-20 %)
    await emit(api)
    clock.advance(0.001)

    assert await worker.run_pending() == 1
    [delivery] = await delivery_rows(hub.store)
    assert (delivery["status"], delivery["attempts"], delivery["last_status_code"]) == (
        "pending",
        1,
        500,
    )
    first_at = clock.now
    wait = (delivery["next_attempt_at"] - first_at).total_seconds()
    assert 4.0 <= wait <= 6.0

    clock.to(delivery["next_attempt_at"] - timedelta(milliseconds=10))
    assert await worker.run_pending() == 0  # not yet due
    clock.to(delivery["next_attempt_at"])
    assert await worker.run_pending() == 1

    [delivery] = await delivery_rows(hub.store)
    assert (delivery["status"], delivery["attempts"]) == ("delivered", 2)
    attempts = await attempt_rows(hub.store, delivery["id"])
    assert [a["status_code"] for a in attempts] == [500, 200]
    assert attempts[0]["error_class"] == "unavailable"
    assert "500" in attempts[0]["error_message"]
    assert all(receiver.verified(h) for h in receiver.hits)
    assert {h.headers["webhook-id"] for h in receiver.hits} == {delivery["id"]}


async def test_a_timeout_and_a_connection_reset_are_retried(
    api: httpx.AsyncClient, hub: Hub, worker: Worker, receiver: ScriptedReceiver
) -> None:
    receiver.script("/hang", [("sleep", 3)])
    receiver.script("/reset", ["reset"])
    hang = await subscribe(api, receiver, "/hang", timeoutSeconds=1)
    reset = await subscribe(api, receiver, "/reset")
    await emit(api)

    assert await worker.run_pending() == 2

    for sub, error_class in ((hang, "timeout"), (reset, "network")):
        [delivery] = await delivery_rows(hub.store, subscription_id=sub["id"])
        assert (delivery["status"], delivery["attempts"]) == ("pending", 1)
        assert delivery["next_attempt_at"] is not None
        [attempt] = await attempt_rows(hub.store, delivery["id"])
        assert attempt["error_class"] == error_class, attempt
        assert attempt["status_code"] is None
    assert await job_statuses(hub.store) == ["queued", "queued"]


async def test_410_disables_the_subscription_at_once(
    api: httpx.AsyncClient,
    hub: Hub,
    worker: Worker,
    clock: FakeClock,
    receiver: ScriptedReceiver,
) -> None:
    receiver.script("/gone", [410])
    sub = await subscribe(api, receiver, "/gone")
    await emit(api)
    await emit(api)  # queued behind; cancelled once the subscription is disabled
    clock.to(utcnow())  # both due, however long a busy machine took to publish them

    await worker.run_pending()

    row = await subscription_row(hub.store, str(sub["id"]))
    assert row["status"] == "disabled"
    assert "410" in row["disabled_reason"]
    shown = (await api.get(f"{WEBHOOKS}/{sub['id']}")).json()
    assert shown["status"] == "disabled"
    statuses = sorted(d["status"] for d in await delivery_rows(hub.store))
    assert statuses in (["cancelled", "failed"], ["delivered", "failed"])
    assert len(receiver.on("/gone")) <= 2


async def test_429_with_retry_after_is_honoured(
    api: httpx.AsyncClient,
    hub: Hub,
    worker: Worker,
    clock: FakeClock,
    receiver: ScriptedReceiver,
) -> None:
    receiver.script("/busy", [(429, {"Retry-After": "120"}), 200])
    await subscribe(api, receiver, "/busy")
    await emit(api)
    clock.advance(0.001)

    await worker.run_pending()
    [delivery] = await delivery_rows(hub.store)
    wait = (delivery["next_attempt_at"] - clock.now).total_seconds()
    assert 120 <= wait <= 121
    assert delivery["last_status_code"] == 429

    clock.advance(119)
    assert await worker.run_pending() == 0
    clock.to(delivery["next_attempt_at"])
    assert await worker.run_pending() == 1
    [delivery] = await delivery_rows(hub.store)
    assert (delivery["status"], delivery["attempts"]) == ("delivered", 2)


async def test_after_the_last_attempt_the_delivery_is_failed(
    api: httpx.AsyncClient,
    hub: Hub,
    worker: Worker,
    clock: FakeClock,
    receiver: ScriptedReceiver,
) -> None:
    receiver.script("/down", [503, 503, 503, 200])
    sub = await subscribe(api, receiver, "/down", retrySchedule=[0, 10, 10])
    await emit(api)

    for _ in range(3):
        clock.advance(13)
        assert await worker.run_pending() == 1
    clock.advance(3600)
    assert await worker.run_pending() == 0

    [delivery] = await delivery_rows(hub.store)
    assert (delivery["status"], delivery["attempts"]) == ("failed", 3)
    assert delivery["next_attempt_at"] is None
    assert len(await attempt_rows(hub.store, delivery["id"])) == 3
    assert await job_statuses(hub.store) == ["failed"]
    row = await subscription_row(hub.store, str(sub["id"]))
    assert (row["status"], row["consecutive_failures"]) == ("active", 1)
    assert row["first_failure_at"] is not None


async def test_ten_failed_deliveries_disable_and_announce_it_to_the_others(
    api: httpx.AsyncClient, hub: Hub, worker: Worker, receiver: ScriptedReceiver
) -> None:
    receiver.script("/broken", [500] * 20)
    broken = await subscribe(api, receiver, "/broken", retrySchedule=[0], events=["*"])
    watcher = await subscribe(api, receiver, "/watch", events=["webhook.disabled"])
    for n in range(10):
        await emit(api, n=n)

    await worker.run_pending()

    row = await subscription_row(hub.store, str(broken["id"]))
    assert row["status"] == "disabled"
    assert row["disabled_reason"] == "10 consecutive failed deliveries"
    [hit] = receiver.on("/watch")
    assert receiver.verified(hit)
    body = json.loads(hit.body)
    assert body["event"] == "webhook.disabled"
    assert body["data"] == {
        "subscriptionId": broken["id"],
        "name": broken["name"],
        "reason": "10 consecutive failed deliveries",
    }
    assert hit.headers["X-Webhook-Id"] == watcher["id"]
    # The disabled one is not told about itself.
    assert all(json.loads(h.body)["event"] == "contact.created" for h in receiver.on("/broken"))


async def test_a_success_resets_the_failure_count(
    api: httpx.AsyncClient, hub: Hub, worker: Worker, receiver: ScriptedReceiver
) -> None:
    receiver.script("/sometimes", [500, 500, 200])
    sub = await subscribe(api, receiver, "/sometimes", retrySchedule=[0])
    for _ in range(2):
        await emit(api)
        await worker.run_pending()
    assert (await subscription_row(hub.store, str(sub["id"])))["consecutive_failures"] == 2
    await emit(api)
    await worker.run_pending()
    row = await subscription_row(hub.store, str(sub["id"]))
    assert (row["consecutive_failures"], row["first_failure_at"]) == (0, None)


async def test_deliveries_of_a_switched_off_or_deleted_subscription_are_cancelled(
    api: httpx.AsyncClient, hub: Hub, worker: Worker, receiver: ScriptedReceiver
) -> None:
    off = await subscribe(api, receiver, "/off")
    gone = await subscribe(api, receiver, "/gone")
    await emit(api)
    await api.patch(f"{WEBHOOKS}/{off['id']}", json={"isActive": False})
    await api.delete(f"{WEBHOOKS}/{gone['id']}")

    await worker.run_pending()

    assert [d["status"] for d in await delivery_rows(hub.store)] == ["cancelled", "cancelled"]
    assert receiver.hits == []
    assert await job_statuses(hub.store) == ["done", "done"]


async def test_the_address_is_checked_again_at_delivery_time(
    api: httpx.AsyncClient,
    hub: Hub,
    settings: Settings,
    clock: FakeClock,
    receiver: ScriptedReceiver,
) -> None:
    # Created where loopback is allowed; delivered by a hub where it is not (the allowlist
    # removed since, or the name now resolving to a private address).
    await subscribe(api, receiver, "/victim")
    await emit(api)
    strict = Hub.build(settings.model_copy(update={"outbound_allowlist": []}))
    try:
        worker = Worker(strict.store, clock=clock)
        worker.register(DELIVER, strict.deliver)
        assert await worker.run_pending() == 1
    finally:
        await strict.close()

    assert receiver.hits == []
    [delivery] = await delivery_rows(hub.store)
    [attempt] = await attempt_rows(hub.store, delivery["id"])
    assert attempt["error_class"] == "blocked"
    assert "loopback" in attempt["error_message"]
    assert delivery["status"] == "pending"  # retried: the operator may fix the allowlist
