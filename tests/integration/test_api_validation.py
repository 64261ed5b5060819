"""Bad input gets a clear 4xx problem naming what is wrong, and writes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from api_support import (
    ENDPOINT,
    INTEGRATIONS,
    ROOMY,
    SECRET,
    app_client,
    assert_problem,
    create_integration,
    integration_body,
    snapshot,
)

from isthmus.config import Settings
from isthmus.hub import Hub
from isthmus.services.access import IssuedKey

CREATE_CASES: list[Any] = [
    pytest.param({"provider": "hubspot_classic"}, {"provider"}, id="unknown-provider"),
    pytest.param({"credentials": {}}, {"credentials.apiKey"}, id="missing-credential"),
    pytest.param(
        {
            "config": {"apiEndpoint": ENDPOINT, "auth": {"type": "basic"}},
            "credentials": {"username": "alice"},
        },
        {"credentials.password"},
        id="missing-credential-for-auth-type",
    ),
    pytest.param(
        {"credentials": {"apiKey": SECRET, "token": "abc"}},
        {"credentials.token"},
        id="extra-credential",
    ),
    pytest.param({"credentials": {"apiKey": ""}}, {"credentials.apiKey"}, id="empty-credential"),
    pytest.param(
        {"config": {"apiEndpoint": "ftp://files.example.com/contacts"}},
        {"config.apiEndpoint"},
        id="ftp-url",
    ),
    pytest.param({"config": {"apiEndpoint": "not-a-url"}}, {"config.apiEndpoint"}, id="not-a-url"),
    pytest.param({"config": {"apiEndpoint": "https://"}}, {"config.apiEndpoint"}, id="no-host"),
    pytest.param(
        {"config": {"apiEndpoint": "https://api.example.com:port/"}},
        {"config.apiEndpoint"},
        id="bad-port",
    ),
    pytest.param(
        {
            "config": {
                "apiEndpoint": ENDPOINT,
                "auth": {"type": "oauth2_client_credentials", "tokenUrl": "mailto:x@y.z"},
            },
            "credentials": {"clientId": "c", "clientSecret": "s"},
        },
        {"config.auth.tokenUrl"},
        id="bad-nested-url",
    ),
    pytest.param({"config": {}}, {"config.apiEndpoint"}, id="config-missing-endpoint"),
    pytest.param(
        {"config": {"apiEndpoint": ENDPOINT, "colour": "red"}},
        {"config.colour"},
        id="unknown-config-setting",
    ),
    pytest.param(
        {"config": {"apiEndpoint": ENDPOINT, "method": "DELETE"}},
        {"config.method"},
        id="config-enum",
    ),
    pytest.param(
        {"config": {"apiEndpoint": ENDPOINT, "pagination": {"pageSize": "ten"}}},
        {"config.pagination.pageSize"},
        id="config-wrong-type",
    ),
    pytest.param(
        {"config": {"apiEndpoint": ENDPOINT, "fieldMapping": {"emial": "properties.email"}}},
        {"config.fieldMapping.emial"},
        id="mapping-not-a-contact-field",
    ),
    pytest.param(
        {"config": {"apiEndpoint": ENDPOINT, "fieldMapping": {"email": "", "custom.": "x"}}},
        {"config.fieldMapping.email", "config.fieldMapping.custom."},
        id="mapping-bad-path-and-custom-name",
    ),
    pytest.param(
        {"config": {"apiEndpoint": ENDPOINT, "pagination": {"type": "cursor"}}},
        {"config.pagination.cursorPath"},
        id="cursor-pagination-without-its-path",
    ),
    pytest.param(
        {"config": {"apiEndpoint": ENDPOINT, "pagination": {"type": "page", "pageSize": 50}}},
        {"config.pagination.pageSizeParam"},
        id="page-size-without-its-parameter",
    ),
    pytest.param(
        {"config": {"apiEndpoint": ENDPOINT, "incremental": {"recordField": "updatedAt"}}},
        {"config.incremental.param"},
        id="incremental-updated-since-without-param",
    ),
    pytest.param(
        {"config": {"apiEndpoint": ENDPOINT, "incremental": {"type": "sometimes"}}},
        {"config.incremental.type"},
        id="incremental-unknown-type",
    ),
    pytest.param(
        {"config": {"apiEndpoint": ENDPOINT, "headers": {"Authorization": "Bearer sk_live_1"}}},
        {"config.headers.Authorization"},
        id="secret-in-a-config-header",
    ),
    pytest.param(
        {"config": {"apiEndpoint": f"{ENDPOINT}?limit=100&api_key=sk_live_1"}},
        {"config.apiEndpoint"},
        id="secret-in-the-endpoint-query",
    ),
    pytest.param({"name": 5}, {"name"}, id="name-not-a-string"),
    pytest.param({"name": ""}, {"name"}, id="name-empty"),
    pytest.param({"name": "   "}, {"name"}, id="name-blank"),
    pytest.param({"name": "n" * 201}, {"name"}, id="name-too-long"),
    pytest.param({"enabled": "yes"}, {"enabled"}, id="enabled-not-a-bool"),
    pytest.param({"enabled": 1}, {"enabled"}, id="enabled-a-number"),
    pytest.param({"credentials": {"apiKey": 3}}, {"credentials.apiKey"}, id="credential-int"),
    pytest.param({"credentials": ["apiKey"]}, {"credentials"}, id="credentials-a-list"),
    pytest.param({"config": "https://api.example.com"}, {"config"}, id="config-a-string"),
    pytest.param({"config": [ENDPOINT]}, {"config"}, id="config-a-list"),
    pytest.param({"type": "spreadsheet"}, {"type"}, id="unknown-type"),
    pytest.param({"description": 7}, {"description"}, id="description-not-a-string"),
    pytest.param({"description": "d" * 2001}, {"description"}, id="description-too-long"),
    pytest.param({"colour": "red"}, {"colour"}, id="unknown-top-level-field"),
    pytest.param(
        {"name": 5, "enabled": "yes", "credentials": {"apiKey": 3}, "config": "x", "colour": 1},
        {"name", "enabled", "credentials.apiKey", "config", "colour"},
        id="many-at-once",
    ),
]


@pytest.fixture
async def api(
    settings: Settings, hub: Hub, admin_key: IssuedKey
) -> AsyncIterator[httpx.AsyncClient]:
    """The admin's client; each table below runs all its cases in one test, so it gets room."""
    async with app_client(settings, hub, key=admin_key.secret, **ROOMY) as client:
        yield client


