"""``POST /api/v1/integrations/{id}/test`` and ``POST /api/v1/integrations/test`` against a
real local contacts API.

The API listens on 127.0.0.1, so integrations that reach it are tested through a hub whose
settings allowlist 127.0.0.0/8 (``local_api``); the default hub (``api``) must refuse to call
it, and the server counts every request it gets.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiohttp import web
from api_support import bearer, create_integration, key_for
from webhook_support import LocalServer

from isthmus.hub import Hub

API_KEY = "sk_test_4f9a8b7c6d5e4f3a2b1c"
PEOPLE = [
    {
        "id": str(n),
        "properties": {"email": f"person{n}@example.com", "firstname": f"P{n}", "score": n * 1.5},
        "archived": False,
        "tags": ["a"],
    }
    for n in range(1, 46)
]


class ContactsAPI(LocalServer):
    """HubSpot-shaped listings (``results`` + ``paging.next.after``, 10 per page) behind a
    bearer key, and the ways an API goes wrong."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[web.Request] = []

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests.append(request)
        if request.headers.get("Authorization") != f"Bearer {API_KEY}":
            return web.json_response({"message": "invalid API key"}, status=401)
        path = request.path
        if path == "/contacts":
            start = int(request.query.get("after", "0"))
            page = PEOPLE[start : start + 10]
            body: dict[str, Any] = {"results": page}
            if start + 10 < len(PEOPLE):
                body["paging"] = {"next": {"after": str(start + 10)}}
            return web.json_response(body)
        if path == "/people":  # the whole listing's size in the body
            return web.json_response({"data": PEOPLE[:10], "total": len(PEOPLE)})
        if path == "/html":
            return web.Response(text="<!DOCTYPE html><html>login</html>", content_type="text/html")
        if path == "/loop":
            return web.json_response({"results": PEOPLE[:2], "paging": {"next": {"after": "x"}}})
        return web.json_response({"message": "no such path"}, status=404)


@pytest.fixture
async def contacts_api() -> AsyncIterator[ContactsAPI]:
    server = ContactsAPI()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def cursor_config(url: str, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "apiEndpoint": url,
        "dataSelector": "results",
        "pagination": {"type": "cursor", "cursorPath": "paging.next.after", "cursorParam": "after"},
    }
    return config | overrides


