"""Event types over the real app and store: preloaded ones, create, change, archive, isolation."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from api_support import assert_problem, audit_rows, bearer, key_for, walk
from webhook_support import EVENT_TYPES

from isthmus.domain.webhooks import PRELOADED_EVENT_TYPES
from isthmus.hub import Hub
from isthmus.services.access import IssuedKey
from isthmus.store import event_types as event_types_repo
from isthmus.webhooks.event_types import EventTypeService

PRELOADED = sorted(PRELOADED_EVENT_TYPES)
SCHEMA = {
    "type": "object",
    "required": ["id", "email"],
    "properties": {"id": {"type": "string"}, "email": {"type": "string", "format": "email"}},
}


async def _create(api: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await api.post(EVENT_TYPES, json={"name": "invoice.paid", **body})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


# -- preloaded -------------------------------------------------------------------------------


async def test_a_tenant_starts_with_the_preloaded_event_types(api: httpx.AsyncClient) -> None:
    listed = await walk(api, EVENT_TYPES)

    assert [e["name"] for e in listed] == PRELOADED
    assert len(listed) == 12
    for item in listed:
        assert item["archived"] is False
        assert item["schema"] is None
        assert item["description"] == PRELOADED_EVENT_TYPES[item["name"]]
        assert set(item) == {"name", "description", "schema", "archived", "createdAt", "updatedAt"}


async def test_preloaded_types_can_be_read_one_by_one(api: httpx.AsyncClient) -> None:
    for name in ("contact.created", "webhook.disabled", "integration.disabled"):
        response = await api.get(f"{EVENT_TYPES}/{name}")
        assert response.status_code == 200, response.text
        assert response.json()["name"] == name


async def test_the_list_pages_by_name(api: httpx.AsyncClient) -> None:
    first = await api.get(EVENT_TYPES, params={"limit": 4})
    assert first.status_code == 200
    assert len(first.json()["data"]) == 4
    assert first.json()["nextCursor"]

    everything = await walk(api, EVENT_TYPES, limit=4)

    assert [e["name"] for e in everything] == PRELOADED


async def test_a_bad_cursor_is_422(api: httpx.AsyncClient) -> None:
    assert_problem(await api.get(EVENT_TYPES, params={"cursor": "%%%"}), 422, {"cursor"})


async def test_seeding_is_idempotent_and_safe_under_races(hub: Hub, admin_key: IssuedKey) -> None:
    tenant = admin_key.key.tenant_id
    # Fresh services are fresh processes as far as seeding knows: none has seeded yet.
    await asyncio.gather(*(EventTypeService(hub.store).ensure_seeded(tenant) for _ in range(5)))
    async with hub.store.read() as conn:
        page = await event_types_repo.query(conn, tenant, limit=100)

    assert [e.name for e in page.items] == PRELOADED


async def test_seeding_again_keeps_what_the_tenant_changed(
    api: httpx.AsyncClient, hub: Hub, admin_key: IssuedKey
) -> None:
    changed = await api.patch(
        f"{EVENT_TYPES}/card.viewed", json={"archived": True, "description": "ours"}
    )
    assert changed.status_code == 200, changed.text

    await EventTypeService(hub.store).ensure_seeded(admin_key.key.tenant_id)  # a restart

    again = (await api.get(f"{EVENT_TYPES}/card.viewed")).json()
    assert again == changed.json()


# -- create and read -------------------------------------------------------------------------


async def test_create_answers_201_and_the_type_is_listed(api: httpx.AsyncClient) -> None:
    created = await _create(api, description="An invoice was paid.", schema=SCHEMA)

    assert created["name"] == "invoice.paid"
    assert created["description"] == "An invoice was paid."
    assert created["schema"] == SCHEMA
    assert created["archived"] is False
    assert created["createdAt"] == created["updatedAt"]
    assert (await api.get(f"{EVENT_TYPES}/invoice.paid")).json() == created
    names = [e["name"] for e in await walk(api, EVENT_TYPES)]
    assert names == sorted([*PRELOADED, "invoice.paid"])


async def test_create_is_audited(api: httpx.AsyncClient) -> None:
    await _create(api, schema=SCHEMA)

    rows = await audit_rows(api, resource="event_type/invoice.paid")

    assert [r["action"] for r in rows] == ["event_type.create"]
    assert rows[0]["diff"] == {"description": "", "schema": SCHEMA, "archived": False}


async def test_a_schema_of_an_older_draft_is_accepted(api: httpx.AsyncClient) -> None:
    schema = {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object"}

    created = await _create(api, schema=schema)

    assert created["schema"] == schema


async def test_a_taken_name_is_409(api: httpx.AsyncClient) -> None:
    await _create(api)

    assert_problem(await api.post(EVENT_TYPES, json={"name": "invoice.paid"}), 409)
    assert_problem(await api.post(EVENT_TYPES, json={"name": "contact.created"}), 409)


@pytest.mark.parametrize(
    "name",
    [
        "invoice",
        "Invoice.Paid",
        "invoice..paid",
        ".invoice.paid",
        "invoice.paid.",
        "invoice paid.x",
        "invoice-paid.x",
        "invoice.*",
        "*",
        "",
        "a." + "b" * 59,
    ],
)
async def test_a_bad_name_is_422(api: httpx.AsyncClient, name: str) -> None:
    assert_problem(await api.post(EVENT_TYPES, json={"name": name}), 422, {"name"})


@pytest.mark.parametrize(
    "schema",
    [
        pytest.param({"type": "nonsense"}, id="unknown-type"),
        pytest.param({"properties": 5}, id="properties-not-object"),
        pytest.param({"required": "id"}, id="required-not-list"),
        pytest.param({"$schema": "http://example.com/my-draft"}, id="unknown-draft"),
        pytest.param({"$schema": 5}, id="schema-uri-not-string"),
        pytest.param(["type", "object"], id="not-an-object"),
        pytest.param("object", id="a-string"),
    ],
)
async def test_a_bad_schema_is_422(api: httpx.AsyncClient, schema: Any) -> None:
    response = await api.post(EVENT_TYPES, json={"name": "invoice.paid", "schema": schema})

    assert_problem(response, 422, {"schema"})
    assert (await api.get(f"{EVENT_TYPES}/invoice.paid")).status_code == 404


async def test_an_unknown_name_is_404(api: httpx.AsyncClient) -> None:
    doc = assert_problem(await api.get(f"{EVENT_TYPES}/never.made"), 404)
    assert "never.made" in doc["detail"]
    assert_problem(await api.patch(f"{EVENT_TYPES}/never.made", json={"archived": True}), 404)


# -- change and archive ----------------------------------------------------------------------


async def test_patch_changes_description_schema_and_archived(api: httpx.AsyncClient) -> None:
    created = await _create(api)

    response = await api.patch(
        f"{EVENT_TYPES}/invoice.paid",
        json={"description": "Paid in full.", "schema": SCHEMA, "archived": True},
    )

    assert response.status_code == 200, response.text
    changed = response.json()
    assert changed["description"] == "Paid in full."
    assert changed["schema"] == SCHEMA
    assert changed["archived"] is True
    assert changed["createdAt"] == created["createdAt"]
    assert changed["updatedAt"] > created["updatedAt"]
    assert (await api.get(f"{EVENT_TYPES}/invoice.paid")).json() == changed
    rows = await audit_rows(api, resource="event_type/invoice.paid", action="event_type.update")
    assert rows[0]["diff"] == {
        "description": {"from": "", "to": "Paid in full."},
        "schema": {"from": None, "to": SCHEMA},
        "archived": {"from": False, "to": True},
    }


async def test_patch_with_null_schema_removes_it(api: httpx.AsyncClient) -> None:
    await _create(api, schema=SCHEMA)

    response = await api.patch(f"{EVENT_TYPES}/invoice.paid", json={"schema": None})

    assert response.status_code == 200, response.text
    assert response.json()["schema"] is None


async def test_patch_refuses_nulls_bad_schemas_and_the_name(api: httpx.AsyncClient) -> None:
    await _create(api)
    path = f"{EVENT_TYPES}/invoice.paid"

    assert_problem(await api.patch(path, json={"description": None}), 422, {"description"})
    assert_problem(await api.patch(path, json={"archived": None}), 422, {"archived"})
    assert_problem(await api.patch(path, json={"schema": {"type": 12}}), 422, {"schema"})
    assert_problem(await api.patch(path, json={"name": "invoice.settled"}), 422, {"name"})


async def test_a_patch_that_changes_nothing_writes_nothing(api: httpx.AsyncClient) -> None:
    created = await _create(api, description="same")

    again = await api.patch(f"{EVENT_TYPES}/invoice.paid", json={"description": "same"})

    assert again.json() == created
    rows = await audit_rows(api, resource="event_type/invoice.paid")
    assert [r["action"] for r in rows] == ["event_type.create"]


async def test_archived_types_can_be_filtered_and_restored(api: httpx.AsyncClient) -> None:
    await api.patch(f"{EVENT_TYPES}/card.viewed", json={"archived": True})

    archived = await walk(api, EVENT_TYPES, archived="true")
    live = await walk(api, EVENT_TYPES, archived="false")

    assert [e["name"] for e in archived] == ["card.viewed"]
    assert "card.viewed" not in [e["name"] for e in live]
    assert len(live) == 11
    restored = await api.patch(f"{EVENT_TYPES}/card.viewed", json={"archived": False})
    assert restored.json()["archived"] is False


# -- scopes and tenants ----------------------------------------------------------------------


async def test_a_read_key_reads_but_cannot_change(api: httpx.AsyncClient, hub: Hub) -> None:
    tenant_id = (await hub.access.tenant_named("default")).id
    reader = bearer(await key_for(hub, tenant_id, "read"))

    assert (await api.get(EVENT_TYPES, headers=reader)).status_code == 200
    assert_problem(await api.post(EVENT_TYPES, json={"name": "x.y"}, headers=reader), 403)
    patch = await api.patch(f"{EVENT_TYPES}/card.viewed", json={"archived": True}, headers=reader)
    assert_problem(patch, 403)


async def test_event_types_are_per_tenant(api: httpx.AsyncClient, hub: Hub) -> None:
    await _create(api, description="A's")
    tenant_b = await hub.access.create_tenant("tenant-b")
    b = bearer(await key_for(hub, tenant_b.id, "admin"))

    assert_problem(await api.get(f"{EVENT_TYPES}/invoice.paid", headers=b), 404)
    patched = await api.patch(f"{EVENT_TYPES}/invoice.paid", json={"archived": True}, headers=b)
    assert_problem(patched, 404)
    b_list = (await api.get(EVENT_TYPES, params={"limit": 200}, headers=b)).json()["data"]
    assert [e["name"] for e in b_list] == PRELOADED  # B got its own preloaded set
    # B's names are its own: the same name is free there, and B's change stays in B.
    made = await api.post(EVENT_TYPES, json={"name": "invoice.paid"}, headers=b)
    assert made.status_code == 201, made.text
    await api.patch(f"{EVENT_TYPES}/contact.created", json={"archived": True}, headers=b)
    assert (await api.get(f"{EVENT_TYPES}/contact.created")).json()["archived"] is False
    assert (await api.get(f"{EVENT_TYPES}/invoice.paid")).json()["description"] == "A's"
