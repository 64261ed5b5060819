"""Authentication (401 with WWW-Authenticate) and scopes (403), on the real app and store."""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from api_support import (
    API_KEYS,
    AUDIT,
    INTEGRATIONS,
    assert_problem,
    bearer,
    create_integration,
    integration_body,
    key_for,
    snapshot,
)

from isthmus.hub import Hub
from isthmus.services.access import IssuedKey

UNKNOWN_KEY = "isk_" + secrets.token_urlsafe(32)

BAD_HEADERS: list[Any] = [
    pytest.param(None, "missing", id="no-header"),
    pytest.param("", "missing", id="empty-header"),
    pytest.param("Basic YWxpY2U6c2VjcmV0", "Bearer isk_", id="basic-scheme"),
    pytest.param("Bearer", "Bearer isk_", id="bearer-without-token"),
    pytest.param(UNKNOWN_KEY, "Bearer isk_", id="token-without-scheme"),
    pytest.param("Bearer not-an-isthmus-key", "isk_", id="not-isk"),
    pytest.param("Bearer sk_live_0123456789abcdef", "isk_", id="other-vendor-key"),
    pytest.param(f"Bearer {UNKNOWN_KEY}", "not valid", id="unknown-key"),
    pytest.param(f"Bearer {UNKNOWN_KEY[:-1]}", "not valid", id="truncated-key"),
]

#: One route of each kind; every one must refuse a bad credential the same way.
ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", INTEGRATIONS, None),
    ("POST", INTEGRATIONS, integration_body(name="Not allowed")),
    ("GET", f"{INTEGRATIONS}/providers", None),
    ("GET", API_KEYS, None),
    ("POST", API_KEYS, {"scopes": ["admin"]}),
    ("GET", AUDIT, None),
]


