"""Webhook subscriptions over the real app and store: create, read, change, delete, rotate
the secret, bad input, tenant isolation. The test call is in ``test_api_webhook_test_call``."""

from __future__ import annotations

import base64
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from api_support import assert_problem, audit_rows, bearer, key_for, walk
from webhook_support import EVENT_TYPES, PUBLIC_URL, WEBHOOKS, create_webhook, webhook_body

from isthmus.domain.auth import Actor
from isthmus.domain.webhooks import SubscriptionStatus
from isthmus.hub import Hub
from isthmus.services.access import IssuedKey
from isthmus.store import secrets as secrets_store
from isthmus.store import subscriptions as subscriptions_store
from isthmus.webhooks.retry import DEFAULT_SCHEDULE, SEED_SCHEDULE

NO_WEBHOOK = "wh_01jzzzzzzzzzzzzzzzzzzzzzzz"
FIELDS = {
    "id",
    "name",
    "url",
    "events",
    "isActive",
    "description",
    "headers",
    "rateLimitPerSecond",
    "maxConcurrency",
    "timeoutSeconds",
    "retrySchedule",
    "status",
    "disabledReason",
    "consecutiveFailures",
    "previousSecretExpiresAt",
    "createdAt",
    "updatedAt",
}


def _decoded_length(secret: str) -> int:
    assert secret.startswith("whsec_")
    return len(base64.b64decode(secret.removeprefix("whsec_"), validate=True))


# -- create and read -------------------------------------------------------------------------


async def test_create_answers_201_with_defaults_and_the_secret(api: httpx.AsyncClient) -> None:
    response = await api.post(WEBHOOKS, json=webhook_body())

    assert response.status_code == 201, response.text
    created = response.json()
    assert set(created) == FIELDS | {"secret"}
    assert created["id"].startswith("wh_")
    assert _decoded_length(created["secret"]) == 32
    assert created["name"] == "Contact Notifications"
    assert created["url"] == PUBLIC_URL
    assert created["events"] == ["contact.created", "contact.updated"]
    assert created["isActive"] is True
    assert created["description"] == ""
    assert created["headers"] == {}
    assert created["rateLimitPerSecond"] is None
    assert created["maxConcurrency"] is None
    assert created["timeoutSeconds"] == 10
    assert created["retrySchedule"] == list(DEFAULT_SCHEDULE)
    assert created["status"] == "active"
    assert created["disabledReason"] is None
    assert created["consecutiveFailures"] == 0
    assert created["previousSecretExpiresAt"] is None
    assert created["createdAt"] == created["updatedAt"]


async def test_every_field_can_be_set_on_create(api: httpx.AsyncClient) -> None:
    created = await create_webhook(
        api,
        events=["*", "lead.*", "task.completed"],
        isActive=False,
        description="to the CRM",
        headers={"X-Team": "growth", "Authorization": "Bearer receiver-token-123"},
        rateLimitPerSecond=50,
        maxConcurrency=4,
        timeoutSeconds=30,
        retrySchedule="seed",
    )

    assert created["events"] == ["*", "lead.*", "task.completed"]
    assert created["isActive"] is False
    assert created["description"] == "to the CRM"
    # Secret-looking header values are masked, as credentials are.
    assert created["headers"] == {"X-Team": "growth", "Authorization": "Bearer ***"}
    assert created["rateLimitPerSecond"] == 50
    assert created["maxConcurrency"] == 4
    assert created["timeoutSeconds"] == 30
    assert created["retrySchedule"] == list(SEED_SCHEDULE)


async def test_a_schedule_list_is_stored_as_given(api: httpx.AsyncClient) -> None:
    created = await create_webhook(api, retrySchedule=[0, 1.5, 60, 3600])

    assert created["retrySchedule"] == [0, 1.5, 60, 3600]


