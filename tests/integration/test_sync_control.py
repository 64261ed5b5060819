"""Steering contact sync runs, end to end on SQLite and PostgreSQL against a real local
contacts API: incremental runs (from an updated-since value or a saved cursor) and what makes
the next one a full one, a full sync asked for, a run cancelled or left without its
integration."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
from sync_support import (
    MAPPING,
    Clock,
    HubSpotLike,
    contacts,
    counts,
    make_integration,
    person,
    run_held_at_page_three,
    sync_now,
)

from isthmus.hub import Hub
from isthmus.store import queue
from isthmus.store.sync_runs import SYNC_KIND
from isthmus.worker import Job, Worker


async def test_a_running_run_cancelled_stops_at_its_next_write_and_keeps_what_it_wrote(
    local_hub: Hub, local_api: httpx.AsyncClient, crm: HubSpotLike, worker: Worker, clock: Clock
) -> None:
    integration = await make_integration(local_api, crm, incremental={"type": "cursor"})
    run_id, running = await run_held_at_page_three(
        local_hub, local_api, crm, clock, integration["id"]
    )

    cancel = await local_api.post(f"/api/v1/runs/{run_id}/cancel")

    assert cancel.status_code == 200, cancel.text
    assert (cancel.json()["status"], counts(cancel.json())) == ("cancelled", (20, 20, 0, 0, 0))
    assert cancel.json()["finishedAt"] is not None
    crm.release.set()  # the third page arrives: its write finds the run ended and stops
    await asyncio.wait_for(running, 10)
    run = (await local_api.get(f"/api/v1/runs/{run_id}")).json()
    assert (run["status"], counts(run)) == ("cancelled", (20, 20, 0, 0, 0))
    assert len(await contacts(local_api)) == 20
    assert (await local_api.post(f"/api/v1/runs/{run_id}/cancel")).status_code == 409
    audit = await local_api.get("/api/v1/audit", params={"action": "integration.sync.cancel"})
    assert audit.json()["data"][0]["diff"]["runId"] == run_id

    # Nothing was saved to pick up from: the next run walks the whole listing, at once.
    crm.hits.clear()
    crm.hold_at = None
    again = await sync_now(local_api, worker, integration["id"])
    assert crm.hits[0].get("after") is None
    assert counts(again) == (25, 5, 0, 20, 0)


async def test_a_run_whose_integration_is_deleted_stops_writing(
    local_hub: Hub, local_api: httpx.AsyncClient, crm: HubSpotLike, clock: Clock
) -> None:
    integration = await make_integration(local_api, crm)
    run_id, running = await run_held_at_page_three(
        local_hub, local_api, crm, clock, integration["id"]
    )

    deleted = await local_api.delete(f"/api/v1/integrations/{integration['id']}")
    assert deleted.status_code == 204, deleted.text
    crm.release.set()
    await asyncio.wait_for(running, 10)

    # The pages written before stay (contacts outlive the integration); the rest is not.
    assert len(await contacts(local_api)) == 20
    assert (await local_api.get(f"/api/v1/runs/{run_id}")).status_code == 404


async def test_a_queued_run_cancelled_never_calls_the_api(
    local_api: httpx.AsyncClient, crm: HubSpotLike, worker: Worker
) -> None:
    integration = await make_integration(local_api, crm)
    started = (await local_api.post(f"/api/v1/integrations/{integration['id']}/sync")).json()

    cancel = await local_api.post(f"/api/v1/runs/{started['id']}/cancel")
    assert (cancel.status_code, cancel.json()["status"]) == (200, "cancelled")
    assert await worker.run_pending() == 1  # its job is taken, and completed

    assert crm.hits == []
    assert (await local_api.post("/api/v1/runs/run_nope/cancel")).status_code == 404


async def test_an_incremental_sync_asks_only_for_what_changed(
    local_api: httpx.AsyncClient, crm: HubSpotLike, worker: Worker
) -> None:
    integration = await make_integration(
        local_api, crm, incremental={"param": "updatedSince", "recordField": "updatedAt"}
    )
    first = await sync_now(local_api, worker, integration["id"])
    assert counts(first) == (25, 25, 0, 0, 0)
    assert "updatedSince" not in crm.hits[0]
    newest = max(p["updatedAt"] for p in crm.people)

    crm.people.append(person(99) | {"updatedAt": "2026-12-01T00:00:00Z"})
    second = await sync_now(local_api, worker, integration["id"])

    assert crm.hits[-1]["updatedSince"] == newest
    assert counts(second) == (1, 1, 0, 0, 0)


async def test_a_cursor_incremental_sync_starts_where_the_last_one_ended(
    local_api: httpx.AsyncClient, crm: HubSpotLike, worker: Worker
) -> None:
    integration = await make_integration(local_api, crm, incremental={"type": "cursor"})
    first = await sync_now(local_api, worker, integration["id"])
    assert counts(first) == (25, 25, 0, 0, 0)
    assert [h.get("after") for h in crm.hits] == [None, "10", "20"]

    crm.people.extend(person(n) for n in range(25, 32))
    crm.hits.clear()
    second = await sync_now(local_api, worker, integration["id"])

    # The last page again (5 known), then what came after it (7 new).
    assert [h.get("after") for h in crm.hits] == ["20", "30"]
    assert counts(second) == (12, 7, 0, 5, 0)
    assert len(await contacts(local_api)) == 32


async def test_a_saved_cursor_the_api_refuses_makes_the_run_a_full_one(
    local_api: httpx.AsyncClient,
    crm: HubSpotLike,
    worker: Worker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    integration = await make_integration(local_api, crm, incremental={"type": "cursor"})
    await sync_now(local_api, worker, integration["id"])
    crm.people.append(person(40))
    crm.hits.clear()
    crm.expire_once_at = "20"  # the saved cursor has expired meanwhile

    with caplog.at_level(logging.INFO, logger="isthmus.sync"):
        run = await sync_now(local_api, worker, integration["id"])

    assert [h.get("after") for h in crm.hits] == ["20", None, "10", "20"]
    assert (run["status"], counts(run)) == ("succeeded", (26, 1, 0, 25, 0))
    assert "refused the saved cursor" in caplog.text and "cursor expired" in caplog.text
    # And it saved a cursor again: the next run picks up from the listing's end.
    crm.hits.clear()
    await sync_now(local_api, worker, integration["id"])
    assert [h.get("after") for h in crm.hits] == ["20"]


async def test_a_full_sync_walks_everything_and_is_refused_while_a_run_runs(
    local_hub: Hub, local_api: httpx.AsyncClient, crm: HubSpotLike, worker: Worker, clock: Clock
) -> None:
    integration = await make_integration(local_api, crm, incremental={"type": "cursor"})
    sync = f"/api/v1/integrations/{integration['id']}/sync"
    await sync_now(local_api, worker, integration["id"])
    crm.hits.clear()

    full = await local_api.post(sync, params={"full": "true"})
    assert full.status_code == 202, full.text
    await worker.run_pending()

    assert [h.get("after") for h in crm.hits] == [None, "10", "20"]
    run = (await local_api.get(f"/api/v1/runs/{full.json()['id']}")).json()
    assert counts(run) == (25, 0, 0, 25, 0)
    audit = await local_api.get("/api/v1/audit", params={"action": "integration.sync.request"})
    assert audit.json()["data"][0]["diff"]["full"] is True

    # While a run is running it has read the saved cursor already: a full sync must wait.
    started = (await local_api.post(sync)).json()
    crm.hold_at = "20"
    [claimed] = await queue.claim(
        local_hub.store, kinds=[SYNC_KIND], limit=1, lease_seconds=30, now=clock()
    )
    running = asyncio.create_task(local_hub.sync(Job(claimed, local_hub.store, clock)))
    await asyncio.wait_for(crm.held.wait(), 10)
    refused = await local_api.post(sync, params={"full": "true"})
    assert refused.status_code == 409, refused.text
    assert started["id"] in refused.json()["detail"]
    crm.release.set()
    await asyncio.wait_for(running, 10)
    crm.hits.clear()
    # The refusal changed nothing: the next plain run is incremental still.
    await sync_now(local_api, worker, integration["id"])
    assert [h.get("after") for h in crm.hits] == ["20"]


@pytest.mark.parametrize(
    "incremental",
    [{"type": "cursor"}, {"param": "updatedSince", "recordField": "updatedAt"}],
    ids=["cursor", "updated-since"],
)
async def test_a_changed_mapping_makes_the_next_incremental_sync_a_full_one(
    local_api: httpx.AsyncClient, crm: HubSpotLike, worker: Worker, incremental: dict[str, str]
) -> None:
    integration = await make_integration(local_api, crm, incremental=incremental)
    await sync_now(local_api, worker, integration["id"])
    again = await sync_now(local_api, worker, integration["id"])
    assert again["fetched"] < 25  # incremental indeed
    changed = {**integration["config"], "fieldMapping": MAPPING | {"jobTitle": "id"}}
    patched = await local_api.patch(
        f"/api/v1/integrations/{integration['id']}", json={"config": changed}
    )
    assert patched.status_code == 200, patched.text
    crm.hits.clear()

    run = await sync_now(local_api, worker, integration["id"])

    # Every record read again, so every contact gets the newly mapped field.
    assert ("updatedSince" in crm.hits[0], crm.hits[0].get("after")) == (False, None)
    assert counts(run) == (25, 0, 25, 0, 0)
    assert {c["jobTitle"] for c in await contacts(local_api)} == {p["id"] for p in crm.people}