def assert_unauthenticated(response: httpx.Response, says: str) -> None:
    doc = assert_problem(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert says in doc["detail"], doc


async def test_bad_credentials_are_401_on_every_route_and_write_nothing(
    client: httpx.AsyncClient, admin_key: IssuedKey, subtests: pytest.Subtests
) -> None:
    for case in BAD_HEADERS:
        authorization, says = case.values
        headers = {} if authorization is None else {"Authorization": authorization}
        for method, path, body in ROUTES:
            with subtests.test(f"{case.id}: {method} {path}"):
                response = await client.request(method, path, json=body, headers=headers)
                assert_unauthenticated(response, says)
                # Rate-limit headers ride on refusals too.
                assert "x-ratelimit-remaining" in response.headers

    client.headers.update(bearer(admin_key.secret))
    integrations, audit = await snapshot(client)
    assert integrations == []
    assert [row["action"] for row in audit] == ["api_key.create"]  # the bootstrap key only
    keys = (await client.get(API_KEYS)).json()["data"]
    assert [k["id"] for k in keys] == [admin_key.key.id]


async def test_the_key_itself_is_not_echoed_in_a_refusal(client: httpx.AsyncClient) -> None:
    response = await client.get(INTEGRATIONS, headers=bearer(UNKNOWN_KEY))

    assert_unauthenticated(response, "not valid")
    assert UNKNOWN_KEY not in response.text


async def test_expired_key_is_401(api: httpx.AsyncClient) -> None:
    expires_at = datetime.now(UTC) + timedelta(seconds=1)
    created = await api.post(
        API_KEYS,
        json={"name": "short-lived", "scopes": ["read"], "expiresAt": expires_at.isoformat()},
    )
    assert created.status_code == 201, created.text
    key = created.json()["key"]

    works = await api.get(INTEGRATIONS, headers=bearer(key))
    assert works.status_code == 200, works.text

    await asyncio.sleep(max(0.0, (expires_at - datetime.now(UTC)).total_seconds()) + 0.1)

    for method, path, body in ROUTES:
        response = await api.request(method, path, json=body, headers=bearer(key))
        assert_unauthenticated(response, "expired")


async def test_revoked_key_is_401(api: httpx.AsyncClient) -> None:
    created = await api.post(API_KEYS, json={"name": "soon revoked", "scopes": ["write"]})
    key, key_id = created.json()["key"], created.json()["id"]
    assert (await api.get(INTEGRATIONS, headers=bearer(key))).status_code == 200

    revoked = await api.delete(f"{API_KEYS}/{key_id}")
    assert revoked.status_code == 200, revoked.text
    before = await snapshot(api)

    for method, path, body in ROUTES:
        response = await api.request(method, path, json=body, headers=bearer(key))
        assert_unauthenticated(response, "revoked")
    assert await snapshot(api) == before


async def test_health_and_docs_need_no_key(client: httpx.AsyncClient) -> None:
    for path in ("/healthz", "/readyz", "/openapi.json", "/api/docs", "/api/redoc"):
        response = await client.get(path)
        assert response.status_code == 200, (path, response.text)


# -- scopes -----------------------------------------------------------------------------------


def _routes(integration_id: str, key_id: str) -> dict[str, tuple[str, str, Any]]:
    one = f"{INTEGRATIONS}/{integration_id}"
    return {
        "list": ("GET", INTEGRATIONS, None),
        "get": ("GET", one, None),
        "providers": ("GET", f"{INTEGRATIONS}/providers", None),
        "create": ("POST", INTEGRATIONS, integration_body(name="Created by scope test")),
        "patch": ("PATCH", one, {"description": "patched"}),
        "disable": ("POST", f"{one}/disable", None),
        "enable": ("POST", f"{one}/enable", None),
        "reveal": ("POST", f"{one}/credentials/reveal", {"field": "apiKey"}),
        "keys-list": ("GET", API_KEYS, None),
        "keys-create": ("POST", API_KEYS, {"name": "made by scope test", "scopes": ["read"]}),
        "keys-revoke": ("DELETE", f"{API_KEYS}/{key_id}", None),
        "audit": ("GET", AUDIT, None),
        "delete": ("DELETE", one, None),
    }


ALLOWED = {
    "read": {"list", "get", "providers"},
    "write": {"list", "get", "providers", "create", "patch", "disable", "enable", "delete"},
    "admin": {
        "list",
        "get",
        "providers",
        "create",
        "patch",
        "disable",
        "enable",
        "delete",
        "reveal",
        "keys-list",
        "keys-create",
        "keys-revoke",
        "audit",
    },
}
NEEDS = {
    "create": "write",
    "patch": "write",
    "disable": "write",
    "enable": "write",
    "delete": "write",
    "reveal": "admin",
    "keys-list": "admin",
    "keys-create": "admin",
    "keys-revoke": "admin",
    "audit": "admin",
}


@pytest.mark.parametrize("scope", ["read", "write", "admin"])
async def test_each_scope_reaches_exactly_its_routes(
    api: httpx.AsyncClient, hub: Hub, admin_key: IssuedKey, scope: str
) -> None:
    integration = await create_integration(api)
    victim = await api.post(API_KEYS, json={"name": "to revoke", "scopes": ["read"]})
    key = await key_for(hub, admin_key.key.tenant_id, scope)

    for name, (method, path, body) in _routes(integration["id"], victim.json()["id"]).items():
        before = await snapshot(api)
        response = await api.request(method, path, json=body, headers=bearer(key))
        if name in ALLOWED[scope]:
            assert response.status_code < 300, (name, response.text)
        else:
            doc = assert_problem(response, 403)
            assert f"lacks the {NEEDS[name]} scope" in doc["detail"], (name, doc)
            assert await snapshot(api) == before, name


async def test_a_key_with_several_scopes_gets_the_widest(
    api: httpx.AsyncClient, hub: Hub, admin_key: IssuedKey
) -> None:
    key = await key_for(hub, admin_key.key.tenant_id, "read", "write")

    created = await api.post(INTEGRATIONS, json=integration_body(), headers=bearer(key))
    audit = await api.get(AUDIT, headers=bearer(key))

    assert created.status_code == 201
    assert_problem(audit, 403)