async def test_duplicate_filters_are_dropped(api: httpx.AsyncClient) -> None:
    created = await create_webhook(api, events=["contact.created", "*", "contact.created"])

    assert created["events"] == ["contact.created", "*"]


async def test_the_secret_is_shown_once_and_never_again(
    api: httpx.AsyncClient, hub: Hub, admin_key: IssuedKey
) -> None:
    created = await create_webhook(api)
    secret = created.pop("secret")

    got = await api.get(f"{WEBHOOKS}/{created['id']}")
    listed = await api.get(WEBHOOKS)
    patched = await api.patch(f"{WEBHOOKS}/{created['id']}", json={"name": "renamed"})
    audit = await api.get("/api/v1/audit", params={"limit": 200})

    assert got.status_code == 200
    assert got.json() == created
    assert [w["id"] for w in listed.json()["data"]] == [created["id"]]
    for response in (got, listed, patched, audit):
        assert secret not in response.text
        assert "whsec_" not in response.text
    # It is the secret that signs, though.
    now = datetime.now(UTC)
    tenant = admin_key.key.tenant_id
    assert await hub.webhooks.active_secrets(tenant, created["id"], now) == [secret]


async def test_create_is_audited_without_secrets(api: httpx.AsyncClient) -> None:
    created = await create_webhook(
        api,
        url="https://user:pw@93.184.215.14/hook?token=abc123&x=1",
        headers={"X-Api-Key": "receiver-key-0123456789", "X-Team": "growth"},
    )

    rows = await audit_rows(api, resource=f"webhook/{created['id']}")

    assert [r["action"] for r in rows] == ["webhook.create"]
    diff = rows[0]["diff"]
    assert diff["url"] == "https://***@93.184.215.14/hook?token=***&x=1"
    assert diff["headers"] == {"X-Api-Key": "***", "X-Team": "growth"}
    assert diff["events"] == ["contact.created", "contact.updated"]
    text = str(rows)
    assert created["secret"] not in text
    assert "receiver-key-0123456789" not in text
    assert "abc123" not in text


async def test_list_pages_and_filters(api: httpx.AsyncClient) -> None:
    made = [await create_webhook(api, name=f"hook {i}", isActive=i % 2 == 0) for i in range(5)]

    first = await api.get(WEBHOOKS, params={"limit": 2})
    everything = await walk(api, WEBHOOKS, limit=2)
    inactive = await walk(api, WEBHOOKS, isActive="false")
    active = await walk(api, WEBHOOKS, status="active")

    assert len(first.json()["data"]) == 2
    assert [w["id"] for w in everything] == [w["id"] for w in made]
    assert [w["name"] for w in inactive] == ["hook 1", "hook 3"]
    assert len(active) == 5
    assert await walk(api, WEBHOOKS, status="disabled") == []
    assert_problem(await api.get(WEBHOOKS, params={"status": "sleepy"}), 422, {"status"})


async def test_an_unknown_id_is_404(api: httpx.AsyncClient) -> None:
    doc = assert_problem(await api.get(f"{WEBHOOKS}/{NO_WEBHOOK}"), 404)
    assert NO_WEBHOOK in doc["detail"]


# -- bad input -------------------------------------------------------------------------------

