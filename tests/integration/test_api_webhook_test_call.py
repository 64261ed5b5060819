"""``POST /api/v1/webhooks/{id}/test`` against real local receivers.

The receiver listens on 127.0.0.1, so subscriptions that reach it are made through a hub whose
settings allowlist 127.0.0.0/8 (``local_api``), over the same store as the default hub
(``api``, no allowlist), which must refuse to call it: the receiver counts every request, so
"refused" means it received none.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from webhook_support import WEBHOOKS, Receiver, create_webhook

from isthmus import __version__
from isthmus.services.access import IssuedKey


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def test_a_reachable_endpoint_gets_a_verifiable_signed_event(
    local_api: httpx.AsyncClient, receiver: Receiver, admin_key: IssuedKey
) -> None:
    created = await create_webhook(local_api, url=receiver.url("/ok"), headers={"X-Team": "a"})
    receiver.secrets = [created["secret"]]

    response = await local_api.post(f"{WEBHOOKS}/{created['id']}/test")

    assert response.status_code == 200, response.text
    result = response.json()
    assert result["success"] is True
    assert result["statusCode"] == 200
    assert result["latencyMs"] > 0
    assert result["error"] is None
    assert len(receiver.received) == 1
    got = receiver.received[0]
    assert got.standard_ok == [created["secret"]]  # the official standardwebhooks library
    assert got.hex_ok == [created["secret"]]  # X-Webhook-Signature: sha256=<hex>
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["User-Agent"] == f"isthmus/{__version__}"
    assert got.headers["X-Webhook-Id"] == created["id"]
    assert got.headers["X-Webhook-Event"] == "webhook.test"
    assert got.headers["X-Team"] == "a"
    body = json.loads(got.body)
    assert list(body) == ["event", "timestamp", "tenantId", "data"]
    assert body["event"] == "webhook.test"
    assert body["tenantId"] == admin_key.key.tenant_id
    assert body["data"] == {"test": True}
    sent_at = datetime.fromisoformat(body["timestamp"])
    assert abs((datetime.now(UTC) - sent_at).total_seconds()) < 60


async def test_during_a_rotation_both_secrets_verify(
    local_api: httpx.AsyncClient, receiver: Receiver
) -> None:
    created = await create_webhook(local_api, url=receiver.url("/ok"))
    old = created["secret"]
    new = (await local_api.post(f"{WEBHOOKS}/{created['id']}/secret/rotate")).json()["secret"]
    receiver.secrets = [old, new]

    result = (await local_api.post(f"{WEBHOOKS}/{created['id']}/test")).json()

    assert result["success"] is True
    got = receiver.received[0]
    assert got.standard_ok == [old, new]
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    assert got.hex_ok == [new]  # the hex signature is the newest secret's


async def test_a_failing_endpoint_is_a_result_not_an_error(
    local_api: httpx.AsyncClient, receiver: Receiver
) -> None:
    created = await create_webhook(local_api, url=receiver.url("/fail"))

    response = await local_api.post(f"{WEBHOOKS}/{created['id']}/test")

    assert response.status_code == 200, response.text
    result = response.json()
    assert result["success"] is False
    assert result["statusCode"] == 500
    assert result["error"] == "unavailable"
    assert "500" in result["errorMessage"]
    assert result["latencyMs"] > 0
    assert len(receiver.received) == 1


async def test_a_closed_port_is_refused(local_api: httpx.AsyncClient) -> None:
    with socket.socket() as sock:  # a port nothing listens on once this closes
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    created = await create_webhook(local_api, url=f"http://127.0.0.1:{port}/hook")

    result = (await local_api.post(f"{WEBHOOKS}/{created['id']}/test")).json()

    assert result["success"] is False
    assert result["statusCode"] is None
    assert result["error"] == "refused"


async def test_a_blocked_address_is_never_called(
    api: httpx.AsyncClient, local_api: httpx.AsyncClient, receiver: Receiver
) -> None:
    # Made where loopback is allowed; tested by the default hub, where it is not (as if the
    # allowlist had been removed since, or the name had moved to a private address).
    created = await create_webhook(local_api, url=receiver.url("/ok"))

    response = await api.post(f"{WEBHOOKS}/{created['id']}/test")

    assert response.status_code == 200, response.text
    result = response.json()
    assert result["success"] is False
    assert result["statusCode"] is None
    assert result["error"] == "blocked"
    assert "loopback" in result["errorMessage"]
    assert receiver.received == []


async def test_an_inactive_subscription_can_still_be_tested(
    local_api: httpx.AsyncClient, receiver: Receiver
) -> None:
    created = await create_webhook(local_api, url=receiver.url("/ok"), isActive=False)

    result = (await local_api.post(f"{WEBHOOKS}/{created['id']}/test")).json()

    assert result["success"] is True
    assert len(receiver.received) == 1
