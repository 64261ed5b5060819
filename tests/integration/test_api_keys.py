"""API keys over the API: shown once, stored only as a SHA-256 hash, revocable."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from api_support import API_KEYS, INTEGRATIONS, assert_problem, bearer, integration_body, snapshot

from isthmus.hub import Hub
from isthmus.services.access import IssuedKey
from isthmus.store.tables import api_keys

KEY_SHAPE = re.compile(r"isk_[A-Za-z0-9_-]{43}")


async def test_create_shows_the_key_once(api: httpx.AsyncClient, admin_key: IssuedKey) -> None:
    response = await api.post(API_KEYS, json={"name": "CI", "scopes": ["read", "write"]})

    assert response.status_code == 201, response.text
    created = response.json()
    key = created["key"]
    assert KEY_SHAPE.fullmatch(key), key
    assert created["id"].startswith("key_")
    assert created["name"] == "CI"
    assert created["scopes"] == ["read", "write"]
    assert created["prefix"] == key[:12]
    assert created["expiresAt"] is None
    assert created["revokedAt"] is None

    listed = await api.get(API_KEYS)
    assert listed.status_code == 200
    assert key not in listed.text
    rows = {k["id"]: k for k in listed.json()["data"]}
    assert set(rows) == {admin_key.key.id, created["id"]}
    assert "key" not in rows[created["id"]]
    assert rows[created["id"]] == {k: v for k, v in created.items() if k != "key"}


async def test_each_key_is_different(api: httpx.AsyncClient) -> None:
    keys = [(await api.post(API_KEYS, json={"scopes": ["read"]})).json()["key"] for _ in range(3)]

    assert len(set(keys)) == 3


async def test_a_created_key_works_until_revoked(api: httpx.AsyncClient) -> None:
    created = (await api.post(API_KEYS, json={"name": "worker", "scopes": ["write"]})).json()
    key = created["key"]

    made = await api.post(INTEGRATIONS, json=integration_body(), headers=bearer(key))
    assert made.status_code == 201, made.text

    revoked = await api.delete(f"{API_KEYS}/{created['id']}")
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revokedAt"] is not None
    assert "key" not in revoked.json()

    refused = await api.get(INTEGRATIONS, headers=bearer(key))
    doc = assert_problem(refused, 401)
    assert "revoked" in doc["detail"]
    listed = {k["id"]: k for k in (await api.get(API_KEYS)).json()["data"]}
    assert listed[created["id"]]["revokedAt"] == revoked.json()["revokedAt"]


async def test_revoking_twice_keeps_the_first_time_and_one_audit_row(
    api: httpx.AsyncClient,
) -> None:
    created = (await api.post(API_KEYS, json={"scopes": ["read"]})).json()

    first = await api.delete(f"{API_KEYS}/{created['id']}")
    second = await api.delete(f"{API_KEYS}/{created['id']}")

    assert first.status_code == second.status_code == 200
    assert second.json()["revokedAt"] == first.json()["revokedAt"]
    rows = (await api.get("/api/v1/audit", params={"action": "api_key.revoke"})).json()["data"]
    assert len(rows) == 1


async def test_revoking_an_unknown_key_is_404(api: httpx.AsyncClient) -> None:
    assert_problem(await api.delete(f"{API_KEYS}/key_01jzzzzzzzzzzzzzzzzzzzzzzz"), 404)


async def test_expiry_is_kept_and_shown(api: httpx.AsyncClient) -> None:
    expires = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)

    created = await api.post(API_KEYS, json={"scopes": ["read"], "expiresAt": expires.isoformat()})

    assert created.status_code == 201, created.text
    assert datetime.fromisoformat(created.json()["expiresAt"]) == expires
    listed = {k["id"]: k for k in (await api.get(API_KEYS)).json()["data"]}
    assert datetime.fromisoformat(listed[created.json()["id"]]["expiresAt"]) == expires
    assert (await api.get(INTEGRATIONS, headers=bearer(created.json()["key"]))).status_code == 200


async def test_expiry_in_another_time_zone_is_the_same_instant(api: httpx.AsyncClient) -> None:
    created = await api.post(
        API_KEYS, json={"scopes": ["read"], "expiresAt": "2099-01-01T13:00:00+01:00"}
    )

    assert created.status_code == 201, created.text
    noon_utc = datetime(2099, 1, 1, 12, 0, tzinfo=UTC)
    assert datetime.fromisoformat(created.json()["expiresAt"]) == noon_utc
    listed = {k["id"]: k for k in (await api.get(API_KEYS)).json()["data"]}
    assert datetime.fromisoformat(listed[created.json()["id"]]["expiresAt"]) == noon_utc


BAD_KEYS: list[Any] = [
    pytest.param({}, {"scopes"}, id="no-scopes"),
    pytest.param({"scopes": []}, {"scopes"}, id="empty-scopes"),
    pytest.param({"scopes": ["root"]}, {"scopes"}, id="unknown-scope"),
    pytest.param({"scopes": "admin"}, {"scopes"}, id="scopes-a-string"),
    pytest.param({"scopes": [1]}, {"scopes.0"}, id="scope-a-number"),
    pytest.param({"scopes": ["read"], "name": 5}, {"name"}, id="name-a-number"),
    pytest.param({"scopes": ["read"], "name": "n" * 201}, {"name"}, id="name-too-long"),
    pytest.param(
        {"scopes": ["read"], "expiresAt": "2099-01-01T00:00:00"}, {"expiresAt"}, id="naive-expiry"
    ),
    pytest.param(
        {"scopes": ["read"], "expiresAt": "2001-01-01T00:00:00Z"}, {"expiresAt"}, id="past-expiry"
    ),
    pytest.param({"scopes": ["read"], "expiresAt": "soon"}, {"expiresAt"}, id="not-a-time"),
    pytest.param(
        {"scopes": ["read"], "expiresAt": "9999-12-31T23:59:59-05:00"},
        {"expiresAt"},
        id="expiry-beyond-year-9999-in-utc",
    ),
    pytest.param({"scopes": ["read"], "key": "isk_mine"}, {"key"}, id="choosing-the-key"),
    pytest.param({"scopes": ["read"], "name": "ci\x00"}, {"name"}, id="nul-in-name"),
]


async def test_bad_key_requests_are_422_and_create_nothing(
    api: httpx.AsyncClient, subtests: pytest.Subtests
) -> None:
    keys_before = (await api.get(API_KEYS)).json()
    before = await snapshot(api)
    for case in BAD_KEYS:
        body, fields = case.values
        with subtests.test(case.id):
            assert_problem(await api.post(API_KEYS, json=body), 422, fields)

    assert (await api.get(API_KEYS)).json() == keys_before
    assert await snapshot(api) == before


async def test_keys_are_stored_only_as_their_sha256(
    api: httpx.AsyncClient, hub: Hub, admin_key: IssuedKey
) -> None:
    created = (await api.post(API_KEYS, json={"scopes": ["read"]})).json()
    plaintexts = {created["id"]: created["key"], admin_key.key.id: admin_key.secret}

    async with hub.store.read() as conn:
        rows = [dict(r._mapping) for r in await conn.execute(sa.select(api_keys))]

    assert {r["id"] for r in rows} == set(plaintexts)
    for row in rows:
        key = plaintexts[row["id"]]
        assert row["key_hash"] == hashlib.sha256(key.encode()).hexdigest()
        for value in row.values():
            assert key not in str(value)
            assert key[12:] not in str(value)  # not even the part after the shown prefix
