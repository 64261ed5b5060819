"""/api/v1/contacts: CRUD, filters, search, pagination, export, tenancy and change events."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from api_support import (
    AUDIT,
    assert_problem,
    bearer,
    create_integration,
    key_for,
    walk,
)
from webhook_support import EVENT_TYPES, WEBHOOKS, create_webhook

from isthmus.domain.contact_mapping import FieldMapping, map_record
from isthmus.domain.contacts import ContactFilter, Mapped
from isthmus.hub import Hub
from isthmus.services.access import IssuedKey
from isthmus.services.contacts import publish_changes
from isthmus.store import contact_upserts

CONTACTS = "/api/v1/contacts"
EXPORT = f"{CONTACTS}/export.csv"
NO_CONTACT = "con_01jzzzzzzzzzzzzzzzzzzzzzzz"
KEYS = {
    "id",
    "email",
    "firstName",
    "lastName",
    "phone",
    "company",
    "jobTitle",
    "customFields",
    "sources",
    "createdAt",
    "updatedAt",
}


async def create(api: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await api.post(CONTACTS, json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def synced(
    hub: Hub, tenant_id: str, integration_id: str, records: list[dict[str, Any]]
) -> None:
    """Contacts written as a sync writes them (the store's bulk upsert)."""
    mapping = FieldMapping.build("api_endpoint")
    items = [m for m in (map_record(r, mapping) for r in records) if isinstance(m, Mapped)]
    async with hub.store.transaction() as conn:
        await contact_upserts.upsert_many(conn, tenant_id, integration_id, items, datetime.now(UTC))


# -- CRUD -------------------------------------------------------------------------------------


async def test_create_read_change_delete(api: httpx.AsyncClient) -> None:
    created = await create(
        api,
        email="  Ada.Lovelace@Example.COM ",
        firstName="Ada",
        lastName="Lovelace",
        phone="+44 20 7946 0958",
        company="Analytical Engines",
        jobTitle="  ",
        customFields={"plan": "pro", "seats": 3},
    )
    assert set(created) == KEYS
    assert created["id"].startswith("con_")
    assert created["email"] == "ada.lovelace@example.com"
    assert created["jobTitle"] is None  # blank is no value
    assert created["customFields"] == {"plan": "pro", "seats": 3}
    assert created["sources"] == [] and created["createdAt"] == created["updatedAt"]
    path = f"{CONTACTS}/{created['id']}"
    assert (await api.get(path)).json() == created

    changed = await api.patch(
        path, json={"jobTitle": "Programmer", "phone": None, "customFields": {"seats": None}}
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert (body["jobTitle"], body["phone"], body["customFields"]) == (
        "Programmer",
        None,
        {"plan": "pro"},
    )
    assert body["updatedAt"] > created["updatedAt"] and body["createdAt"] == created["createdAt"]
    assert (await api.get(path)).json() == body

    # A change that changes nothing answers the contact as it was.
    same = await api.patch(path, json={"jobTitle": " Programmer ", "customFields": {}})
    assert same.status_code == 200 and same.json() == body

    deleted = await api.delete(path)
    assert deleted.status_code == 204 and deleted.content == b""
    assert_problem(await api.get(path), 404)
    assert_problem(await api.delete(path), 404)
    assert_problem(await api.patch(path, json={"firstName": "x"}), 404)


async def test_changes_are_audited(api: httpx.AsyncClient) -> None:
    created = await create(api, email="audit@example.com", firstName="A")
    path = f"{CONTACTS}/{created['id']}"
    await api.patch(path, json={"firstName": "B"})
    await api.patch(path, json={"firstName": "B"})  # no change: no entry
    await api.delete(path)

    rows = await walk(api, AUDIT, resource=f"contact/{created['id']}")
    assert [(r["action"], r["diff"]) for r in reversed(rows)] == [
        ("contact.create", {"email": "audit@example.com", "firstName": "A"}),
        ("contact.update", {"firstName": {"from": "A", "to": "B"}}),
        ("contact.delete", {"email": "audit@example.com"}),
    ]


async def test_an_email_is_unique_in_a_tenant(api: httpx.AsyncClient) -> None:
    first = await create(api, email="taken@example.com")
    other = await create(api, email="other@example.com")

    doc = assert_problem(await api.post(CONTACTS, json={"email": "TAKEN@example.com"}), 409)
    assert "taken@example.com" in doc["detail"] and first["id"] in doc["detail"]
    doc = assert_problem(
        await api.patch(f"{CONTACTS}/{other['id']}", json={"email": "Taken@Example.com"}), 409
    )
    assert first["id"] in doc["detail"]
    assert (await api.get(f"{CONTACTS}/{other['id']}")).json() == other
    assert len(await walk(api, CONTACTS)) == 2


BAD_CREATES: list[tuple[dict[str, Any], set[str]]] = [
    ({}, {"email"}),
    ({"email": "not-an-address"}, {"email"}),
    ({"email": "a@localhost"}, {"email"}),
    ({"email": 5}, {"email"}),
    ({"email": "a@example.com", "firstName": 7}, {"firstName"}),
    ({"email": "a@example.com", "firstName": "x" * 201}, {"firstName"}),
    ({"email": "a@example.com", "phone": "1" * 101}, {"phone"}),
    ({"email": "a@example.com", "nickname": "Ada"}, {"nickname"}),
    ({"email": "a@example.com", "customFields": []}, {"customFields"}),
    ({"email": "a@example.com", "customFields": {"": 1}}, {"customFields"}),
    ({"email": "a@example.com", "sources": []}, {"sources"}),
]


async def test_bad_input_is_422_naming_the_fields(api: httpx.AsyncClient) -> None:
    for body, fields in BAD_CREATES:
        assert_problem(await api.post(CONTACTS, json=body), 422, fields)
    assert await walk(api, CONTACTS) == []


BAD_CHANGES: list[tuple[dict[str, Any], set[str]]] = [
    ({"email": None}, {"email"}),
    ({"email": "nope"}, {"email"}),
    ({"lastName": "x" * 201}, {"lastName"}),
    ({"customFields": {"k" * 101: 1}}, {"customFields." + "k" * 101}),
    ({"id": "con_other"}, {"id"}),
]


async def test_bad_changes_are_422(api: httpx.AsyncClient) -> None:
    created = await create(api, email="keep@example.com")
    path = f"{CONTACTS}/{created['id']}"
    for body, fields in BAD_CHANGES:
        assert_problem(await api.patch(path, json=body), 422, fields)
    assert (await api.get(path)).json() == created


# -- lists ------------------------------------------------------------------------------------


@pytest.fixture
async def people(api: httpx.AsyncClient) -> dict[str, str]:
    """Contacts to filter and search; name -> id."""
    made = {}
    for email, first, last, company in [
        ("ada@example.com", "Ada", "Lovelace", "Analytical Engines"),
        ("grace@navy.example", "Grace", "Hopper", "US Navy"),
        ("alan@example.com", "Alan", "Turing", "analytical engines"),
        ("jurgen@example.de", "Jürgen", "Müller", "MÜLLER GmbH"),
        ("under_score@example.com", None, None, None),
    ]:
        body = {"email": email, "firstName": first, "lastName": last, "company": company}
        made[email.split("@")[0]] = (await create(api, **body))["id"]
    return made


#: (query parameters, the people found, in order)
SEARCHES: list[tuple[dict[str, str], list[str]]] = [
    ({}, ["ada", "grace", "alan", "jurgen", "under_score"]),
    ({"email": "ADA@example.com "}, ["ada"]),
    ({"email": "ada"}, []),
    ({"company": "analytical ENGINES"}, ["ada", "alan"]),
    ({"company": "müller gmbh"}, ["jurgen"]),
    ({"q": "ada"}, ["ada"]),
    ({"q": "LOVELACE"}, ["ada"]),
    ({"q": "ada lovelace"}, ["ada"]),
    ({"q": "navy"}, ["grace"]),
    ({"q": "example.com"}, ["ada", "alan", "under_score"]),
    ({"q": "engines"}, ["ada", "alan"]),
    ({"q": "MÜLLER"}, ["jurgen"]),
    ({"q": "jür"}, ["jurgen"]),
    ({"q": "_"}, ["under_score"]),  # LIKE wildcards are literal
    ({"q": "%"}, []),
    ({"q": "a", "company": "US Navy"}, ["grace"]),
    ({"q": "nobody"}, []),
    ({"q": " ", "company": "", "email": ""}, ["ada", "grace", "alan", "jurgen", "under_score"]),
]


async def test_filters_and_search(api: httpx.AsyncClient, people: dict[str, str]) -> None:
    for params, expected in SEARCHES:
        found = await walk(api, CONTACTS, **params)
        assert [c["id"] for c in found] == [people[name] for name in expected], params


async def test_filter_by_source_integration_and_update_time(
    api: httpx.AsyncClient, hub: Hub, admin_key: IssuedKey
) -> None:
    tenant = admin_key.key.tenant_id
    crm = (await create_integration(api, name="CRM"))["id"]
    shop = (await create_integration(api, name="Shop"))["id"]
    await synced(hub, tenant, crm, [{"id": "1", "email": "both@example.com"}])
    await synced(hub, tenant, crm, [{"id": "2", "email": "crm@example.com"}])
    await synced(hub, tenant, shop, [{"id": "s1", "email": "both@example.com"}])
    manual = await create(api, email="manual@example.com")

    from_crm = await walk(api, CONTACTS, integrationId=crm)
    assert [c["email"] for c in from_crm] == ["both@example.com", "crm@example.com"]
    assert from_crm[0]["sources"] == [
        {"integrationId": crm, "externalId": "1"},
        {"integrationId": shop, "externalId": "s1"},
    ]
    from_shop = await walk(api, CONTACTS, integrationId=shop)
    assert [c["email"] for c in from_shop] == ["both@example.com"]
    assert await walk(api, CONTACTS, integrationId="int_none") == []

    since = await walk(api, CONTACTS, updatedSince=manual["updatedAt"])
    assert [c["email"] for c in since] == ["manual@example.com"]
    later = datetime.fromisoformat(manual["updatedAt"]) + timedelta(seconds=1)
    assert await walk(api, CONTACTS, updatedSince=later.isoformat()) == []
    assert_problem(
        await api.get(CONTACTS, params={"updatedSince": "2026-01-01T00:00:00"}),
        422,
        {"updatedSince"},
    )


async def test_pages_follow_the_cursor(api: httpx.AsyncClient) -> None:
    ids = [(await create(api, email=f"p{i}@example.com", company="Acme"))["id"] for i in range(7)]

    first = (await api.get(CONTACTS, params={"limit": 3})).json()
    assert [c["id"] for c in first["data"]] == ids[:3] and first["nextCursor"]
    assert [c["id"] for c in await walk(api, CONTACTS, limit=3)] == ids
    assert [c["id"] for c in await walk(api, CONTACTS, limit=2, company="acme")] == ids
    last = (await api.get(CONTACTS, params={"limit": 7})).json()
    assert last["nextCursor"] is None

    assert_problem(await api.get(CONTACTS, params={"limit": 0}), 422, {"limit"})
    assert_problem(await api.get(CONTACTS, params={"limit": 201}), 422, {"limit"})
    assert_problem(await api.get(CONTACTS, params={"cursor": "%%%"}), 422, {"cursor"})


# -- export -----------------------------------------------------------------------------------


def parse_csv(response: httpx.Response) -> list[dict[str, str]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    return list(csv.DictReader(io.StringIO(response.text)))


def as_row(contact: dict[str, Any]) -> dict[str, str]:
    """What the export must say of a contact the list shows."""
    row = {k: "" if v is None else v for k, v in contact.items()}
    row["customFields"] = json.dumps(contact["customFields"]) if contact["customFields"] else ""
    row["sources"] = json.dumps(contact["sources"]) if contact["sources"] else ""
    for key in ("createdAt", "updatedAt"):
        row[key] = datetime.fromisoformat(contact[key]).isoformat()
    return row


def normalised(row: dict[str, str]) -> dict[str, str]:
    row = dict(row)
    for key in ("createdAt", "updatedAt"):
        row[key] = datetime.fromisoformat(row[key]).isoformat()
    if row["customFields"]:
        row["customFields"] = json.dumps(json.loads(row["customFields"]))
    if row["sources"]:
        row["sources"] = json.dumps(json.loads(row["sources"]))
    return row


async def test_export_matches_the_list(
    api: httpx.AsyncClient, hub: Hub, admin_key: IssuedKey
) -> None:
    crm = (await create_integration(api, name="CRM"))["id"]
    await create(
        api,
        email="ada@example.com",
        firstName='Ada "The Countess"',
        lastName="Lovelace, King",
        company="Engines\nLtd",
        customFields={"plan": "pro", "tags": ["a", "b"]},
    )
    await create(api, email="eve@example.com", firstName="=cmd|' /C calc'!A0")
    await synced(hub, admin_key.key.tenant_id, crm, [{"id": "x1", "email": "sync@example.com"}])

    rows = parse_csv(await api.get(EXPORT))
    listed = await walk(api, CONTACTS)
    assert [r["id"] for r in rows] == [c["id"] for c in listed]
    expected = [as_row(c) for c in listed]
    expected[1]["firstName"] = "'=cmd|' /C calc'!A0"  # made inert for spreadsheets
    assert [normalised(r) for r in rows] == expected

    filtered = parse_csv(await api.get(EXPORT, params={"integrationId": crm}))
    assert [r["email"] for r in filtered] == ["sync@example.com"]
    assert parse_csv(await api.get(EXPORT, params={"q": "nobody"})) == []
    assert_problem(await api.get(EXPORT, params={"updatedSince": "yesterday"}), 422)


async def test_a_large_export_streams_every_contact_once(
    api: httpx.AsyncClient, hub: Hub, admin_key: IssuedKey
) -> None:
    records = [{"id": str(i), "email": f"bulk{i}@example.com"} for i in range(2345)]
    await synced(hub, admin_key.key.tenant_id, "int_bulk", records)

    rows = parse_csv(await api.get(EXPORT))
    assert sorted(r["email"] for r in rows) == sorted(r["email"] for r in records)
    assert len({r["id"] for r in rows}) == len(records)
    # Read and sent a batch at a time: the header, then one chunk per 1000 contacts.
    chunks = [c async for c in hub.contacts.export_csv(admin_key.key.tenant_id, ContactFilter())]
    assert [c.count("\r\n") for c in chunks] == [1, 1000, 1000, 345]


# -- tenancy and scopes -----------------------------------------------------------------------


async def test_another_tenants_contacts_are_404(
    api: httpx.AsyncClient, hub: Hub, client: httpx.AsyncClient
) -> None:
    mine = await create(api, email="mine@example.com")
    tenant_b = await hub.access.create_tenant("tenant-b")
    b = bearer(await key_for(hub, tenant_b.id, "admin"))
    path = f"{CONTACTS}/{mine['id']}"
    nowhere = f"{CONTACTS}/{NO_CONTACT}"

    for method, body in (("GET", None), ("PATCH", {"firstName": "Eve"}), ("DELETE", None)):
        theirs = await client.request(method, path, json=body, headers=b)
        missing = await client.request(method, nowhere, json=body, headers=b)
        assert_problem(theirs, 404)
        assert theirs.json()["detail"].replace(mine["id"], NO_CONTACT) == missing.json()["detail"]

    listed = await client.get(CONTACTS, headers=b)
    assert listed.json()["data"] == []
    assert parse_csv(await client.get(EXPORT, headers=b)) == []
    # The same address is free in another tenant.
    same = await client.post(CONTACTS, json={"email": "mine@example.com"}, headers=b)
    assert same.status_code == 201
    assert (await api.get(path)).json() == mine


async def test_reading_needs_read_and_writing_needs_write(
    client: httpx.AsyncClient, hub: Hub, admin_key: IssuedKey
) -> None:
    reader = bearer(await key_for(hub, admin_key.key.tenant_id, "read"))
    writer = bearer(await key_for(hub, admin_key.key.tenant_id, "write"))
    created = await client.post(CONTACTS, json={"email": "w@example.com"}, headers=writer)
    assert created.status_code == 201
    path = f"{CONTACTS}/{created.json()['id']}"

    for url in (CONTACTS, path, EXPORT):
        assert (await client.get(url, headers=reader)).status_code == 200
    assert_problem(
        await client.post(CONTACTS, json={"email": "r@example.com"}, headers=reader), 403
    )
    assert_problem(await client.patch(path, json={"firstName": "R"}, headers=reader), 403)
    assert_problem(await client.delete(path, headers=reader), 403)
    assert_problem(await client.get(CONTACTS), 401)
    assert_problem(await client.get(EXPORT), 401)


# -- change events ----------------------------------------------------------------------------


async def events_of(api: httpx.AsyncClient, webhook_id: str) -> list[tuple[str, dict[str, Any]]]:
    """(type, data) of every event the subscription received, oldest first."""
    deliveries = await walk(api, f"{WEBHOOKS}/{webhook_id}/deliveries", limit=200)
    found = []
    for delivery in reversed(deliveries):
        detail = (await api.get(f"{WEBHOOKS}/deliveries/{delivery['id']}")).json()
        found.append((detail["event"]["type"], detail["event"]["data"]))
    return found


async def test_api_changes_publish_exactly_their_events(api: httpx.AsyncClient) -> None:
    hook = await create_webhook(api, events=["contact.*"])
    other = await create_webhook(api, name="leads only", events=["lead.created"])

    ada = await create(api, email="ada@example.com", firstName="Ada")
    path = f"{CONTACTS}/{ada['id']}"
    renamed = (await api.patch(path, json={"lastName": "Lovelace"})).json()
    await api.patch(path, json={"lastName": "Lovelace"})  # no change: no event
    assert (await api.post(CONTACTS, json={"email": "ADA@example.com"})).status_code == 409
    assert (await api.post(CONTACTS, json={"email": "bad"})).status_code == 422
    assert (await api.delete(path)).status_code == 204
    assert (await api.delete(path)).status_code == 404  # gone already: no second event

    assert await events_of(api, hook["id"]) == [
        ("contact.created", ada),
        ("contact.updated", renamed),
        ("contact.deleted", renamed),  # the contact as it was
    ]
    assert await events_of(api, other["id"]) == []


async def test_an_archived_event_type_publishes_nothing_and_blocks_nothing(
    api: httpx.AsyncClient,
) -> None:
    hook = await create_webhook(api, events=["contact.*"])
    archived = await api.patch(f"{EVENT_TYPES}/contact.updated", json={"archived": True})
    assert archived.status_code == 200, archived.text

    created = await create(api, email="a@example.com")
    changed = await api.patch(f"{CONTACTS}/{created['id']}", json={"firstName": "A"})

    assert changed.status_code == 200 and changed.json()["firstName"] == "A"
    assert [t for t, _ in await events_of(api, hook["id"])] == ["contact.created"]


async def test_a_sync_batch_publishes_its_changes_in_its_transaction(
    api: httpx.AsyncClient, hub: Hub, admin_key: IssuedKey
) -> None:
    """What the sync run does per page: upsert, then publish what changed, one transaction."""
    tenant = admin_key.key.tenant_id
    hook = await create_webhook(api, events=["contact.*"])
    mapping = FieldMapping.build("api_endpoint")

    async def sync(records: list[dict[str, Any]]) -> None:
        items = [m for m in (map_record(r, mapping) for r in records) if isinstance(m, Mapped)]
        now = datetime.now(UTC)
        async with hub.store.transaction() as conn:
            outcome = await contact_upserts.upsert_many(conn, tenant, "int_crm", items, now)
            await publish_changes(
                conn, tenant, created=outcome.created, updated=outcome.updated, now=now
            )

    page = [{"id": "1", "email": "a@example.com"}, {"id": "2", "email": "b@example.com"}]
    await sync(page)
    await sync(page)  # unchanged: nothing
    await sync([page[0], {**page[1], "company": "Acme"}])

    got = [(t, d["email"], d["company"]) for t, d in await events_of(api, hook["id"])]
    assert got == [
        ("contact.created", "a@example.com", None),
        ("contact.created", "b@example.com", None),
        ("contact.updated", "b@example.com", "Acme"),
    ]
    listed = {c["email"]: c for c in await walk(api, CONTACTS)}
    events = await events_of(api, hook["id"])
    assert events[-1][1] == listed["b@example.com"]

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with hub.store.transaction() as conn:
            outcome = await contact_upserts.upsert_many(
                conn, tenant, "int_crm", [mapped_one("c@example.com")], datetime.now(UTC)
            )
            await publish_changes(conn, tenant, created=outcome.created, now=datetime.now(UTC))
            raise Boom
    assert len(await events_of(api, hook["id"])) == 3
    assert "c@example.com" not in {c["email"] for c in await walk(api, CONTACTS)}


def mapped_one(email: str) -> Mapped:
    result = map_record({"email": email}, FieldMapping.build("api_endpoint"))
    assert isinstance(result, Mapped)
    return result