# (body changes, the one field the 422 names)
BAD_CREATES: list[Any] = [
    pytest.param({"url": "ftp://example.com/x"}, "url", id="ftp"),
    pytest.param({"url": "file:///etc/passwd"}, "url", id="file"),
    pytest.param({"url": "example.com/hook"}, "url", id="no-scheme"),
    pytest.param({"url": "http:///hook"}, "url", id="no-host"),
    pytest.param({"url": "http://127.0.0.1/x"}, "url", id="loopback"),
    pytest.param({"url": "http://10.0.0.1/x"}, "url", id="private"),
    pytest.param({"url": "http://[::ffff:127.0.0.1]/"}, "url", id="mapped-loopback"),
    pytest.param({"url": "http://169.254.169.254/latest"}, "url", id="metadata"),
    pytest.param({"url": "http://2130706433/"}, "url", id="decimal-loopback"),
    pytest.param({"url": "http://localhost:8080/x"}, "url", id="localhost"),
    pytest.param({"url": "https://x.example/" + "a" * 2000}, "url", id="url-too-long"),
    pytest.param({"events": ["nope.never"]}, "events.0", id="unknown-type"),
    pytest.param({"events": ["contact.created", "nope.never"]}, "events.1", id="unknown-second"),
    pytest.param(
        {"events": ["contact.created", "contact.created", "nope.x"]}, "events.2", id="after-dup"
    ),
    pytest.param({"events": ["Contact Created"]}, "events.0", id="bad-filter"),
    pytest.param({"events": ["*.created"]}, "events.0", id="inner-wildcard"),
    pytest.param({"events": []}, "events", id="no-filters"),
    pytest.param({"headers": {"X-Webhook-Signature": "x"}}, "headers.X-Webhook-Signature", id="h1"),
    pytest.param({"headers": {"webhook-id": "x"}}, "headers.webhook-id", id="h2"),
    pytest.param({"headers": {"Bad Header": "x"}}, "headers.Bad Header", id="h3"),
    pytest.param({"headers": {"X-Ok": "a\r\nX-Evil: 1"}}, "headers.X-Ok", id="h4"),
    pytest.param({"headers": {"Host": "internal"}}, "headers.Host", id="h5"),
    pytest.param({"headers": {"X-Num": 5}}, "headers.X-Num", id="h6"),
    pytest.param({"timeoutSeconds": 31}, "timeoutSeconds", id="timeout-31"),
    pytest.param({"timeoutSeconds": 0}, "timeoutSeconds", id="timeout-0"),
    pytest.param({"timeoutSeconds": 2.5}, "timeoutSeconds", id="timeout-float"),
    pytest.param({"rateLimitPerSecond": 0}, "rateLimitPerSecond", id="rate-0"),
    pytest.param({"rateLimitPerSecond": 1001}, "rateLimitPerSecond", id="rate-1001"),
    pytest.param({"maxConcurrency": 101}, "maxConcurrency", id="concurrency-101"),
    pytest.param({"maxConcurrency": 0}, "maxConcurrency", id="concurrency-0"),
    pytest.param({"retrySchedule": "fast"}, "retrySchedule", id="schedule-preset"),
    pytest.param({"retrySchedule": []}, "retrySchedule", id="schedule-empty"),
    pytest.param({"retrySchedule": 5}, "retrySchedule", id="schedule-number"),
    pytest.param({"retrySchedule": [0, -1]}, "retrySchedule.1", id="schedule-negative"),
    pytest.param({"retrySchedule": [0, True]}, "retrySchedule.1", id="schedule-bool"),
    pytest.param({"retrySchedule": [0, 90000]}, "retrySchedule.1", id="schedule-over-a-day"),
    pytest.param({"name": "n" * 201}, "name", id="name-too-long"),
    pytest.param({"isActive": "yes"}, "isActive", id="active-not-bool"),
    pytest.param({"secret": "whsec_mine"}, "secret", id="secret-not-settable"),
]


@pytest.mark.parametrize(("changes", "field"), BAD_CREATES)
async def test_bad_input_on_create_is_422_naming_the_field(
    api: httpx.AsyncClient, changes: dict[str, Any], field: str
) -> None:
    response = await api.post(WEBHOOKS, json=webhook_body(**changes))

    assert_problem(response, 422, {field})
    assert (await api.get(WEBHOOKS)).json()["data"] == []


async def test_an_unknown_type_is_named_in_the_problem(api: httpx.AsyncClient) -> None:
    response = await api.post(WEBHOOKS, json=webhook_body(events=["contact.created", "nope.x"]))

    doc = assert_problem(response, 422, {"events.1"})
    assert "nope.x" in doc["detail"]
    assert "nope.x" in doc["errors"][0]["message"]


