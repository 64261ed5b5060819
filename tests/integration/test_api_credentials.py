"""Credentials: masked in every response, revealed only by an audited admin call."""

from __future__ import annotations

import httpx
import pytest
from api_support import (
    ENDPOINT,
    FULL_MASK,
    INTEGRATIONS,
    SECRET,
    SECRET_MASKED,
    assert_problem,
    audit_rows,
    bearer,
    create_integration,
    key_for,
    snapshot,
)

from isthmus.hub import Hub
from isthmus.services.access import IssuedKey

PASSWORD = "correct-horse-battery-staple"
SHORT = "hunter2"


MASKS = [
    (SECRET, SECRET_MASKED),
    ("0123456789abcdef", "0123...cdef"),  # 16 characters: the shortest shown in part
    ("0123456789abcde", FULL_MASK),  # 15: fully masked
    (SHORT, FULL_MASK),
    ("x", FULL_MASK),
]


async def test_mask_shows_at_most_the_first_and_last_four(
    api: httpx.AsyncClient, subtests: pytest.Subtests
) -> None:
    for n, (value, masked) in enumerate(MASKS):
        with subtests.test(value):
            created = await create_integration(api, name=f"mask {n}", credentials={"apiKey": value})

            assert created["credentials"] == {"apiKey": masked}
            got = await api.get(f"{INTEGRATIONS}/{created['id']}")
            assert got.json()["credentials"] == {"apiKey": masked}
            if len(value) > 8:
                assert value not in got.text


async def test_secrets_are_masked_in_every_response(api: httpx.AsyncClient) -> None:
    texts: list[str] = []

    def keep(response: httpx.Response) -> httpx.Response:
        assert response.status_code < 300, response.text
        texts.append(response.text)
        return response

    created = keep(
        await api.post(
            INTEGRATIONS,
            json={
                "name": "Basic",
                "provider": "api_endpoint",
                "config": {"apiEndpoint": ENDPOINT, "auth": {"type": "basic"}},
                "credentials": {"username": "alice", "password": PASSWORD, "apiKey": SHORT},
            },
        )
    ).json()
    path = f"{INTEGRATIONS}/{created['id']}"
    expected = {"username": FULL_MASK, "password": "corr...aple", "apiKey": FULL_MASK}
    assert created["credentials"] == expected

    assert keep(await api.get(path)).json()["credentials"] == expected
    listed = keep(await api.get(INTEGRATIONS)).json()["data"]
    assert [i["credentials"] for i in listed] == [expected]
    assert keep(await api.patch(path, json={"name": "Renamed"})).json()["credentials"] == expected
    assert keep(await api.post(f"{path}/disable")).json()["credentials"] == expected
    assert keep(await api.post(f"{path}/enable")).json()["credentials"] == expected

    new_password = "a-new-password-0123456789"
    patched = keep(await api.patch(path, json={"credentials": {"password": new_password}}))
    assert patched.json()["credentials"]["password"] == "a-ne...6789"

    audit = await api.get("/api/v1/audit")
    texts.append(audit.text)
    for text in texts:
        for clear in (PASSWORD, SHORT, new_password):
            assert clear not in text


async def test_reveal_returns_the_clear_value_and_is_audited(
    api: httpx.AsyncClient, admin_key: IssuedKey
) -> None:
    created = await create_integration(api)
    path = f"{INTEGRATIONS}/{created['id']}/credentials/reveal"

    revealed = await api.post(path, json={"field": "apiKey"})

    assert revealed.status_code == 200, revealed.text
    assert revealed.json() == {"field": "apiKey", "value": SECRET}
    rows = await audit_rows(api, action="integration.credentials.reveal")
    assert len(rows) == 1
    row = rows[0]
    assert row["actor"] == admin_key.key.id
    assert (row["resourceType"], row["resourceId"]) == ("integration", created["id"])
    assert row["clientIp"] == "127.0.0.1"
    assert row["diff"] == {"field": "apiKey"}


@pytest.mark.parametrize("scope", ["read", "write"])
async def test_reveal_needs_the_admin_scope(
    api: httpx.AsyncClient, hub: Hub, admin_key: IssuedKey, scope: str
) -> None:
    created = await create_integration(api)
    key = await key_for(hub, admin_key.key.tenant_id, scope)
    before = await snapshot(api)

    response = await api.post(
        f"{INTEGRATIONS}/{created['id']}/credentials/reveal",
        json={"field": "apiKey"},
        headers=bearer(key),
    )

    doc = assert_problem(response, 403)
    assert "admin" in doc["detail"]
    assert SECRET not in response.text
    assert await snapshot(api) == before  # no reveal row


async def test_revealing_a_field_that_is_not_stored_is_404(api: httpx.AsyncClient) -> None:
    created = await create_integration(api)
    before = await snapshot(api)

    response = await api.post(
        f"{INTEGRATIONS}/{created['id']}/credentials/reveal", json={"field": "password"}
    )

    doc = assert_problem(response, 404)
    assert "'password'" in doc["detail"]
    assert "apiKey" in doc["detail"]  # says what is stored
    assert SECRET not in response.text
    assert await snapshot(api) == before


async def test_revealing_a_field_the_provider_does_not_know_is_404(
    api: httpx.AsyncClient,
) -> None:
    created = await create_integration(api)

    response = await api.post(
        f"{INTEGRATIONS}/{created['id']}/credentials/reveal", json={"field": "bogus"}
    )

    assert "'bogus'" in assert_problem(response, 404)["detail"]


async def test_reveal_refuses_a_bad_body(api: httpx.AsyncClient, subtests: pytest.Subtests) -> None:
    created = await create_integration(api)
    before = await snapshot(api)
    bad: list[tuple[dict[str, object], set[str]]] = [
        ({}, {"field"}),
        ({"field": ""}, {"field"}),
        ({"field": 5}, {"field"}),
        ({"field": "apiKey", "x": "y"}, {"x"}),
    ]

    for body, fields in bad:
        with subtests.test(str(body)):
            response = await api.post(
                f"{INTEGRATIONS}/{created['id']}/credentials/reveal", json=body
            )
            assert_problem(response, 422, fields)
            assert SECRET not in response.text
    assert await snapshot(api) == before  # no reveal was audited


async def test_reveal_after_a_credential_change_gives_the_new_value(
    api: httpx.AsyncClient,
) -> None:
    created = await create_integration(api)
    path = f"{INTEGRATIONS}/{created['id']}"
    rotated = "sk_live_rotated_value_9876543210"

    await api.patch(path, json={"credentials": {"apiKey": rotated}})

    revealed = await api.post(f"{path}/credentials/reveal", json={"field": "apiKey"})
    assert revealed.json()["value"] == rotated
