"""Helpers for the REST API tests (``test_api_*.py``): bodies, problem checks, snapshots.

Everything here talks to the API as a client would; nothing reads the store behind its back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from isthmus.api.app import create_app
from isthmus.config import Settings
from isthmus.domain.auth import Actor
from isthmus.hub import Hub

PROBLEM_JSON = "application/problem+json"
INTEGRATIONS = "/api/v1/integrations"
API_KEYS = "/api/v1/api-keys"
AUDIT = "/api/v1/audit"

#: A long secret: masked as its first and last four characters.
SECRET = "sk_live_0123456789abcdefWXYZ"
SECRET_MASKED = "sk_l...WXYZ"
FULL_MASK = "********"
ENDPOINT = "https://api.example.com/v1/contacts"

#: What an error body must never contain: stack traces, driver and library internals.
LEAKS = ("Traceback", 'File "', "site-packages", "sqlalchemy", "asyncpg", "aiosqlite", "pydantic")


@asynccontextmanager
async def app_client(
    settings: Settings, hub: Hub, *, key: str | None = None, **overrides: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a real app over ``hub``, built from ``settings`` changed by ``overrides``."""
    app = create_app(settings.model_copy(update=overrides), hub)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50001))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        if key is not None:
            client.headers.update(bearer(key))
        yield client


#: For tests that run a whole table of cases against one app: room for all their requests.
ROOMY = {"rate_limit": "100000/minute", "rate_limit_ip": "100000/minute"}


def integration_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "Contacts API",
        "provider": "api_endpoint",
        "config": {"apiEndpoint": ENDPOINT},
        "credentials": {"apiKey": SECRET},
    }
    body.update(overrides)
    return body


async def create_integration(api: httpx.AsyncClient, **overrides: Any) -> dict[str, Any]:
    response = await api.post(INTEGRATIONS, json=integration_body(**overrides))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def assert_problem(
    response: httpx.Response, status: int, fields: set[str] | None = None
) -> dict[str, Any]:
    """An RFC 9457 problem with ``status``; on 422, ``fields`` are exactly the fields named."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    doc: dict[str, Any] = response.json()
    assert doc["status"] == status
    for member in ("type", "title", "detail"):
        assert isinstance(doc[member], str) and doc[member], (member, doc)
    for leak in LEAKS:
        assert leak not in response.text, (leak, response.text)
    if status == 422:
        errors = doc["errors"]
        assert errors, doc
        for error in errors:
            assert set(error) == {"field", "message"}
            assert isinstance(error["message"], str) and error["message"]
        if fields is not None:
            assert {e["field"] for e in errors} == fields, errors
    else:
        assert fields is None, "field errors only come with 422"
    return doc


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def key_for(hub: Hub, tenant_id: str, *scopes: str) -> str:
    """A fresh API key of ``tenant_id`` with ``scopes``, issued as the CLI would."""
    issued = await hub.access.create_key(Actor(tenant_id, "test"), "test", list(scopes))
    return issued.secret


async def walk(api: httpx.AsyncClient, path: str, **params: Any) -> list[dict[str, Any]]:
    """Every item of a cursor-paginated list, page after page."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(100):
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = await api.get(path, params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        items.extend(page["data"])
        cursor = page["nextCursor"]
        if cursor is None:
            return items
    raise AssertionError("pagination does not end")


async def audit_rows(api: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    return await walk(api, AUDIT, limit=200, **params)


async def snapshot(api: httpx.AsyncClient) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """What a client can see of the tenant's state: every integration and every audit row."""
    return await walk(api, INTEGRATIONS, limit=200), await audit_rows(api)