async def test_an_archived_type_cannot_be_subscribed_to(api: httpx.AsyncClient) -> None:
    await api.patch(f"{EVENT_TYPES}/card.viewed", json={"archived": True})

    response = await api.post(WEBHOOKS, json=webhook_body(events=["card.viewed"]))

    assert_problem(response, 422, {"events.0"})


async def test_a_wildcard_must_match_a_live_type(api: httpx.AsyncClient) -> None:
    # A typo in a prefix would otherwise be a subscription that silently receives nothing.
    response = await api.post(WEBHOOKS, json=webhook_body(events=["contact.*", "contcat.*"]))

    doc = assert_problem(response, 422, {"events.1"})
    assert "'contcat.*' matches no live event type" in doc["detail"]
    # Only archived types under the prefix: nothing would be received either.
    await api.patch(f"{EVENT_TYPES}/card.viewed", json={"archived": True})
    assert_problem(await api.post(WEBHOOKS, json=webhook_body(events=["card.*"])), 422)
    # On a change too, and the subscription keeps what it had.
    created = await create_webhook(api, events=["*", "contact.*"])
    path = f"{WEBHOOKS}/{created['id']}"
    assert_problem(await api.patch(path, json={"events": ["lead.*", "laed.*"]}), 422, {"events.1"})
    assert (await api.get(path)).json()["events"] == ["*", "contact.*"]
    # A type made under a new prefix makes the prefix good.
    assert (await api.post(EVENT_TYPES, json={"name": "card.flipped"})).status_code == 201
    changed = await api.patch(path, json={"events": ["card.*"]})
    assert changed.status_code == 200, changed.text


async def test_a_type_the_tenant_made_can_be_subscribed_to(api: httpx.AsyncClient) -> None:
    assert (await api.post(EVENT_TYPES, json={"name": "invoice.paid"})).status_code == 201

    created = await create_webhook(api, events=["invoice.paid", "invoice.*"])

    assert created["events"] == ["invoice.paid", "invoice.*"]


async def test_the_blocked_address_is_explained(api: httpx.AsyncClient) -> None:
    response = await api.post(WEBHOOKS, json=webhook_body(url="http://10.0.0.1/x"))

    doc = assert_problem(response, 422, {"url"})
    assert "private" in doc["errors"][0]["message"]


async def test_a_name_that_does_not_resolve_now_is_accepted(api: httpx.AsyncClient) -> None:
    # DNS is judged again at every delivery; a resolver hiccup must not refuse an endpoint.
    created = await create_webhook(api, url="https://hooks.does-not-exist.invalid/x")

    assert created["url"] == "https://hooks.does-not-exist.invalid/x"


# -- change ----------------------------------------------------------------------------------


async def test_patch_changes_fields_and_is_audited(api: httpx.AsyncClient) -> None:
    created = await create_webhook(api)
    path = f"{WEBHOOKS}/{created['id']}"

    response = await api.patch(
        path,
        json={
            "name": "renamed",
            "url": "https://93.184.215.15/new",
            "events": ["lead.*"],
            "isActive": False,
            "timeoutSeconds": 5,
            "retrySchedule": [0, 10],
            "rateLimitPerSecond": 10,
        },
    )

    assert response.status_code == 200, response.text
    changed = response.json()
    assert changed["name"] == "renamed"
    assert changed["url"] == "https://93.184.215.15/new"
    assert changed["events"] == ["lead.*"]
    assert changed["isActive"] is False
    assert changed["timeoutSeconds"] == 5
    assert changed["retrySchedule"] == [0, 10]
    assert changed["rateLimitPerSecond"] == 10
    assert changed["updatedAt"] > created["updatedAt"]
    assert (await api.get(path)).json() == changed
    rows = await audit_rows(api, resource=f"webhook/{created['id']}", action="webhook.update")
    assert rows[0]["diff"]["name"] == {"from": "Contact Notifications", "to": "renamed"}
    assert rows[0]["diff"]["isActive"] == {"from": True, "to": False}
    assert set(rows[0]["diff"]) == {
        "name",
        "url",
        "events",
        "isActive",
        "timeoutSeconds",
        "retrySchedule",
        "rateLimitPerSecond",
    }