async def check_unsaved(
    api: httpx.AsyncClient, config: dict[str, Any], api_key: str = API_KEY
) -> dict[str, Any]:
    response = await api.post(
        "/api/v1/integrations/test",
        json={"provider": "api_endpoint", "config": config, "credentials": {"apiKey": api_key}},
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def test_a_saved_integration_that_works_becomes_active_with_a_preview(
    local_api: httpx.AsyncClient, contacts_api: ContactsAPI
) -> None:
    created = await create_integration(
        local_api,
        config=cursor_config(contacts_api.url("/contacts")),
        credentials={"apiKey": API_KEY},
    )
    assert created["status"] == "configuring"

    response = await local_api.post(f"/api/v1/integrations/{created['id']}/test")

    assert response.status_code == 200, response.text
    result = response.json()
    assert result["success"] is True
    assert result["statusCode"] == 200
    assert result["latencyMs"] > 0
    assert result["recordsCount"] == 10
    assert result["total"] is None  # this API does not say
    assert result["preview"] == PEOPLE[:10]
    assert "10 records" in result["message"]
    fields = {f["name"]: f["type"] for f in result["fields"]}
    assert fields == {
        "id": "string",
        "properties.email": "string",
        "properties.firstname": "string",
        "properties.score": "number",
        "archived": "boolean",
        "tags": "array",
    }
    # As a sync would take them: no mapping is set, so names match inside ``properties``.
    assert result["contacts"][0] == {
        "skipped": None,
        "externalId": "1",
        "email": "person1@example.com",
        "firstName": "P1",
        "lastName": None,
        "phone": None,
        "company": None,
        "jobTitle": None,
        "customFields": {},
    }
    assert [c["email"] for c in result["contacts"]] == [
        p["properties"]["email"] for p in PEOPLE[:10]
    ]
    # A few pages (the pagination is checked too), not the whole listing of five.
    assert [r.query.get("after") for r in contacts_api.requests] == [None, "10", "20"]

    integration = (await local_api.get(f"/api/v1/integrations/{created['id']}")).json()
    assert integration["status"] == "active"
    assert integration["verifiedAt"] is not None

    logs = (await local_api.get(f"/api/v1/integrations/{created['id']}/logs")).json()["data"]
    assert [e["statusCode"] for e in logs] == [200, 200, 200]
    assert API_KEY not in json.dumps(logs)


async def test_a_saved_integration_that_fails_turns_error_then_recovers(
    local_api: httpx.AsyncClient, contacts_api: ContactsAPI
) -> None:
    created = await create_integration(
        local_api,
        config=cursor_config(contacts_api.url("/contacts")),
        credentials={"apiKey": "sk_test_wrong_key_000000"},
    )
    result = (await local_api.post(f"/api/v1/integrations/{created['id']}/test")).json()

    assert (result["success"], result["errorClass"], result["statusCode"]) == (False, "auth", 401)
    assert "invalid API key" in result["message"]
    assert "Check the credentials" in result["message"]
    integration = (await local_api.get(f"/api/v1/integrations/{created['id']}")).json()
    assert integration["status"] == "error"
    assert "invalid API key" in integration["statusMessage"]
    logs = (await local_api.get(f"/api/v1/integrations/{created['id']}/logs")).json()["data"]
    assert [(e["statusCode"], e["errorClass"]) for e in logs] == [(401, "auth")]

    patched = await local_api.patch(
        f"/api/v1/integrations/{created['id']}", json={"credentials": {"apiKey": API_KEY}}
    )
    assert patched.status_code == 200, patched.text
    result = (await local_api.post(f"/api/v1/integrations/{created['id']}/test")).json()
    assert result["success"] is True
    integration = (await local_api.get(f"/api/v1/integrations/{created['id']}")).json()
    assert (integration["status"], integration["statusMessage"]) == ("active", None)


async def test_an_unsaved_config_is_tested_without_saving_anything(
    local_api: httpx.AsyncClient, contacts_api: ContactsAPI
) -> None:
    config = {"apiEndpoint": contacts_api.url("/people"), "dataSelector": "data"}
    result = await check_unsaved(local_api, config)

    assert result["success"] is True
    assert (result["recordsCount"], result["total"]) == (10, 45)
    assert "45 in total" in result["message"]
    listed = (await local_api.get("/api/v1/integrations")).json()["data"]
    assert listed == []


async def test_the_preview_shows_what_the_field_mapping_makes_of_the_records(
    local_api: httpx.AsyncClient, contacts_api: ContactsAPI
) -> None:
    mapping = {"email": "properties.email", "lastName": "properties.firstname"}
    mapping |= {"custom.score": "properties.score", "externalId": "properties.email"}
    config = cursor_config(contacts_api.url("/contacts"), fieldMapping=mapping)
    result = await check_unsaved(local_api, config)

    first = result["contacts"][0]
    # lastName as the user mapped it; firstName, not mapped, auto-matched.
    assert (first["email"], first["lastName"], first["firstName"]) == (
        "person1@example.com",
        "P1",
        "P1",
    )
    assert first["customFields"] == {"score": 1.5}
    assert first["externalId"] == "person1@example.com"
    # A mapping that finds no email: every record says why the sync would skip it.
    config = cursor_config(contacts_api.url("/contacts"), fieldMapping={"email": "mail"})
    result = await check_unsaved(local_api, config)
    assert result["success"] is True
    assert {c["skipped"] for c in result["contacts"]} == {"no email"}
    assert result["contacts"][0]["externalId"] == "1" and result["contacts"][0]["email"] is None


async def test_the_preview_shows_a_later_record_with_an_earlier_ones_email_skipped(
    local_api: httpx.AsyncClient, contacts_api: ContactsAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(PEOPLE[2]["properties"], "email", "PERSON1@example.com")
    result = await check_unsaved(local_api, cursor_config(contacts_api.url("/contacts")))

    first, _, third = result["contacts"][:3]
    assert (first["skipped"], first["email"], first["firstName"]) == (
        None,
        "person1@example.com",
        "P1",
    )
    assert (third["skipped"], third["externalId"], third["email"]) == (
        "duplicate email: an earlier record has it",
        "3",
        None,
    )


async def test_the_create_body_can_be_tested_as_it_is(
    local_api: httpx.AsyncClient, contacts_api: ContactsAPI
) -> None:
    body = {
        "name": "People",
        "provider": "api_endpoint",
        "type": "rest_api",
        "description": "the people listing",
        "enabled": True,
        "config": {"apiEndpoint": contacts_api.url("/people"), "dataSelector": "data"},
        "credentials": {"apiKey": API_KEY},
    }
    tested = await local_api.post("/api/v1/integrations/test", json=body)

    assert tested.status_code == 200, tested.text
    assert tested.json()["success"] is True
    assert (await local_api.get("/api/v1/integrations")).json()["data"] == []  # nothing saved
    # What is still checked there: the fields' types, and names that are none of these.
    assert (
        await local_api.post("/api/v1/integrations/test", json=body | {"name": 5})
    ).status_code == 422
    refused = await local_api.post("/api/v1/integrations/test", json=body | {"colour": "red"})
    assert refused.status_code == 422


@pytest.mark.parametrize(
    ("path", "config", "error_class", "words"),
    [
        ("/html", {}, "bad_response", "expected JSON"),
        ("/contacts", {"dataSelector": "items"}, "bad_response", "items"),
        ("/loop", {}, "pagination_loop", "Check the pagination settings"),
        ("/nowhere", {}, "not_found", "Check the endpoint URL"),
    ],
)
async def test_a_broken_api_is_a_result_with_a_readable_reason(
    local_api: httpx.AsyncClient,
    contacts_api: ContactsAPI,
    path: str,
    config: dict[str, Any],
    error_class: str,
    words: str,
) -> None:
    result = await check_unsaved(local_api, cursor_config(contacts_api.url(path), **config))

    assert result["success"] is False
    assert result["errorClass"] == error_class
    assert words in result["message"]
    assert result["preview"] == []


async def test_unreachable_hosts_are_results_too(local_api: httpx.AsyncClient) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]

    refused = await check_unsaved(local_api, cursor_config(f"http://127.0.0.1:{closed}/x"))
    dns = await check_unsaved(local_api, cursor_config("http://contacts.example.invalid/x"))

    assert (refused["success"], refused["errorClass"]) == (False, "refused")
    assert "Nothing answers" in refused["message"]
    assert (dns["success"], dns["errorClass"]) == (False, "dns")
    assert "contacts.example.invalid" in dns["message"]


async def test_tls_failure_is_a_result(
    local_api: httpx.AsyncClient, contacts_api: ContactsAPI
) -> None:
    # TLS spoken to a plain-HTTP server: the handshake fails.
    url = contacts_api.url("/contacts").replace("http://", "https://")
    result = await check_unsaved(local_api, cursor_config(url))

    assert (result["success"], result["errorClass"]) == (False, "tls")


async def test_a_blocked_address_is_refused_before_any_request(
    api: httpx.AsyncClient, contacts_api: ContactsAPI
) -> None:
    result = await check_unsaved(api, cursor_config(contacts_api.url("/contacts")))

    assert (result["success"], result["errorClass"]) == (False, "blocked")
    assert "ISTHMUS_OUTBOUND_ALLOWLIST" in result["message"]
    assert contacts_api.requests == []


async def test_an_invalid_config_is_a_422_naming_the_field(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/api/v1/integrations/test",
        json={"provider": "api_endpoint", "config": {"method": "GET"}, "credentials": {}},
    )

    assert response.status_code == 422, response.text
    fields = {e["field"] for e in response.json()["errors"]}
    assert "config.apiEndpoint" in fields


async def test_another_tenants_integration_cannot_be_tested(
    api: httpx.AsyncClient, hub: Hub
) -> None:
    created = await create_integration(api)
    other = await hub.access.create_tenant("other-tenant")
    key = await key_for(hub, other.id, "write")

    response = await api.post(f"/api/v1/integrations/{created['id']}/test", headers=bearer(key))

    assert response.status_code == 404
