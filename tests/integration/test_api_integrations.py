"""The integrations resource over the real app and store: create, read, list, change, delete."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
import pytest
from api_support import (
    ENDPOINT,
    INTEGRATIONS,
    SECRET,
    SECRET_MASKED,
    assert_problem,
    audit_rows,
    create_integration,
    snapshot,
    walk,
)

DEFAULT_CONFIG = {
    "apiEndpoint": ENDPOINT,
    "method": "GET",
    "headers": {},
    "auth": {"type": "bearer", "headerName": "X-API-Key", "paramName": "api_key"},
    "pagination": {"type": "none"},
    "fieldMapping": {},
}


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value)


# -- create and read --------------------------------------------------------------------------


async def test_create_fills_in_defaults_and_answers_201(api: httpx.AsyncClient) -> None:
    response = await api.post(
        INTEGRATIONS,
        json={
            "name": "Contacts API",
            "provider": "api_endpoint",
            "config": {"apiEndpoint": ENDPOINT},
            "credentials": {"apiKey": SECRET},
        },
    )

    assert response.status_code == 201, response.text
    assert response.headers["content-type"] == "application/json"
    created = response.json()
    assert created["id"].startswith("int_")
    assert created["name"] == "Contacts API"
    assert created["provider"] == "api_endpoint"
    assert created["type"] == "rest_api"  # the provider's category
    assert created["description"] == ""
    assert created["config"] == DEFAULT_CONFIG
    assert created["credentials"] == {"apiKey": SECRET_MASKED}
    assert created["credentialErrors"] == {}
    assert created["enabled"] is True
    assert created["status"] == "configuring"
    assert created["health"] == "unknown"
    assert created["statusMessage"] is None
    assert created["verifiedAt"] is None
    assert _at(created["createdAt"]).tzinfo is not None
    assert created["createdAt"] == created["updatedAt"]


async def test_get_shows_what_create_returned(api: httpx.AsyncClient) -> None:
    created = await create_integration(api, description="CRM contacts", type="crm")

    got = await api.get(f"{INTEGRATIONS}/{created['id']}")

    assert got.status_code == 200
    assert got.json() == created
    assert got.json()["type"] == "crm"
    assert got.json()["description"] == "CRM contacts"


async def test_created_disabled_is_inactive(api: httpx.AsyncClient) -> None:
    created = await create_integration(api, enabled=False)

    assert created["enabled"] is False
    assert created["status"] == "inactive"


async def test_explicit_config_is_kept_and_only_gaps_are_defaulted(api: httpx.AsyncClient) -> None:
    config = {
        "apiEndpoint": ENDPOINT,
        "method": "POST",
        "headers": {"X-Team": "growth"},
        "auth": {"type": "header", "headerName": "X-Token"},
        "pagination": {"type": "cursor", "cursorPath": "meta.next", "cursorParam": "after"},
        "dataSelector": "data.items",
    }
    created = await create_integration(api, config=config)

    assert created["config"] == {
        **config,
        "auth": {"type": "header", "headerName": "X-Token", "paramName": "api_key"},
        "fieldMapping": {},
    }


async def test_get_of_an_unknown_id_is_404(api: httpx.AsyncClient) -> None:
    response = await api.get(f"{INTEGRATIONS}/int_01jzzzzzzzzzzzzzzzzzzzzzzz")

    doc = assert_problem(response, 404)
    assert "int_01jzzzzzzzzzzzzzzzzzzzzzzz" in doc["detail"]


# -- list: filters and cursor pagination --------------------------------------------------------


async def test_list_filters_by_provider_type_and_status(api: httpx.AsyncClient) -> None:
    rest = await create_integration(api, name="rest")
    crm_on = await create_integration(api, name="crm on", type="crm")
    crm_off = await create_integration(api, name="crm off", type="crm", enabled=False)

    async def names(**params: Any) -> list[str]:
        return [i["name"] for i in await walk(api, INTEGRATIONS, **params)]

    assert await names() == [rest["name"], crm_on["name"], crm_off["name"]]
    assert await names(provider="api_endpoint") == ["rest", "crm on", "crm off"]
    assert await names(provider="hubspot") == []
    assert await names(type="crm") == ["crm on", "crm off"]
    assert await names(type="rest_api") == ["rest"]
    assert await names(status="inactive") == ["crm off"]
    assert await names(status="configuring") == ["rest", "crm on"]
    assert await names(status="configuring", type="crm") == ["crm on"]
    assert await names(status="active") == []
    assert await names(type="crm", limit=1) == ["crm on", "crm off"]


BAD_FILTERS: list[tuple[dict[str, Any], str]] = [
    ({"type": "spreadsheet"}, "type"),
    ({"status": "sleeping"}, "status"),
    ({"limit": 0}, "limit"),
    ({"limit": 201}, "limit"),
    ({"limit": "ten"}, "limit"),
]


async def test_list_refuses_bad_filters(api: httpx.AsyncClient, subtests: pytest.Subtests) -> None:
    for params, field in BAD_FILTERS:
        with subtests.test(str(params)):
            assert_problem(await api.get(INTEGRATIONS, params=params), 422, {field})


async def test_cursor_pagination_sees_every_item_once(api: httpx.AsyncClient) -> None:
    created = [(await create_integration(api, name=f"integration {n}"))["id"] for n in range(7)]

    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        response = await api.get(INTEGRATIONS, params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        pages.append([i["id"] for i in page["data"]])
        cursor = page["nextCursor"]
        if cursor is None:
            break
        assert len(pages) < 10

    assert [len(p) for p in pages] == [3, 3, 1]
    seen = [i for page in pages for i in page]
    assert len(seen) == len(set(seen)) == 7
    assert set(seen) == set(created)
    # Newest last: the order the integrations were created in.
    assert seen == created


async def test_bad_cursor_is_422(api: httpx.AsyncClient, subtests: pytest.Subtests) -> None:
    await create_integration(api)

    for cursor in ["!!!not-base64!!!", "Zm9v", "%%%", "a", "aW50X_-_"]:
        with subtests.test(cursor):
            response = await api.get(INTEGRATIONS, params={"cursor": cursor})
            doc = assert_problem(response, 422, {"cursor"})
            assert "cursor" in doc["detail"]


# -- PATCH ------------------------------------------------------------------------------------


async def test_rename_shows_in_a_later_get(api: httpx.AsyncClient) -> None:
    created = await create_integration(api, name="Old name")

    patched = await api.patch(f"{INTEGRATIONS}/{created['id']}", json={"name": "New name"})

    assert patched.status_code == 200, patched.text
    got = (await api.get(f"{INTEGRATIONS}/{created['id']}")).json()
    assert got == patched.json()
    assert got["name"] == "New name"
    assert got["createdAt"] == created["createdAt"]
    assert _at(got["updatedAt"]) > _at(created["updatedAt"])
    unchanged = {k: v for k, v in got.items() if k not in ("name", "updatedAt")}
    assert unchanged == {k: v for k, v in created.items() if k not in ("name", "updatedAt")}


async def test_patch_changes_description_and_type(api: httpx.AsyncClient) -> None:
    created = await create_integration(api)

    patched = await api.patch(
        f"{INTEGRATIONS}/{created['id']}", json={"description": "the CRM", "type": "crm"}
    )

    assert patched.status_code == 200, patched.text
    got = (await api.get(f"{INTEGRATIONS}/{created['id']}")).json()
    assert (got["description"], got["type"]) == ("the CRM", "crm")


async def test_patch_replaces_the_whole_config(api: httpx.AsyncClient) -> None:
    created = await create_integration(
        api,
        config={
            "apiEndpoint": ENDPOINT,
            "headers": {"X-Team": "growth"},
            "pagination": {"type": "page", "pageParam": "p"},
        },
    )

    new_endpoint = "https://api.example.com/v2/people"
    patched = await api.patch(
        f"{INTEGRATIONS}/{created['id']}", json={"config": {"apiEndpoint": new_endpoint}}
    )

    assert patched.status_code == 200, patched.text
    got = (await api.get(f"{INTEGRATIONS}/{created['id']}")).json()
    # Replaced, not merged: the old headers and pagination are gone, defaults are back.
    assert got["config"] == {**DEFAULT_CONFIG, "apiEndpoint": new_endpoint}
    assert got["credentials"] == {"apiKey": SECRET_MASKED}


async def test_patch_merges_credentials(api: httpx.AsyncClient) -> None:
    created = await create_integration(
        api,
        config={"apiEndpoint": ENDPOINT, "auth": {"type": "basic"}},
        credentials={"username": "alice", "password": "correct-horse-battery-staple"},
    )
    path = f"{INTEGRATIONS}/{created['id']}"

    patched = await api.patch(path, json={"credentials": {"password": "another-long-password"}})

    assert patched.status_code == 200, patched.text
    got = (await api.get(path)).json()
    assert set(got["credentials"]) == {"username", "password"}
    assert got["credentials"]["password"] == "anot...word"
    revealed = await api.post(f"{path}/credentials/reveal", json={"field": "password"})
    assert revealed.json()["value"] == "another-long-password"
    username = await api.post(f"{path}/credentials/reveal", json={"field": "username"})
    assert username.json()["value"] == "alice"


async def test_patch_null_credential_removes_it(api: httpx.AsyncClient) -> None:
    created = await create_integration(api, credentials={"apiKey": SECRET, "clientId": "client-1"})
    path = f"{INTEGRATIONS}/{created['id']}"

    patched = await api.patch(path, json={"credentials": {"clientId": None}})

    assert patched.status_code == 200, patched.text
    got = (await api.get(path)).json()
    assert got["credentials"] == {"apiKey": SECRET_MASKED}
    gone = await api.post(f"{path}/credentials/reveal", json={"field": "clientId"})
    assert_problem(gone, 404)


async def test_patch_can_switch_auth_type_with_its_credentials(api: httpx.AsyncClient) -> None:
    created = await create_integration(api)
    path = f"{INTEGRATIONS}/{created['id']}"

    patched = await api.patch(
        path,
        json={
            "config": {"apiEndpoint": ENDPOINT, "auth": {"type": "basic"}},
            "credentials": {"apiKey": None, "username": "bob", "password": "p" * 20},
        },
    )

    assert patched.status_code == 200, patched.text
    got = (await api.get(path)).json()
    assert got["config"]["auth"]["type"] == "basic"
    assert set(got["credentials"]) == {"username", "password"}
    assert got["credentials"]["password"] == "pppp...pppp"


async def test_patch_removing_a_required_credential_is_422_and_keeps_it(
    api: httpx.AsyncClient,
) -> None:
    created = await create_integration(api)
    path = f"{INTEGRATIONS}/{created['id']}"
    before = await snapshot(api)

    response = await api.patch(path, json={"credentials": {"apiKey": None}})

    assert_problem(response, 422, {"credentials.apiKey"})
    assert await snapshot(api) == before
    assert (await api.post(f"{path}/credentials/reveal", json={"field": "apiKey"})).json()[
        "value"
    ] == SECRET


async def test_patch_to_an_auth_type_without_its_credentials_is_422(
    api: httpx.AsyncClient,
) -> None:
    created = await create_integration(api)
    before = await snapshot(api)

    response = await api.patch(
        f"{INTEGRATIONS}/{created['id']}",
        json={"config": {"apiEndpoint": ENDPOINT, "auth": {"type": "basic"}}},
    )

    doc = assert_problem(response, 422, {"credentials.username", "credentials.password"})
    assert "basic" in doc["errors"][0]["message"]
    assert await snapshot(api) == before


async def test_patch_null_for_a_non_nullable_field_is_422(
    api: httpx.AsyncClient, subtests: pytest.Subtests
) -> None:
    created = await create_integration(api)
    before = await snapshot(api)

    for field in ["name", "type", "description", "config", "credentials", "enabled"]:
        with subtests.test(field):
            response = await api.patch(f"{INTEGRATIONS}/{created['id']}", json={field: None})

            doc = assert_problem(response, 422, {field})
            assert field in doc["detail"]
    both = await api.patch(f"{INTEGRATIONS}/{created['id']}", json={"name": None, "type": None})
    assert_problem(both, 422, {"name", "type"})
    assert await snapshot(api) == before


async def test_empty_patch_changes_nothing_and_writes_no_audit_row(api: httpx.AsyncClient) -> None:
    created = await create_integration(api)
    before = await snapshot(api)

    response = await api.patch(f"{INTEGRATIONS}/{created['id']}", json={})

    assert response.status_code == 200, response.text
    assert response.json() == created
    assert await snapshot(api) == before


async def test_patch_of_an_unknown_id_is_404(api: httpx.AsyncClient) -> None:
    before = await snapshot(api)

    response = await api.patch(f"{INTEGRATIONS}/int_01jzzzzzzzzzzzzzzzzzzzzzzz", json={"name": "x"})

    assert_problem(response, 404)
    assert await snapshot(api) == before


# -- DELETE -----------------------------------------------------------------------------------


async def test_delete_answers_204_then_the_integration_and_its_secrets_are_gone(
    api: httpx.AsyncClient,
) -> None:
    kept = await create_integration(api, name="kept")
    doomed = await create_integration(api, name="doomed")
    path = f"{INTEGRATIONS}/{doomed['id']}"

    response = await api.delete(path)

    assert response.status_code == 204
    assert response.content == b""
    assert_problem(await api.get(path), 404)
    assert_problem(await api.post(f"{path}/credentials/reveal", json={"field": "apiKey"}), 404)
    assert_problem(await api.delete(path), 404)
    assert [i["id"] for i in await walk(api, INTEGRATIONS)] == [kept["id"]]
    # The other integration's secret is untouched.
    revealed = await api.post(
        f"{INTEGRATIONS}/{kept['id']}/credentials/reveal", json={"field": "apiKey"}
    )
    assert revealed.json()["value"] == SECRET


async def test_a_deleted_name_can_be_used_again_without_old_secrets(
    api: httpx.AsyncClient,
) -> None:
    first = await create_integration(api, credentials={"apiKey": SECRET, "clientId": "old-client"})
    assert (await api.delete(f"{INTEGRATIONS}/{first['id']}")).status_code == 204

    second = await create_integration(api, credentials={"apiKey": "a-brand-new-api-key-value"})

    assert second["id"] != first["id"]
    assert second["credentials"] == {"apiKey": "a-br...alue"}
    stale = await api.post(
        f"{INTEGRATIONS}/{second['id']}/credentials/reveal", json={"field": "clientId"}
    )
    assert_problem(stale, 404)


# -- enable / disable -------------------------------------------------------------------------


async def test_disable_then_enable(api: httpx.AsyncClient) -> None:
    created = await create_integration(api)
    path = f"{INTEGRATIONS}/{created['id']}"

    disabled = await api.post(f"{path}/disable")
    assert disabled.status_code == 200, disabled.text
    assert (disabled.json()["enabled"], disabled.json()["status"]) == (False, "inactive")
    assert (await api.get(path)).json()["status"] == "inactive"
    # Disabling twice is harmless.
    again = await api.post(f"{path}/disable")
    assert (again.status_code, again.json()["status"]) == (200, "inactive")

    enabled = await api.post(f"{path}/enable")
    assert enabled.status_code == 200, enabled.text
    assert (enabled.json()["enabled"], enabled.json()["status"]) == (True, "configuring")
    got = (await api.get(path)).json()
    assert (got["enabled"], got["status"], got["health"]) == (True, "configuring", "unknown")


async def test_enable_and_disable_of_an_unknown_id_is_404(api: httpx.AsyncClient) -> None:
    for action in ("enable", "disable"):
        response = await api.post(f"{INTEGRATIONS}/int_01jzzzzzzzzzzzzzzzzzzzzzzz/{action}")
        assert_problem(response, 404)


async def test_patch_enabled_false_is_the_same_as_disable(api: httpx.AsyncClient) -> None:
    created = await create_integration(api)

    patched = await api.patch(f"{INTEGRATIONS}/{created['id']}", json={"enabled": False})

    assert (patched.json()["enabled"], patched.json()["status"]) == (False, "inactive")
    rows = await audit_rows(api, action="integration.update")
    assert rows[0]["diff"]["status"] == {"from": "configuring", "to": "inactive"}


# -- the provider catalog -----------------------------------------------------------------------


async def test_providers_catalog_describes_api_endpoint(api: httpx.AsyncClient) -> None:
    response = await api.get(f"{INTEGRATIONS}/providers")

    assert response.status_code == 200, response.text
    providers = {p["name"]: p for p in response.json()["data"]}
    assert "api_endpoint" in providers
    generic = providers["api_endpoint"]
    assert generic["displayName"] == "Generic REST API"
    assert generic["category"] == "rest_api"
    assert generic["description"]
    credentials = {c["name"]: c for c in generic["credentials"]}
    assert set(credentials) == {"apiKey", "username", "password", "clientId", "clientSecret"}
    for field in credentials.values():
        assert set(field) == {"name", "label", "description", "secret"}
        assert field["label"]
    assert credentials["apiKey"]["secret"] is True
    assert credentials["password"]["secret"] is True
    assert credentials["clientSecret"]["secret"] is True
    assert generic["defaultAuthType"] == "bearer"
    assert generic["authTypes"]["basic"] == ["username", "password"]
    schema = generic["configSchema"]
    assert schema["type"] == "object"
    assert schema["required"] == ["apiEndpoint"]
    assert schema["properties"]["apiEndpoint"]["type"] == "string"


async def test_providers_catalog_needs_a_key(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get(f"{INTEGRATIONS}/providers"), 401)