async def test_patch_nulls_clear_limits_and_reset_the_schedule(api: httpx.AsyncClient) -> None:
    created = await create_webhook(
        api, rateLimitPerSecond=5, maxConcurrency=2, retrySchedule="seed"
    )

    response = await api.patch(
        f"{WEBHOOKS}/{created['id']}",
        json={"rateLimitPerSecond": None, "maxConcurrency": None, "retrySchedule": None},
    )

    assert response.status_code == 200, response.text
    assert response.json()["rateLimitPerSecond"] is None
    assert response.json()["maxConcurrency"] is None
    assert response.json()["retrySchedule"] == list(DEFAULT_SCHEDULE)


async def test_patch_merges_headers(api: httpx.AsyncClient) -> None:
    created = await create_webhook(
        api, headers={"X-Team": "growth", "Authorization": "Bearer t0k3n", "X-Old": "1"}
    )

    response = await api.patch(
        f"{WEBHOOKS}/{created['id']}",
        json={"headers": {"x-team": "sales", "X-Old": None, "X-New": "2"}},
    )

    assert response.status_code == 200, response.text
    # Authorization was not sent back (it is masked) and is kept as it was.
    assert response.json()["headers"] == {
        "Authorization": "Bearer ***",
        "x-team": "sales",
        "X-New": "2",
    }


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        pytest.param({"url": "http://127.0.0.1/x"}, "url", id="loopback"),
        pytest.param({"url": "gopher://example.com/"}, "url", id="gopher"),
        pytest.param({"events": ["nope.never"]}, "events.0", id="unknown-type"),
        pytest.param({"events": []}, "events", id="no-filters"),
        pytest.param({"headers": {"Content-Type": "text/plain"}}, "headers.Content-Type", id="h"),
        pytest.param({"timeoutSeconds": 31}, "timeoutSeconds", id="timeout"),
        pytest.param({"retrySchedule": "fast"}, "retrySchedule", id="schedule"),
        pytest.param({"name": None}, "name", id="null-name"),
        pytest.param({"url": None}, "url", id="null-url"),
        pytest.param({"events": None}, "events", id="null-events"),
        pytest.param({"headers": None}, "headers", id="null-headers"),
        pytest.param({"timeoutSeconds": None}, "timeoutSeconds", id="null-timeout"),
        pytest.param({"status": "active"}, "status", id="status-not-settable"),
    ],
)
async def test_bad_input_on_patch_is_422_and_changes_nothing(
    api: httpx.AsyncClient, changes: dict[str, Any], field: str
) -> None:
    created = await create_webhook(api)
    created.pop("secret")
    path = f"{WEBHOOKS}/{created['id']}"

    assert_problem(await api.patch(path, json=changes), 422, {field})
    assert (await api.get(path)).json() == created


async def test_a_patch_that_changes_nothing_writes_nothing(api: httpx.AsyncClient) -> None:
    created = await create_webhook(api)
    created.pop("secret")

    again = await api.patch(
        f"{WEBHOOKS}/{created['id']}",
        json={"name": created["name"], "events": created["events"], "timeoutSeconds": 10},
    )

    assert again.json() == created
    rows = await audit_rows(api, resource=f"webhook/{created['id']}")
    assert [r["action"] for r in rows] == ["webhook.create"]


