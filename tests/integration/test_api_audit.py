"""The audit trail: who did what to which resource, from where, with secrets masked."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from api_support import (
    API_KEYS,
    AUDIT,
    INTEGRATIONS,
    SECRET,
    SECRET_MASKED,
    assert_problem,
    audit_rows,
    create_integration,
    walk,
)

from isthmus.services.access import IssuedKey

ROTATED = "sk_live_rotated_0123456789ABCD"


@dataclass
class History:
    """A tenant's history made through the API, with the times between its steps."""

    integration_id: str
    key_id: str
    new_key: str
    between: datetime  # after the integration's changes, before the API key's
    rows: list[dict[str, Any]]


async def _pause() -> datetime:
    """A moment strictly between the rows written before and after it."""
    await asyncio.sleep(0.01)
    moment = datetime.now(UTC)
    await asyncio.sleep(0.01)
    return moment


@pytest.fixture
async def history(api: httpx.AsyncClient) -> History:
    created = await create_integration(api, name="Audited")
    path = f"{INTEGRATIONS}/{created['id']}"
    assert (await api.patch(path, json={"name": "Audited, renamed"})).status_code == 200
    assert (await api.patch(path, json={"credentials": {"apiKey": ROTATED}})).status_code == 200
    revealed = await api.post(f"{path}/credentials/reveal", json={"field": "apiKey"})
    assert revealed.json()["value"] == ROTATED
    assert (await api.delete(path)).status_code == 204
    between = await _pause()
    key = (await api.post(API_KEYS, json={"name": "audited key", "scopes": ["read"]})).json()
    assert (await api.delete(f"{API_KEYS}/{key['id']}")).status_code == 200
    return History(created["id"], key["id"], key["key"], between, await audit_rows(api))


async def test_every_change_writes_one_row(
    api: httpx.AsyncClient, history: History, admin_key: IssuedKey
) -> None:
    ours = [r for r in history.rows if r["actor"] == admin_key.key.id]
    assert [(r["action"], r["resourceType"], r["resourceId"]) for r in reversed(ours)] == [
        ("integration.create", "integration", history.integration_id),
        ("integration.update", "integration", history.integration_id),
        ("integration.credentials.update", "integration", history.integration_id),
        ("integration.credentials.reveal", "integration", history.integration_id),
        ("integration.delete", "integration", history.integration_id),
        ("api_key.create", "api_key", history.key_id),
        ("api_key.revoke", "api_key", history.key_id),
    ]
    for row in ours:
        assert row["clientIp"] == "127.0.0.1"
        assert row["id"].startswith("aud_")
        assert datetime.fromisoformat(row["at"]).tzinfo is not None
    # The rest is the bootstrap: the first admin key, made by the system.
    assert [(r["action"], r["actor"]) for r in history.rows if r not in ours] == [
        ("api_key.create", "system")
    ]


async def test_rows_come_newest_first(history: History) -> None:
    times = [datetime.fromisoformat(r["at"]) for r in history.rows]

    assert times == sorted(times, reverse=True)


async def test_diffs_say_what_changed_with_secrets_masked(history: History) -> None:
    by_action = {r["action"]: r["diff"] for r in history.rows if r["actor"] != "system"}

    create = by_action["integration.create"]
    assert create["name"] == "Audited"
    assert create["provider"] == "api_endpoint"
    assert create["credentials"] == {"apiKey": SECRET_MASKED}
    assert create["config"]["apiEndpoint"].startswith("https://")
    assert by_action["integration.update"] == {
        "name": {"from": "Audited", "to": "Audited, renamed"}
    }
    assert by_action["integration.credentials.update"] == {
        "apiKey": {"from": SECRET_MASKED, "to": "sk_l...ABCD"}
    }
    assert by_action["integration.credentials.reveal"] == {"field": "apiKey"}
    assert by_action["integration.delete"] == {
        "name": "Audited, renamed",
        "provider": "api_endpoint",
    }
    assert by_action["api_key.create"] == {
        "name": "audited key",
        "scopes": ["read"],
        "expiresAt": None,
    }
    assert by_action["api_key.revoke"] == {"name": "audited key"}


async def test_no_clear_secret_anywhere_in_the_audit(
    api: httpx.AsyncClient, history: History
) -> None:
    response = await api.get(AUDIT, params={"limit": 200})

    for clear in (SECRET, ROTATED, history.new_key):
        assert clear not in response.text
    assert history.new_key[:12] not in response.text


