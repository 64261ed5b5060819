"""Tenant isolation: another tenant's ids answer exactly like ids that do not exist."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from api_support import (
    API_KEYS,
    AUDIT,
    INTEGRATIONS,
    SECRET,
    assert_problem,
    audit_rows,
    bearer,
    create_integration,
    key_for,
    snapshot,
    walk,
)

from isthmus.hub import Hub
from isthmus.services.access import IssuedKey

#: Well-formed ids that were never issued.
NO_INTEGRATION = "int_01jzzzzzzzzzzzzzzzzzzzzzzz"
NO_KEY = "key_01jzzzzzzzzzzzzzzzzzzzzzzz"


@dataclass
class Tenants:
    """Tenant A (``default``, the ``api`` fixture's) with a row of each kind; tenant B's key."""

    api: httpx.AsyncClient
    integration: dict[str, Any]
    a_key_id: str
    b_key: str

    async def as_b(self, method: str, path: str, body: Any = None, **params: str) -> httpx.Response:
        return await self.api.request(
            method, path, json=body, params=params, headers=bearer(self.b_key)
        )


@pytest.fixture
async def tenants(api: httpx.AsyncClient, hub: Hub) -> Tenants:
    integration = await create_integration(api, name="A's CRM")
    a_key = await api.post(API_KEYS, json={"name": "A's CI", "scopes": ["read"]})
    tenant_b = await hub.access.create_tenant("tenant-b")
    b_key = await key_for(hub, tenant_b.id, "admin")
    return Tenants(api, integration, a_key.json()["id"], b_key)


# (method, path template, body); {id} is an integration id, {key} an API key id.
ROUTES: list[Any] = [
    pytest.param("GET", "/api/v1/integrations/{id}", None, id="get"),
    pytest.param("PATCH", "/api/v1/integrations/{id}", {"name": "taken over"}, id="patch"),
    pytest.param(
        "PATCH",
        "/api/v1/integrations/{id}",
        {"credentials": {"apiKey": "sk_live_attacker_controlled_value"}},
        id="patch-credentials",
    ),
    pytest.param("DELETE", "/api/v1/integrations/{id}", None, id="delete"),
    pytest.param("POST", "/api/v1/integrations/{id}/enable", None, id="enable"),
    pytest.param("POST", "/api/v1/integrations/{id}/disable", None, id="disable"),
    pytest.param(
        "POST", "/api/v1/integrations/{id}/credentials/reveal", {"field": "apiKey"}, id="reveal"
    ),
    pytest.param("DELETE", "/api/v1/api-keys/{key}", None, id="revoke-key"),
]


def _shape(response: httpx.Response, ident: str) -> tuple[Any, ...]:
    """Everything a client sees of a refusal, with the id it asked for blanked out."""
    doc = response.json()
    return (
        response.status_code,
        response.headers["content-type"],
        sorted(doc),
        {k: v.replace(ident, "<id>") if isinstance(v, str) else v for k, v in doc.items()},
    )


@pytest.mark.parametrize(("method", "template", "body"), ROUTES)
async def test_other_tenants_ids_answer_like_missing_ones(
    tenants: Tenants, method: str, template: str, body: Any
) -> None:
    theirs = template.format(id=tenants.integration["id"], key=tenants.a_key_id)
    missing = template.format(id=NO_INTEGRATION, key=NO_KEY)
    their_id = tenants.integration["id"] if "{id}" in template else tenants.a_key_id
    missing_id = NO_INTEGRATION if "{id}" in template else NO_KEY
    a_before = await snapshot(tenants.api)
    a_keys_before = (await tenants.api.get(API_KEYS)).json()

    cross = await tenants.as_b(method, theirs, body)
    absent = await tenants.as_b(method, missing, body)

    assert_problem(cross, 404)
    assert_problem(absent, 404)
    assert _shape(cross, their_id) == _shape(absent, missing_id)
    assert SECRET not in cross.text
    # Tenant A sees no change at all: same rows, same audit, same keys.
    assert await snapshot(tenants.api) == a_before
    assert (await tenants.api.get(API_KEYS)).json() == a_keys_before


async def test_lists_show_only_the_own_tenants_rows(tenants: Tenants) -> None:
    b_made = await tenants.as_b(
        "POST",
        INTEGRATIONS,
        {
            "name": "A's CRM",  # names are unique per tenant only
            "provider": "api_endpoint",
            "config": {"apiEndpoint": "https://b.example.com/api"},
            "credentials": {"apiKey": "b-tenant-secret-0123456789"},
        },
    )
    assert b_made.status_code == 201, b_made.text

    b_list = await tenants.as_b("GET", INTEGRATIONS)
    a_list = await walk(tenants.api, INTEGRATIONS)

    assert [i["id"] for i in b_list.json()["data"]] == [b_made.json()["id"]]
    assert [i["id"] for i in a_list] == [tenants.integration["id"]]
    for params in ({"provider": "api_endpoint"}, {"type": "rest_api"}, {"status": "configuring"}):
        filtered = await tenants.as_b("GET", INTEGRATIONS, **params)
        assert [i["id"] for i in filtered.json()["data"]] == [b_made.json()["id"]]


async def test_audit_is_per_tenant(tenants: Tenants, admin_key: IssuedKey) -> None:
    b_made = await tenants.as_b(
        "POST",
        INTEGRATIONS,
        {
            "name": "B's API",
            "provider": "api_endpoint",
            "config": {"apiEndpoint": "https://b.example.com/api"},
            "credentials": {"apiKey": "b-tenant-secret-0123456789"},
        },
    )
    b_id = b_made.json()["id"]

    b_rows = (await tenants.as_b("GET", AUDIT)).json()["data"]
    a_rows = await audit_rows(tenants.api)

    a_resources = {row["resourceId"] for row in a_rows}
    b_resources = {row["resourceId"] for row in b_rows}
    assert tenants.integration["id"] in a_resources
    assert tenants.integration["id"] not in b_resources
    assert tenants.a_key_id not in b_resources
    assert b_id in b_resources
    assert b_id not in a_resources
    assert admin_key.key.id not in {row["actor"] for row in b_rows}
    # Even asked by id, A's resource is not in B's log.
    by_id = await tenants.as_b("GET", AUDIT, resource=f"integration/{tenants.integration['id']}")
    assert by_id.json()["data"] == []


async def test_key_lists_are_per_tenant(tenants: Tenants, admin_key: IssuedKey) -> None:
    b_keys = {k["id"] for k in (await tenants.as_b("GET", API_KEYS)).json()["data"]}
    a_keys = {k["id"] for k in (await tenants.api.get(API_KEYS)).json()["data"]}

    assert a_keys == {admin_key.key.id, tenants.a_key_id}
    assert len(b_keys) == 1
    assert not b_keys & a_keys


async def test_a_key_made_by_tenant_b_belongs_to_tenant_b(tenants: Tenants) -> None:
    made = await tenants.as_b("POST", API_KEYS, {"name": "B's reader", "scopes": ["read"]})
    assert made.status_code == 201, made.text
    b_reader = made.json()["key"]

    seen = await tenants.api.get(INTEGRATIONS, headers=bearer(b_reader))

    assert seen.status_code == 200
    assert seen.json()["data"] == []
    a_keys = {k["id"] for k in (await tenants.api.get(API_KEYS)).json()["data"]}
    assert made.json()["id"] not in a_keys