async def test_is_active_true_re_enables_a_disabled_subscription(
    api: httpx.AsyncClient, hub: Hub, admin_key: IssuedKey
) -> None:
    created = await create_webhook(api)
    # What the delivery engine does after too many failures.
    async with hub.store.transaction() as conn:
        current = await subscriptions_store.get(conn, admin_key.key.tenant_id, created["id"])
        assert current is not None
        failing = replace(
            current,
            status=SubscriptionStatus.DISABLED,
            disabled_reason="10 consecutive failed deliveries",
            consecutive_failures=10,
            first_failure_at=datetime.now(UTC) - timedelta(hours=1),
        )
        await subscriptions_store.update(conn, failing)
    disabled = (await api.get(f"{WEBHOOKS}/{created['id']}")).json()
    assert disabled["status"] == "disabled"
    assert disabled["disabledReason"] == "10 consecutive failed deliveries"
    assert (await walk(api, WEBHOOKS, status="disabled"))[0]["id"] == created["id"]

    response = await api.patch(f"{WEBHOOKS}/{created['id']}", json={"isActive": True})

    assert response.status_code == 200, response.text
    enabled = response.json()
    assert enabled["status"] == "active"
    assert enabled["disabledReason"] is None
    assert enabled["consecutiveFailures"] == 0
    rows = await audit_rows(api, resource=f"webhook/{created['id']}", action="webhook.update")
    assert rows[0]["diff"] == {"status": {"from": "disabled", "to": "active"}}


# -- delete ----------------------------------------------------------------------------------


async def test_delete_removes_the_subscription_and_its_secrets(
    api: httpx.AsyncClient, hub: Hub
) -> None:
    created = await create_webhook(api)
    path = f"{WEBHOOKS}/{created['id']}"

    response = await api.delete(path)

    assert response.status_code == 204
    assert_problem(await api.get(path), 404)
    assert_problem(await api.delete(path), 404)
    async with hub.store.read() as conn:
        assert await secrets_store.get_all(conn, f"webhook:{created['id']}") == {}
    rows = await audit_rows(api, resource=f"webhook/{created['id']}")
    assert [r["action"] for r in rows] == ["webhook.delete", "webhook.create"]


# -- secret rotation -------------------------------------------------------------------------


async def test_rotation_keeps_the_old_secret_signing_for_the_grace_period(
    api: httpx.AsyncClient, hub: Hub, admin_key: IssuedKey
) -> None:
    created = await create_webhook(api)
    old = created["secret"]
    before = datetime.now(UTC)

    response = await api.post(f"{WEBHOOKS}/{created['id']}/secret/rotate")

    assert response.status_code == 200, response.text
    rotated = response.json()
    new = rotated["secret"]
    assert new != old
    assert _decoded_length(new) == 32
    ends = datetime.fromisoformat(rotated["previousSecretExpiresAt"])
    assert before + timedelta(hours=24) <= ends <= datetime.now(UTC) + timedelta(hours=24)
    tenant, sub_id = admin_key.key.tenant_id, created["id"]
    active = hub.webhooks.active_secrets
    assert await active(tenant, sub_id, before) == [old, new]
    assert await active(tenant, sub_id, ends - timedelta(seconds=1)) == [old, new]
    assert await active(tenant, sub_id, ends) == [new]
    assert await active(tenant, sub_id, ends + timedelta(days=3)) == [new]
    got = await api.get(f"{WEBHOOKS}/{sub_id}")
    assert got.json()["previousSecretExpiresAt"] == rotated["previousSecretExpiresAt"]
    assert old not in got.text and new not in got.text


async def test_the_grace_period_follows_the_given_clock(hub: Hub, admin_key: IssuedKey) -> None:
    actor = Actor(admin_key.key.tenant_id, "test")
    issued = await hub.webhooks.create(actor, url=PUBLIC_URL, events=["*"])
    sub_id, old = issued.subscription.id, issued.secret
    at = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)

    rotated = await hub.webhooks.rotate_secret(actor, sub_id, grace_hours=1, now=at)

    new = rotated.secret
    assert rotated.subscription.previous_secret_expires_at == at + timedelta(hours=1)
    active = hub.webhooks.active_secrets
    assert await active(actor.tenant_id, sub_id, at) == [old, new]
    assert await active(actor.tenant_id, sub_id, at + timedelta(minutes=59)) == [old, new]
    assert await active(actor.tenant_id, sub_id, at + timedelta(hours=1)) == [new]