async def test_filter_by_resource_type_and_id(api: httpx.AsyncClient, history: History) -> None:
    integration_rows = await audit_rows(api, resource="integration")
    one = await audit_rows(api, resource=f"integration/{history.integration_id}")
    keys = await audit_rows(api, resource="api_key")
    one_key = await audit_rows(api, resource=f"api_key/{history.key_id}")
    nothing = await audit_rows(api, resource="integration/int_01jzzzzzzzzzzzzzzzzzzzzzzz")

    assert len(integration_rows) == 5
    assert {r["resourceType"] for r in integration_rows} == {"integration"}
    assert one == integration_rows
    assert {r["resourceType"] for r in keys} == {"api_key"}
    assert len(keys) == 3  # bootstrap key created; our key created and revoked
    assert [r["action"] for r in one_key] == ["api_key.revoke", "api_key.create"]
    assert nothing == []


async def test_filter_by_action(api: httpx.AsyncClient, history: History) -> None:
    rows = await audit_rows(api, action="integration.update")

    assert [(r["action"], r["resourceId"]) for r in rows] == [
        ("integration.update", history.integration_id)
    ]
    assert await audit_rows(api, action="integration.nothing") == []
    both = await audit_rows(api, action="api_key.create", resource=f"api_key/{history.key_id}")
    assert [r["resourceId"] for r in both] == [history.key_id]


async def test_filter_by_time(api: httpx.AsyncClient, history: History) -> None:
    since = await audit_rows(api, since=history.between.isoformat())
    until = await audit_rows(api, until=history.between.isoformat())

    assert [r["action"] for r in since] == ["api_key.revoke", "api_key.create"]
    assert since + until == history.rows
    # The same instant written in another time zone selects the same rows.
    elsewhere = history.between.astimezone(timezone(timedelta(hours=-7)))
    assert await audit_rows(api, since=elsewhere.isoformat()) == since
    zulu = history.between.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert await audit_rows(api, since=zulu) == since
    window = await audit_rows(
        api,
        since=history.rows[-2]["at"],  # since is inclusive
        until=history.rows[1]["at"],  # until is exclusive
    )
    assert window == history.rows[2:-1]


BAD_FILTERS: list[tuple[dict[str, Any], str]] = [
    ({"since": "2024-01-01T00:00:00"}, "since"),
    ({"until": "2024-01-01T00:00:00"}, "until"),
    ({"since": "yesterday"}, "since"),
    ({"since": "2024-01-02T00:00:00Z", "until": "2024-01-01T00:00:00Z"}, "until"),
    ({"since": "0001-01-01T00:00:00+05:00"}, "since"),
    ({"until": "9999-12-31T23:59:59-05:00"}, "until"),
    ({"cursor": "!!!"}, "cursor"),
    ({"limit": 0}, "limit"),
    ({"limit": 201}, "limit"),
]


async def test_bad_filters_are_422(api: httpx.AsyncClient, subtests: pytest.Subtests) -> None:
    for params, field in BAD_FILTERS:
        with subtests.test(str(params)):
            assert_problem(await api.get(AUDIT, params=params), 422, {field})


async def test_cursor_pagination(api: httpx.AsyncClient, history: History) -> None:
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await api.get(AUDIT, params=params)).json()
        pages.append([r["id"] for r in page["data"]])
        cursor = page["nextCursor"]
        if cursor is None:
            break
        assert len(pages) < 10

    assert [len(p) for p in pages] == [3, 3, 2]
    assert [i for p in pages for i in p] == [r["id"] for r in history.rows]
    # Filters hold across pages.
    filtered = await walk(api, AUDIT, resource="integration", limit=2)
    assert filtered == await audit_rows(api, resource="integration")


async def test_nothing_can_change_or_delete_a_row(
    api: httpx.AsyncClient, history: History, subtests: pytest.Subtests
) -> None:
    for path in (AUDIT, f"{AUDIT}/{history.rows[0]['id']}"):
        for method in ("PUT", "PATCH", "DELETE", "POST"):
            with subtests.test(f"{method} {path}"):
                response = await api.request(method, path, json={"action": "nothing happened"})

                assert response.status_code in (404, 405)
                assert_problem(response, response.status_code)
    assert await audit_rows(api) == history.rows


async def test_a_refused_change_writes_no_row(api: httpx.AsyncClient, history: History) -> None:
    await api.post(INTEGRATIONS, json={"name": "x", "provider": "nope"})
    await api.patch(f"{INTEGRATIONS}/{history.integration_id}", json={"name": "gone"})
    await api.delete(f"{API_KEYS}/key_01jzzzzzzzzzzzzzzzzzzzzzzz")

    assert await audit_rows(api) == history.rows