@pytest.fixture
async def existing(api: httpx.AsyncClient) -> AsyncIterator[dict[str, Any]]:
    """One integration already there, so 'writes nothing' has something to compare."""
    yield await create_integration(api, name="Existing")


async def test_bad_create_is_422_naming_the_fields_and_writes_nothing(
    api: httpx.AsyncClient, existing: dict[str, Any], subtests: pytest.Subtests
) -> None:
    for case in CREATE_CASES:
        with subtests.test(case.id):
            overrides, fields = case.values
            before = await snapshot(api)

            response = await api.post(INTEGRATIONS, json=integration_body(**overrides))

            doc = assert_problem(response, 422, fields)
            for field in fields:
                assert field in doc["detail"]
            assert SECRET not in response.text
            assert await snapshot(api) == before


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"name": "x"}, id="provider-missing"),
        pytest.param({"provider": "api_endpoint"}, id="name-missing"),
    ],
)
async def test_missing_required_fields_are_named(
    api: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    before = await snapshot(api)

    doc = assert_problem(await api.post(INTEGRATIONS, json=body), 422)

    missing = {"name", "provider"} - set(body)
    assert {e["field"] for e in doc["errors"]} == missing
    assert all(e["message"] == "is required" for e in doc["errors"])
    assert await snapshot(api) == before


async def test_unknown_provider_names_the_known_ones(api: httpx.AsyncClient) -> None:
    response = await api.post(INTEGRATIONS, json=integration_body(provider="nope"))

    doc = assert_problem(response, 422, {"provider"})
    assert "'nope'" in doc["detail"]
    assert "api_endpoint" in doc["errors"][0]["message"]


async def test_extra_credential_names_the_accepted_ones(api: httpx.AsyncClient) -> None:
    body = integration_body(credentials={"apiKey": SECRET, "token": "abc"})

    doc = assert_problem(await api.post(INTEGRATIONS, json=body), 422, {"credentials.token"})

    assert "apiKey" in doc["errors"][0]["message"]


MALFORMED: list[Any] = [
    pytest.param(b'{"name": ', id="truncated"),
    pytest.param(b"{'name': 'single quotes'}", id="single-quotes"),
    pytest.param(b'{"name": "x",}', id="trailing-comma"),
    pytest.param(b'{"name": "x"} trailing', id="trailing-text"),
    pytest.param(b"\xff\xfe not utf-8", id="not-utf8"),
]


async def test_malformed_json_is_400_and_writes_nothing(
    api: httpx.AsyncClient, existing: dict[str, Any], subtests: pytest.Subtests
) -> None:
    for case in MALFORMED:
        with subtests.test(case.id):
            (raw,) = case.values
            before = await snapshot(api)

            response = await api.post(
                INTEGRATIONS, content=raw, headers={"Content-Type": "application/json"}
            )

            doc = assert_problem(response, 400)
            assert "JSON" in doc["detail"]
            assert await snapshot(api) == before


async def test_malformed_json_on_patch_is_400_and_changes_nothing(
    api: httpx.AsyncClient, existing: dict[str, Any]
) -> None:
    before = await snapshot(api)

    response = await api.patch(
        f"{INTEGRATIONS}/{existing['id']}",
        content=b'{"name": "half',
        headers={"Content-Type": "application/json"},
    )

    assert_problem(response, 400)
    assert await snapshot(api) == before


@pytest.mark.parametrize(
    "body",
    [pytest.param(b"[1, 2]", id="array"), pytest.param(b'"text"', id="string")],
)
async def test_a_body_that_is_not_an_object_is_422(api: httpx.AsyncClient, body: bytes) -> None:
    response = await api.post(
        INTEGRATIONS, content=body, headers={"Content-Type": "application/json"}
    )

    assert_problem(response, 422, {"body"})


async def test_oversized_body_is_413_and_writes_nothing(
    api: httpx.AsyncClient, existing: dict[str, Any]
) -> None:
    before = await snapshot(api)
    body = integration_body(name="Huge", description="x" * (1024 * 1024 + 1))

    response = await api.post(INTEGRATIONS, json=body)

    doc = assert_problem(response, 413)
    assert "1048576" in doc["detail"]
    assert await snapshot(api) == before


async def test_oversized_body_without_a_length_is_413_too(
    api: httpx.AsyncClient, existing: dict[str, Any]
) -> None:
    before = await snapshot(api)
    chunk = b" " * 65536

    async def stream() -> AsyncIterator[bytes]:
        yield b'{"name": "Streamed", "description": "'
        for _ in range(17):  # 17 * 64 KiB > 1 MiB
            yield chunk
        yield b'"}'

    response = await api.post(
        INTEGRATIONS, content=stream(), headers={"Content-Type": "application/json"}
    )

    assert_problem(response, 413)
    assert await snapshot(api) == before


async def test_a_body_just_under_the_cap_is_read(api: httpx.AsyncClient) -> None:
    body = integration_body(description="x" * (1024 * 1024 - 500))

    response = await api.post(INTEGRATIONS, json=body)

    # Read in full and judged on its content: too long a description, not too large a body.
    assert_problem(response, 422, {"description"})


async def test_duplicate_name_is_409_and_writes_nothing(
    api: httpx.AsyncClient, existing: dict[str, Any]
) -> None:
    before = await snapshot(api)

    response = await api.post(INTEGRATIONS, json=integration_body(name="Existing"))

    doc = assert_problem(response, 409)
    assert "'Existing'" in doc["detail"]
    assert await snapshot(api) == before


async def test_duplicate_name_ignores_surrounding_spaces(
    api: httpx.AsyncClient, existing: dict[str, Any]
) -> None:
    response = await api.post(INTEGRATIONS, json=integration_body(name="  Existing "))

    assert_problem(response, 409)


async def test_rename_onto_a_taken_name_is_409_and_changes_nothing(
    api: httpx.AsyncClient, existing: dict[str, Any]
) -> None:
    other = await create_integration(api, name="Other")
    before = await snapshot(api)

    response = await api.patch(f"{INTEGRATIONS}/{other['id']}", json={"name": "Existing"})

    assert_problem(response, 409)
    assert await snapshot(api) == before


PATCH_CASES: list[Any] = [
    pytest.param({"config": {"apiEndpoint": "ftp://x.example.com"}}, {"config.apiEndpoint"}),
    pytest.param({"config": {"apiEndpoint": "not-a-url"}}, {"config.apiEndpoint"}),
    pytest.param({"config": "x"}, {"config"}),
    pytest.param({"credentials": {"token": "abc"}}, {"credentials.token"}),
    pytest.param({"credentials": {"apiKey": 3}}, {"credentials.apiKey"}),
    pytest.param({"credentials": {"apiKey": ""}}, {"credentials.apiKey"}),
    pytest.param({"credentials": {"token": None}}, {"credentials.token"}, id="remove-unknown"),
    pytest.param({"name": 5}, {"name"}),
    pytest.param({"name": " "}, {"name"}),
    pytest.param({"enabled": "yes"}, {"enabled"}),
    pytest.param({"type": "spreadsheet"}, {"type"}),
    pytest.param({"provider": "other"}, {"provider"}, id="provider-is-fixed"),
    pytest.param({"status": "active"}, {"status"}, id="status-is-not-writable"),
    pytest.param({"id": "int_x"}, {"id"}, id="id-is-not-writable"),
    pytest.param({"name": "ok", "colour": "red"}, {"colour"}, id="valid-plus-unknown"),
]


async def test_bad_patch_is_422_naming_the_fields_and_changes_nothing(
    api: httpx.AsyncClient, existing: dict[str, Any], subtests: pytest.Subtests
) -> None:
    for case in PATCH_CASES:
        patch, fields = case.values
        with subtests.test(case.id or str(patch)):
            before = await snapshot(api)

            response = await api.patch(f"{INTEGRATIONS}/{existing['id']}", json=patch)

            assert_problem(response, 422, fields)
            assert await snapshot(api) == before


async def test_form_encoded_body_is_refused_with_a_message_about_json(
    api: httpx.AsyncClient,
) -> None:
    """curl -d sends a form content type; the answer must say the API wants JSON."""
    before = await snapshot(api)

    response = await api.post(
        INTEGRATIONS,
        content=b'{"name": "x", "provider": "api_endpoint"}',
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )

    doc = assert_problem(response, 422, {"body"})
    assert "JSON" in doc["errors"][0]["message"]
    assert await snapshot(api) == before


NUL_CASES: list[Any] = [
    pytest.param({"name": "Con\x00tacts"}, {"name"}, id="name"),
    pytest.param({"description": "a\x00b"}, {"description"}, id="description"),
    pytest.param(
        {"config": {"apiEndpoint": ENDPOINT, "headers": {"X-Team": "gr\x00owth"}}},
        {"config.headers.X-Team"},
        id="config-value",
    ),
    pytest.param({"credentials": {"apiKey": "sk_\x00live_0123456789"}}, {"credentials.apiKey"}),
]


async def test_nul_characters_in_the_body_are_422_on_every_database(
    api: httpx.AsyncClient, existing: dict[str, Any], subtests: pytest.Subtests
) -> None:
    """PostgreSQL cannot store U+0000 in text; both stores must refuse it the same clear way."""
    for case in NUL_CASES:
        overrides, fields = case.values
        with subtests.test(case.id or str(fields)):
            before = await snapshot(api)

            response = await api.post(INTEGRATIONS, json=integration_body(**overrides))

            assert_problem(response, 422, fields)
            assert await snapshot(api) == before
    patched = await api.patch(f"{INTEGRATIONS}/{existing['id']}", json={"name": "a\x00"})
    assert_problem(patched, 422, {"name"})


NUL_URLS = [
    ("GET", INTEGRATIONS, {"provider": "api\x00"}, "provider"),
    ("GET", INTEGRATIONS, {"cursor": "aW50XwA"}, "cursor"),  # base64 of "int_\x00"
    ("GET", f"{INTEGRATIONS}/int_%00", {}, "integration_id"),
    ("POST", f"{INTEGRATIONS}/int_%00/disable", {}, "integration_id"),
    ("GET", "/api/v1/audit", {"action": "integration.\x00"}, "action"),
    ("GET", "/api/v1/audit", {"resource": "integration/\x00"}, "resource"),
    ("DELETE", "/api/v1/api-keys/key_%00", {}, "key_id"),
]


async def test_nul_characters_in_the_url_are_422_on_every_database(
    api: httpx.AsyncClient, subtests: pytest.Subtests
) -> None:
    for method, path, params, field in NUL_URLS:
        with subtests.test(f"{method} {path} {field}"):
            response = await api.request(method, path, params=params)

            assert_problem(response, 422, {field})


# A mistyped filter must not answer as if there were none (an export of everything).
UNKNOWN_QUERIES = [
    ("GET", "/api/v1/contacts", {"search": "ada"}, "search", "q"),
    ("GET", "/api/v1/contacts/export.csv", {"integration_id": "int_x"}, "integration_id", "email"),
    ("GET", INTEGRATIONS, {"page": "2"}, "page", "cursor"),
    ("GET", "/api/v1/audit", {"actor": "cli"}, "actor", "resource"),
    ("GET", "/api/v1/webhooks", {"active": "true"}, "active", "isActive"),
    ("POST", f"{INTEGRATIONS}/int_nope/sync", {"wiat": "true"}, "wiat", "wait"),
]


async def test_unknown_query_parameters_are_422_naming_them_and_the_known_ones(
    api: httpx.AsyncClient, subtests: pytest.Subtests
) -> None:
    for method, path, params, field, known in UNKNOWN_QUERIES:
        with subtests.test(f"{method} {path} {field}"):
            response = await api.request(method, path, params=params)

            doc = assert_problem(response, 422, {field})
            [error] = doc["errors"]
            assert error["message"].startswith("is not a query parameter of this route")
            assert known in error["message"].split("(it takes: ")[1]


async def test_known_query_parameters_still_work_beside_the_check(
    api: httpx.AsyncClient, settings: Settings, hub: Hub
) -> None:
    created = await api.post("/api/v1/contacts", json={"email": "ada@example.com"})
    assert created.status_code == 201, created.text
    await api.post("/api/v1/contacts", json={"email": "grace@example.com"})

    found = await api.get("/api/v1/contacts", params={"q": "ada", "limit": 5})
    assert found.status_code == 200, found.text
    assert [c["email"] for c in found.json()["data"]] == ["ada@example.com"]
    both = await api.get("/api/v1/contacts", params=[("email", "ADA@example.com"), ("limit", 1)])
    assert [c["email"] for c in both.json()["data"]] == ["ada@example.com"]
    # Each unknown name once, however often it is sent, the known ones not named.
    twice = await api.get("/api/v1/contacts", params=[("x", "1"), ("q", "a"), ("x", "2")])
    assert_problem(twice, 422, {"x"})
    # The key is checked first: without one, the answer is 401 whatever the query.
    async with app_client(settings, hub) as anonymous:
        response = await anonymous.get("/api/v1/contacts", params={"search": "ada"})
        assert_problem(response, 401)


async def test_a_secret_in_the_config_is_refused_with_the_way_to_send_it(
    api: httpx.AsyncClient,
) -> None:
    # The config is stored as it is, shown, audited and exported: secrets go to the vault.
    # Long values, so a generated id in an answer cannot hold one by chance.
    token = "query-token-0123456789"
    config = {"apiEndpoint": ENDPOINT, "headers": {"X-API-Key": SECRET, "X-Api-Version": "2"}}
    doc = assert_problem(
        await api.post(INTEGRATIONS, json=integration_body(config=config)),
        422,
        {"config.headers.X-API-Key"},
    )
    assert '"headerName": "X-API-Key"' in doc["detail"] and SECRET not in doc["detail"]
    query = {"apiEndpoint": f"{ENDPOINT}?token={token}"}
    doc = assert_problem(
        await api.post(
            f"{INTEGRATIONS}/test", json={"config": query, "credentials": {"apiKey": "x"}}
        ),
        422,
        {"config.apiEndpoint"},
    )
    assert '"paramName": "token"' in doc["detail"] and token not in doc["detail"]
    # Done the way it says: saved, the value sealed with the credentials.
    config = {
        "apiEndpoint": ENDPOINT,
        "headers": {"X-Api-Version": "2"},
        "auth": {"type": "header", "headerName": "X-API-Key"},
    }
    response = await api.post(
        INTEGRATIONS, json=integration_body(config=config, credentials={"apiKey": SECRET})
    )
    assert response.status_code == 201, response.text
    assert SECRET not in response.text


async def test_the_detail_alone_says_what_is_wrong(api: httpx.AsyncClient) -> None:
    # Clients often log only the detail: one bad field is named there with its problem.
    one = assert_problem(await api.get("/api/v1/contacts", params={"limit": 0}), 422, {"limit"})
    assert one["detail"] == "limit: Input should be greater than or equal to 1"
    polling = f"{INTEGRATIONS}/int_nope/polling"
    retries = assert_problem(await api.put(polling, json={"maxRetries": -1}), 422, {"maxRetries"})
    assert retries["detail"].startswith("maxRetries: Input should be greater than or equal to 0")
    # Several: how many and which; each one's problem is in ``errors``.
    several = assert_problem(await api.post(INTEGRATIONS, json={}), 422, {"name", "provider"})
    count, names = several["detail"].split(": ")
    assert count == "2 invalid fields"
    assert sorted(names.split(", ")) == ["name", "provider"]