async def test_rotation_is_audited_without_secrets(api: httpx.AsyncClient) -> None:
    created = await create_webhook(api)

    rotated = (await api.post(f"{WEBHOOKS}/{created['id']}/secret/rotate?graceHours=2")).json()

    rows = await audit_rows(api, resource=f"webhook/{created['id']}")
    assert [r["action"] for r in rows] == ["webhook.secret.rotate", "webhook.create"]
    assert rows[0]["diff"]["graceHours"] == 2
    assert created["secret"] not in str(rows)
    assert rotated["secret"] not in str(rows)


@pytest.mark.parametrize(
    ("how", "hours"),
    [
        pytest.param({"json": {"graceHours": 2}}, 2, id="body"),
        pytest.param({"params": {"graceHours": 168}}, 168, id="query"),
        pytest.param({"json": {"graceHours": 1}, "params": {"graceHours": 5}}, 1, id="body-wins"),
        pytest.param({"json": {}}, 24, id="empty-body"),
    ],
)
async def test_the_grace_period_can_be_chosen(
    api: httpx.AsyncClient, how: dict[str, Any], hours: int
) -> None:
    created = await create_webhook(api)
    before = datetime.now(UTC)

    response = await api.post(f"{WEBHOOKS}/{created['id']}/secret/rotate", **how)

    assert response.status_code == 200, response.text
    ends = datetime.fromisoformat(response.json()["previousSecretExpiresAt"])
    assert timedelta(hours=hours) <= ends - before < timedelta(hours=hours, minutes=1)


async def test_a_zero_grace_period_retires_the_old_secret_at_once(
    api: httpx.AsyncClient, hub: Hub, admin_key: IssuedKey
) -> None:
    created = await create_webhook(api)

    response = await api.post(f"{WEBHOOKS}/{created['id']}/secret/rotate", json={"graceHours": 0})

    assert response.status_code == 200, response.text
    assert response.json()["previousSecretExpiresAt"] is None
    now = datetime.now(UTC)
    active = await hub.webhooks.active_secrets(admin_key.key.tenant_id, created["id"], now)
    assert active == [response.json()["secret"]]


async def test_rotating_twice_keeps_only_the_last_two(
    api: httpx.AsyncClient, hub: Hub, admin_key: IssuedKey
) -> None:
    created = await create_webhook(api)
    path = f"{WEBHOOKS}/{created['id']}/secret/rotate"

    second = (await api.post(path)).json()["secret"]
    third = (await api.post(path)).json()["secret"]

    now = datetime.now(UTC)
    active = await hub.webhooks.active_secrets(admin_key.key.tenant_id, created["id"], now)
    assert active == [second, third]


@pytest.mark.parametrize(
    "how",
    [
        pytest.param({"json": {"graceHours": 169}}, id="body-169"),
        pytest.param({"json": {"graceHours": -1}}, id="body-negative"),
        pytest.param({"params": {"graceHours": 169}}, id="query-169"),
        pytest.param({"json": {"graceHours": "a day"}}, id="body-text"),
    ],
)
async def test_a_bad_grace_period_is_422(api: httpx.AsyncClient, how: dict[str, Any]) -> None:
    created = await create_webhook(api)

    response = await api.post(f"{WEBHOOKS}/{created['id']}/secret/rotate", **how)

    assert_problem(response, 422, {"graceHours"})


# -- scopes and tenants ----------------------------------------------------------------------


