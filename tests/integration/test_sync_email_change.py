"""A record whose email changed at the source, synced end to end (a HubSpot-shaped local
API, a real worker, SQLite and PostgreSQL): its contact keeps its id and takes the new
email, with one ``contact.updated``, instead of a second contact beside a stale one."""

from __future__ import annotations

import copy
from typing import Any

import httpx
from sync_support import HubSpotLike, contact_events, contacts, counts, make_integration, person
from sync_support import sync_now as run_sync
from webhook_support import create_webhook

from isthmus.worker import Worker


def with_email(record: dict[str, Any], email: str) -> dict[str, Any]:
    changed = copy.deepcopy(record)
    changed["properties"]["email"] = email
    return changed


async def by_email(api: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    return {c["email"]: c for c in await contacts(api)}


async def test_a_contact_whose_email_changed_at_the_source_keeps_its_id(
    local_api: httpx.AsyncClient, crm: HubSpotLike, worker: Worker
) -> None:
    hook = await create_webhook(local_api, url=crm.url("/hook"), events=["contact.*"])
    integration = await make_integration(local_api, crm)
    await run_sync(local_api, worker, integration["id"])
    before = await by_email(local_api)
    ada = before["person7@example.com"]

    crm.people[7] = with_email(crm.people[7], "Ada.New@Example.com")
    changed = await run_sync(local_api, worker, integration["id"])

    assert changed["status"] == "succeeded"
    assert counts(changed) == (25, 0, 1, 24, 0)
    after = await by_email(local_api)
    assert len(after) == 25 and "person7@example.com" not in after
    moved = after["ada.new@example.com"]
    assert moved["id"] == ada["id"]
    assert moved["firstName"] == "First7" and moved["createdAt"] == ada["createdAt"]
    assert moved["sources"] == [{"integrationId": integration["id"], "externalId": "1007"}]
    assert await contact_events(local_api, hook["id"]) == ["contact.created"] * 25 + [
        "contact.updated"
    ]
    # The contact is where the next run looks for it: nothing more to write.
    again = await run_sync(local_api, worker, integration["id"])
    assert counts(again) == (25, 0, 0, 25, 0)
    assert len(await contact_events(local_api, hook["id"])) == 26


async def test_the_old_email_listed_for_another_record_in_the_same_page_is_a_new_contact(
    local_api: httpx.AsyncClient, crm: HubSpotLike, worker: Worker
) -> None:
    integration = await make_integration(local_api, crm)
    await run_sync(local_api, worker, integration["id"])
    old = (await by_email(local_api))["person3@example.com"]

    # Record 1003 moves to a new address; a new record 1099, on the same page, has the old.
    crm.people[3] = with_email(crm.people[3], "person3@new.example.com")
    newcomer = person(99)
    newcomer["properties"]["email"] = "person3@example.com"
    crm.people.insert(4, newcomer)
    changed = await run_sync(local_api, worker, integration["id"])

    assert counts(changed) == (26, 1, 1, 24, 0)
    after = await by_email(local_api)
    assert len(after) == 26
    assert after["person3@new.example.com"]["id"] == old["id"]
    fresh = after["person3@example.com"]
    assert fresh["id"] != old["id"] and fresh["firstName"] == "First99"
    assert [s["externalId"] for s in fresh["sources"]] == ["1099"]


async def test_a_new_email_another_contact_has_goes_to_that_contact(
    local_api: httpx.AsyncClient, crm: HubSpotLike, worker: Worker
) -> None:
    # Emails are unique: when the new one is taken, its holder gets the record, as before.
    integration = await make_integration(local_api, crm)
    await run_sync(local_api, worker, integration["id"])
    manual = await local_api.post("/api/v1/contacts", json={"email": "grace@example.com"})
    assert manual.status_code == 201, manual.text

    crm.people[5] = with_email(crm.people[5], "grace@example.com")
    changed = await run_sync(local_api, worker, integration["id"])

    assert counts(changed) == (25, 0, 1, 24, 0)
    after = await by_email(local_api)
    assert len(after) == 26
    assert after["grace@example.com"]["id"] == manual.json()["id"]
    assert after["grace@example.com"]["firstName"] == "First5"
    assert "person5@example.com" in after