async def test_a_read_key_reads_but_cannot_change(api: httpx.AsyncClient, hub: Hub) -> None:
    created = await create_webhook(api)
    tenant_id = (await hub.access.tenant_named("default")).id
    reader = bearer(await key_for(hub, tenant_id, "read"))
    path = f"{WEBHOOKS}/{created['id']}"

    assert (await api.get(WEBHOOKS, headers=reader)).status_code == 200
    assert (await api.get(path, headers=reader)).status_code == 200
    assert_problem(await api.post(WEBHOOKS, json=webhook_body(), headers=reader), 403)
    assert_problem(await api.patch(path, json={"name": "x"}, headers=reader), 403)
    assert_problem(await api.delete(path, headers=reader), 403)
    assert_problem(await api.post(f"{path}/secret/rotate", headers=reader), 403)
    assert_problem(await api.post(f"{path}/test", headers=reader), 403)


@dataclass
class Tenants:
    api: httpx.AsyncClient
    webhook: dict[str, Any]
    b: dict[str, str]


@pytest.fixture
async def tenants(api: httpx.AsyncClient, hub: Hub) -> Tenants:
    webhook = await create_webhook(api, name="A's hook")
    tenant_b = await hub.access.create_tenant("tenant-b")
    return Tenants(api, webhook, bearer(await key_for(hub, tenant_b.id, "admin")))


ROUTES: list[Any] = [
    pytest.param("GET", "", None, id="get"),
    pytest.param("PATCH", "", {"name": "taken over"}, id="patch"),
    pytest.param("PATCH", "", {"url": "https://93.184.215.99/steal"}, id="patch-url"),
    pytest.param("DELETE", "", None, id="delete"),
    pytest.param("POST", "/secret/rotate", None, id="rotate"),
    pytest.param("POST", "/test", None, id="test"),
]


@pytest.mark.parametrize(("method", "suffix", "body"), ROUTES)
async def test_other_tenants_ids_answer_like_missing_ones(
    tenants: Tenants, method: str, suffix: str, body: Any
) -> None:
    theirs = tenants.webhook["id"]
    before = (await tenants.api.get(f"{WEBHOOKS}/{theirs}")).json()
    a_audit = await audit_rows(tenants.api)

    cross = await tenants.api.request(
        method, f"{WEBHOOKS}/{theirs}{suffix}", json=body, headers=tenants.b
    )
    absent = await tenants.api.request(
        method, f"{WEBHOOKS}/{NO_WEBHOOK}{suffix}", json=body, headers=tenants.b
    )

    assert_problem(cross, 404)
    assert_problem(absent, 404)
    assert cross.json()["detail"].replace(theirs, "<id>") == absent.json()["detail"].replace(
        NO_WEBHOOK, "<id>"
    )
    assert "whsec_" not in cross.text
    assert (await tenants.api.get(f"{WEBHOOKS}/{theirs}")).json() == before
    assert await audit_rows(tenants.api) == a_audit


async def test_lists_show_only_the_own_tenants_subscriptions(tenants: Tenants) -> None:
    made = await tenants.api.post(WEBHOOKS, json=webhook_body(name="B's"), headers=tenants.b)
    assert made.status_code == 201, made.text

    b_list = (await tenants.api.get(WEBHOOKS, headers=tenants.b)).json()["data"]
    a_list = await walk(tenants.api, WEBHOOKS)

    assert [w["id"] for w in b_list] == [made.json()["id"]]
    assert [w["id"] for w in a_list] == [tenants.webhook["id"]]


async def test_filters_are_checked_against_the_own_tenants_types(tenants: Tenants) -> None:
    assert (await tenants.api.post(EVENT_TYPES, json={"name": "invoice.paid"})).status_code == 201

    response = await tenants.api.post(
        WEBHOOKS, json=webhook_body(events=["invoice.paid"]), headers=tenants.b
    )

    assert_problem(response, 422, {"events.0"})
