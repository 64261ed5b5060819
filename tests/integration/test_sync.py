"""Contact sync runs end to end: a real local contacts API in HubSpot's shape, the API to
start runs, the ``integration.sync`` job run by a real worker on SQLite and PostgreSQL.

What a user sees: contacts arrive, a re-sync of unchanged data changes and publishes
nothing, a changed contact publishes one ``contact.updated``, records without an email are
counted as skipped with their reason, a run interrupted mid-way resumes from its checkpoint,
a rate limit is waited out (not a failure), a refused key ends in "reauthorization needed".
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from aiohttp import web
from api_support import create_integration
from webhook_support import LocalServer, create_webhook

from isthmus.hub import Hub
from isthmus.store import queue
from isthmus.store.sync_runs import SYNC_KIND
from isthmus.store.tables import event_types
from isthmus.worker import Job, Worker

API_KEY = "pat-na1-7c1f0e2b-33aa-4f1e-9d7a-0b5e6c4d3a21"
PAGE = 10
MAPPING = {
    "email": "properties.email",
    "firstName": "properties.firstname",
    "lastName": "properties.lastname",
    "company": "properties.company",
}


def person(n: int) -> dict[str, Any]:
    return {
        "id": str(1000 + n),
        "properties": {
            "email": f"Person{n}@Example.com",
            "firstname": f"First{n}",
            "lastname": f"Last{n}",
            "company": "Acme",
        },
        "updatedAt": f"2026-11-{1 + n % 20:02d}T10:00:00Z",
        "archived": False,
    }


class HubSpotLike(LocalServer):
    """``GET /crm/v3/objects/contacts?limit=&after=``: ``results`` + ``paging.next.after``."""

    def __init__(self, people: list[dict[str, Any]]) -> None:
        super().__init__()
        self.people = people
        self.hits: list[dict[str, str]] = []
        self.rate_limit_once_at: str | None = None  # answer 429 once for this cursor
        self.hold_at: str | None = None  # block the request for this cursor until released
        self.held = asyncio.Event()
        self.release = asyncio.Event()

    async def _handle(self, request: web.Request) -> web.Response:
        self.hits.append(dict(request.query))
        if request.headers.get("Authorization") != f"Bearer {API_KEY}":
            return web.json_response({"status": "error", "message": "bad token"}, status=401)
        after = request.query.get("after", "0")
        if self.rate_limit_once_at == after:
            self.rate_limit_once_at = None
            return web.json_response(
                {"status": "error", "message": "ten secondly rolling limit"},
                status=429,
                headers={"Retry-After": "120"},
            )
        if self.hold_at == after:
            self.held.set()
            await self.release.wait()
        since = request.query.get("updatedSince")
        people = [p for p in self.people if since is None or p["updatedAt"] > since]
        start = int(after)
        body: dict[str, Any] = {"results": people[start : start + PAGE]}
        if start + PAGE < len(people):
            body["paging"] = {"next": {"after": str(start + PAGE)}}
        return web.json_response(body)


class Clock:
    """Real time, moved ahead by ``ahead`` when a test skips a wait."""

    def __init__(self) -> None:
        self.ahead = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.ahead


@pytest.fixture
async def crm() -> AsyncIterator[HubSpotLike]:
    server = HubSpotLike([person(n) for n in range(25)])
    await server.start()
    try:
        yield server
    finally:
        server.release.set()
        await server.stop()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def worker(local_hub: Hub, clock: Clock) -> Worker:
    worker = Worker(local_hub.store, clock=clock)
    worker.register(SYNC_KIND, local_hub.sync)
    return worker


async def make_integration(
    api: httpx.AsyncClient, crm: HubSpotLike, **config: Any
) -> dict[str, Any]:
    return await create_integration(
        api,
        config={
            "apiEndpoint": crm.url("/crm/v3/objects/contacts"),
            "dataSelector": "results",
            "pagination": {
                "type": "cursor",
                "cursorPath": "paging.next.after",
                "cursorParam": "after",
            },
            "fieldMapping": MAPPING,
            **config,
        },
        credentials={"apiKey": API_KEY},
    )


async def sync_now(api: httpx.AsyncClient, worker: Worker, integration_id: str) -> dict[str, Any]:
    started = await api.post(f"/api/v1/integrations/{integration_id}/sync")
    assert started.status_code == 202, started.text
    assert started.json()["status"] == "queued"
    await worker.run_pending()
    run = await api.get(f"/api/v1/runs/{started.json()['id']}")
    assert run.status_code == 200, run.text
    found: dict[str, Any] = run.json()
    return found


async def contacts(api: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await api.get("/api/v1/contacts", params={"limit": 100})
    assert response.status_code == 200, response.text
    listed: list[dict[str, Any]] = response.json()["data"]
    return listed


async def contact_events(api: httpx.AsyncClient, webhook_id: str) -> list[str]:
    response = await api.get(f"/api/v1/webhooks/{webhook_id}/deliveries", params={"limit": 100})
    assert response.status_code == 200, response.text
    return sorted(d["eventType"] for d in response.json()["data"])


async def fetched_at_least(api: httpx.AsyncClient, run_id: str, fetched: int) -> None:
    while (await api.get(f"/api/v1/runs/{run_id}")).json()["fetched"] < fetched:
        await asyncio.sleep(0.01)


def counts(run: dict[str, Any]) -> tuple[int, ...]:
    keys = ("fetched", "created", "updated", "unchanged", "skipped")
    return tuple(run[k] for k in keys)


async def test_a_first_sync_brings_every_contact_and_publishes_each_once(
    local_api: httpx.AsyncClient, crm: HubSpotLike, worker: Worker
) -> None:
    hook = await create_webhook(local_api, url=crm.url("/hook"), events=["contact.*"])
    integration = await make_integration(local_api, crm)

    run = await sync_now(local_api, worker, integration["id"])

    assert (run["status"], run["trigger"], run["error"]) == ("succeeded", "api", None)
    assert counts(run) == (25, 25, 0, 0, 0)
    assert run["startedAt"] is not None and run["finishedAt"] is not None
    stored = await contacts(local_api)
    assert sorted(c["email"] for c in stored) == sorted(f"person{n}@example.com" for n in range(25))
    one = next(c for c in stored if c["email"] == "person3@example.com")
    assert (one["firstName"], one["lastName"], one["company"]) == ("First3", "Last3", "Acme")
    assert one["sources"] == [{"integrationId": integration["id"], "externalId": "1003"}]
    assert await contact_events(local_api, hook["id"]) == ["contact.created"] * 25
    assert len(crm.hits) == 3  # 10 + 10 + 5

    listed = (await local_api.get(f"/api/v1/integrations/{integration['id']}/runs")).json()
    assert [r["id"] for r in listed["data"]] == [run["id"]]


async def listed(api: httpx.AsyncClient, path: str) -> list[dict[str, Any]]:
    """Every item of a cursor-paginated list."""
    items: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 100}
    while True:
        response = await api.get(path, params=params)
        assert response.status_code == 200, response.text
        items += response.json()["data"]
        if not response.json().get("nextCursor"):
            return items
        params["cursor"] = response.json()["nextCursor"]


async def test_a_long_listing_is_written_once_published_once_and_logged_call_by_call(
    local_api: httpx.AsyncClient, crm: HubSpotLike, worker: Worker
) -> None:
    # 124 pages: fetched ahead of the writing, written several to a transaction when they
    # wait, every call in the request log by the time the run has ended.
    crm.people[:] = [person(n) for n in range(1234)]
    crm.people[500]["properties"]["email"] = "PERSON499@example.com"
    hook = await create_webhook(local_api, url=crm.url("/hook"), events=["contact.*"])
    integration = await make_integration(local_api, crm)

    run = await sync_now(local_api, worker, integration["id"])

    # Person 500 (first of page 51) has person 499's email (last of page 50): it updates
    # that contact, whether or not the two pages were written in one transaction.
    assert run["status"] == "succeeded"
    assert counts(run) == (1234, 1233, 1, 0, 0)
    stored = await listed(local_api, "/api/v1/contacts")
    assert len({c["email"] for c in stored}) == len(stored) == 1233
    shared = next(c for c in stored if c["email"] == "person499@example.com")
    assert (shared["firstName"], shared["sources"][0]["externalId"]) == ("First500", "1500")
    deliveries = await listed(local_api, f"/api/v1/webhooks/{hook['id']}/deliveries")
    assert sorted(d["eventType"] for d in deliveries) == ["contact.created"] * 1233 + [
        "contact.updated"
    ]
    metrics = await local_api.get(f"/api/v1/integrations/{integration['id']}/metrics")
    assert metrics.json()["totalRequests"] == len(crm.hits) == 124


async def test_a_write_that_fails_keeps_every_later_page_out_and_the_checkpoint_before_it(
    local_hub: Hub, local_api: httpx.AsyncClient, crm: HubSpotLike, worker: Worker
) -> None:
    # Writes overlap on PostgreSQL (the next one runs its statements while the one before
    # waits for its own): when one fails, no write of later pages may commit, or the
    # checkpoint would stand for pages that were never written. The failing write is held
    # on a row lock (person 775, on the bad record's page, exists already and is locked by
    # another transaction) while the writes after it get as far as they can.
    crm.people[:] = [person(n) for n in range(1234)]
    bad, held = "person777@example.com", "person775@example.com"
    schema = {"not": {"properties": {"email": {"const": bad}}, "required": ["email"]}}
    patched = await local_api.patch("/api/v1/event-types/contact.created", json={"schema": schema})
    assert patched.status_code == 200, patched.text
    made = await local_api.post("/api/v1/contacts", json={"email": held})
    assert made.status_code == 201, made.text
    hook = await create_webhook(local_api, url=crm.url("/hook"), events=["contact.*"])
    integration = await make_integration(local_api, crm)
    release = asyncio.Event()
    holder: asyncio.Task[None] | None = None
    if local_hub.store.dialect == "postgresql":
        locked = asyncio.Event()

        async def hold_the_row() -> None:
            async with local_hub.store.transaction() as conn:
                query = "SELECT id FROM contacts WHERE email = :email FOR UPDATE"
                await conn.execute(sa.text(query), {"email": held})
                locked.set()
                await release.wait()

        holder = asyncio.create_task(hold_the_row())
        await asyncio.wait_for(locked.wait(), 10)

    running = asyncio.create_task(sync_now(local_api, worker, integration["id"]))
    if holder is not None:
        while not any(hit.get("after") == "770" for hit in crm.hits):
            await asyncio.sleep(0.01)
        await asyncio.sleep(1.0)  # the writes after the held one run meanwhile
        release.set()
        await holder
    run = await asyncio.wait_for(running, 60)

    assert run["status"] == "failed"
    assert "schema" in run["error"]
    stored = {c["email"] for c in await listed(local_api, "/api/v1/contacts")} - {held}
    written = len(stored)
    # What is stored is the first pages whole, ending before the bad record's page.
    assert written % PAGE == 0 and written <= 770
    assert stored == {f"person{n}@example.com" for n in range(written)}
    assert counts(run) == (written, written, 0, 0, 0)
    deliveries = await listed(local_api, f"/api/v1/webhooks/{hook['id']}/deliveries")
    assert len(deliveries) == written


async def test_a_large_first_sync_refreshes_statistics_between_writes_without_stalling(
    local_api: httpx.AsyncClient,
    crm: HubSpotLike,
    worker: Worker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Past 1,000 and 10,000 contacts the run refreshes the table's statistics, in a
    # transaction of its own. Taken while the next write waited for this one, on SQLite
    # it waited for a turn that write held: each write stalled until the turn's timeout.
    crm.people[:] = [person(n) for n in range(10_500)]
    integration = await make_integration(local_api, crm)

    with caplog.at_level(logging.WARNING, logger="isthmus.store"):
        run = await sync_now(local_api, worker, integration["id"])

    assert (run["status"], counts(run)) == ("succeeded", (10_500, 10_500, 0, 0, 0))
    stalls = [r.getMessage() for r in caplog.records if "for its turn" in r.getMessage()]
    assert stalls == []


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_a_first_sync_leaves_the_contacts_table_with_statistics(
    local_api: httpx.AsyncClient, local_hub: Hub, crm: HubSpotLike, worker: Worker
) -> None:
    # Without statistics (a new or emptied table) PostgreSQL rates the tenant index as good
    # as the email index for a lookup by email; taking it, each lookup of a first sync read
    # every contact written so far. A run refreshes them once it has written 10 contacts,
    # 100, 1,000, ...: between writes, and at its end for the runs that follow.
    integration = await make_integration(local_api, crm)

    run = await sync_now(local_api, worker, integration["id"])

    assert counts(run) == (25, 25, 0, 0, 0)
    async with local_hub.store.read() as conn:
        found = await conn.execute(
            sa.text("SELECT reltuples FROM pg_class WHERE relname = 'contacts'")
        )
        assert found.scalar_one() >= 10


async def test_a_resync_of_unchanged_data_writes_and_publishes_nothing(
    local_api: httpx.AsyncClient, crm: HubSpotLike, worker: Worker
) -> None:
    hook = await create_webhook(local_api, url=crm.url("/hook"), events=["contact.*"])
    integration = await make_integration(local_api, crm)
    await sync_now(local_api, worker, integration["id"])
    before = {c["id"]: c["updatedAt"] for c in await contacts(local_api)}

    again = await sync_now(local_api, worker, integration["id"])

    assert again["status"] == "succeeded"
    assert counts(again) == (25, 0, 0, 25, 0)
    assert {c["id"]: c["updatedAt"] for c in await contacts(local_api)} == before
    assert await contact_events(local_api, hook["id"]) == ["contact.created"] * 25

    crm.people[7] = copy.deepcopy(crm.people[7])
    crm.people[7]["properties"]["company"] = "Globex"
    changed = await sync_now(local_api, worker, integration["id"])

    assert counts(changed) == (25, 0, 1, 24, 0)
    assert await contact_events(local_api, hook["id"]) == ["contact.created"] * 25 + [
        "contact.updated"
    ]
    updated = [c for c in await contacts(local_api) if c["updatedAt"] != before[c["id"]]]
    assert [(c["email"], c["company"]) for c in updated] == [("person7@example.com", "Globex")]


async def test_records_without_a_usable_email_are_skipped_with_their_reason(
    local_api: httpx.AsyncClient, crm: HubSpotLike, worker: Worker
) -> None:
    crm.people[2]["properties"]["email"] = ""
    crm.people[5]["properties"]["email"] = "not-an-address"
    integration = await make_integration(local_api, crm)

    run = await sync_now(local_api, worker, integration["id"])

    assert run["status"] == "succeeded"
    assert counts(run) == (25, 23, 0, 0, 2)
    assert sum(run["skippedReasons"].values()) == 2
    assert any("no email" in reason for reason in run["skippedReasons"])
    polling = (await local_api.get(f"/api/v1/integrations/{integration['id']}/polling")).json()
    assert polling["health"] == "warning"


async def test_a_run_seeds_its_tenants_event_types_before_it_writes(
    local_api: httpx.AsyncClient, local_hub: Hub, crm: HubSpotLike, worker: Worker
) -> None:
    # Were they seeded by the first write that publishes, two writes in flight could each
    # insert the same rows (when the run's first write had nothing to publish), the earlier
    # waiting in PostgreSQL for the later, the later in Python for the earlier: a deadlock
    # the server cannot see.
    for n in range(10):
        crm.people[n]["properties"]["email"] = ""  # the first page publishes nothing
    crm.hold_at = "0"
    integration = await make_integration(local_api, crm)
    started = await local_api.post(f"/api/v1/integrations/{integration['id']}/sync")
    running = asyncio.create_task(worker.run_pending())
    try:
        await asyncio.wait_for(crm.held.wait(), 10)  # the run has begun, nothing written
        async with local_hub.store.read() as conn:
            names = set((await conn.execute(sa.select(event_types.c.name))).scalars())
        assert {"contact.created", "contact.updated"} <= names
    finally:
        crm.release.set()
        await asyncio.wait_for(running, 30)
    run = (await local_api.get(f"/api/v1/runs/{started.json()['id']}")).json()
    assert run["status"] == "succeeded"
    assert counts(run) == (25, 15, 0, 0, 10)


async def test_a_run_interrupted_mid_way_resumes_from_its_checkpoint(
    local_hub: Hub, local_api: httpx.AsyncClient, crm: HubSpotLike, clock: Clock
) -> None:
    hook = await create_webhook(local_api, url=crm.url("/hook"), events=["contact.*"])
    integration = await make_integration(local_api, crm)
    started = await local_api.post(f"/api/v1/integrations/{integration['id']}/sync")
    run_id = started.json()["id"]
    crm.hold_at = "20"  # the third page hangs: the process dies while waiting for it

    [claimed] = await queue.claim(
        local_hub.store, kinds=[SYNC_KIND], limit=1, lease_seconds=30, now=clock()
    )
    doomed = asyncio.create_task(local_hub.sync(Job(claimed, local_hub.store, clock)))
    await asyncio.wait_for(crm.held.wait(), 10)
    # Pages are fetched ahead of the writing: page three hangs while the first two are
    # still being written. The process dies once they are.
    await asyncio.wait_for(fetched_at_least(local_api, run_id, 20), 10)
    doomed.cancel()  # as good as a SIGKILL for this job: nothing more is written
    with pytest.raises(asyncio.CancelledError):
        await doomed
    crm.hold_at = None
    crm.release.set()

    midway = (await local_api.get(f"/api/v1/runs/{run_id}")).json()
    assert midway["status"] == "running"
    assert counts(midway) == (20, 20, 0, 0, 0)  # two pages written, with their checkpoint
    assert len(await contacts(local_api)) == 20

    # Another worker takes the job once the lease has expired, and goes on from page three.
    clock.ahead += timedelta(seconds=31)
    hits_before = len(crm.hits)
    rescuer = Worker(local_hub.store, clock=clock)
    rescuer.register(SYNC_KIND, local_hub.sync)
    assert await rescuer.run_pending() == 1

    assert [hit.get("after") for hit in crm.hits[hits_before:]] == ["20"]
    run = (await local_api.get(f"/api/v1/runs/{run_id}")).json()
    assert (run["status"], counts(run)) == ("succeeded", (25, 25, 0, 0, 0))
    assert len(await contacts(local_api)) == 25
    assert await contact_events(local_api, hook["id"]) == ["contact.created"] * 25


async def test_a_running_run_cancelled_stops_at_its_next_write_and_keeps_what_it_wrote(
    local_hub: Hub, local_api: httpx.AsyncClient, crm: HubSpotLike, worker: Worker, clock: Clock
) -> None:
    integration = await make_integration(local_api, crm, incremental={"type": "cursor"})
    started = (await local_api.post(f"/api/v1/integrations/{integration['id']}/sync")).json()
    crm.hold_at = "20"
    [claimed] = await queue.claim(
        local_hub.store, kinds=[SYNC_KIND], limit=1, lease_seconds=30, now=clock()
    )
    running = asyncio.create_task(local_hub.sync(Job(claimed, local_hub.store, clock)))
    await asyncio.wait_for(crm.held.wait(), 10)
    await asyncio.wait_for(fetched_at_least(local_api, started["id"], 20), 10)

    cancel = await local_api.post(f"/api/v1/runs/{started['id']}/cancel")

    assert cancel.status_code == 200, cancel.text
    assert (cancel.json()["status"], counts(cancel.json())) == ("cancelled", (20, 20, 0, 0, 0))
    assert cancel.json()["finishedAt"] is not None
    crm.release.set()  # the third page arrives: its write finds the run ended and stops
    await asyncio.wait_for(running, 10)
    run = (await local_api.get(f"/api/v1/runs/{started['id']}")).json()
    assert (run["status"], counts(run)) == ("cancelled", (20, 20, 0, 0, 0))
    assert len(await contacts(local_api)) == 20
    assert (await local_api.post(f"/api/v1/runs/{started['id']}/cancel")).status_code == 409
    audit = await local_api.get("/api/v1/audit", params={"action": "integration.sync.cancel"})
    assert audit.json()["data"][0]["diff"]["runId"] == started["id"]

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
    started = (await local_api.post(f"/api/v1/integrations/{integration['id']}/sync")).json()
    crm.hold_at = "20"
    [claimed] = await queue.claim(
        local_hub.store, kinds=[SYNC_KIND], limit=1, lease_seconds=30, now=clock()
    )
    running = asyncio.create_task(local_hub.sync(Job(claimed, local_hub.store, clock)))
    await asyncio.wait_for(crm.held.wait(), 10)
    await asyncio.wait_for(fetched_at_least(local_api, started["id"], 20), 10)

    deleted = await local_api.delete(f"/api/v1/integrations/{integration['id']}")
    assert deleted.status_code == 204, deleted.text
    crm.release.set()
    await asyncio.wait_for(running, 10)

    # The pages written before stay (contacts outlive the integration); the rest is not.
    assert len(await contacts(local_api)) == 20
    assert (await local_api.get(f"/api/v1/runs/{started['id']}")).status_code == 404


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


async def test_a_rate_limit_is_waited_out_not_counted_as_a_failure(
    local_api: httpx.AsyncClient, crm: HubSpotLike, worker: Worker, clock: Clock
) -> None:
    integration = await make_integration(local_api, crm)
    crm.rate_limit_once_at = "10"  # the second page answers 429, Retry-After: 120
    started = await local_api.post(f"/api/v1/integrations/{integration['id']}/sync")
    run_id = started.json()["id"]

    await worker.run_pending()

    waiting = (await local_api.get(f"/api/v1/runs/{run_id}")).json()
    assert (waiting["status"], waiting["error"]) == ("running", None)
    assert counts(waiting) == (10, 10, 0, 0, 0)
    clock.ahead += timedelta(seconds=60)
    assert await worker.run_pending() == 0  # not yet: the API asked for two minutes
    clock.ahead += timedelta(seconds=61)
    assert await worker.run_pending() == 1

    run = (await local_api.get(f"/api/v1/runs/{run_id}")).json()
    assert (run["status"], counts(run)) == ("succeeded", (25, 25, 0, 0, 0))
    shown = (await local_api.get(f"/api/v1/integrations/{integration['id']}")).json()
    assert shown["status"] != "error"


async def test_refused_credentials_end_in_reauthorization_needed(
    local_api: httpx.AsyncClient, crm: HubSpotLike, worker: Worker
) -> None:
    integration = await make_integration(local_api, crm)
    patched = await local_api.patch(
        f"/api/v1/integrations/{integration['id']}",
        json={"credentials": {"apiKey": "pat-na1-revoked-000000000000"}},
    )
    assert patched.status_code == 200, patched.text

    run = await sync_now(local_api, worker, integration["id"])

    assert (run["status"], run["errorClass"]) == ("failed", "auth")
    shown = (await local_api.get(f"/api/v1/integrations/{integration['id']}")).json()
    assert shown["status"] == "error"
    assert "reauthorization needed" in shown["statusMessage"]
    assert await contacts(local_api) == []


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


async def test_sync_wait_true_answers_when_the_run_has_finished(
    local_hub: Hub, local_api: httpx.AsyncClient, crm: HubSpotLike, clock: Clock
) -> None:
    integration = await make_integration(local_api, crm)
    worker = Worker(local_hub.store, poll_interval=0.05)
    worker.register(SYNC_KIND, local_hub.sync)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        response = await local_api.post(
            f"/api/v1/integrations/{integration['id']}/sync", params={"wait": "true"}
        )
    finally:
        stop.set()
        await asyncio.wait_for(running, 10)

    assert response.status_code == 200, response.text
    assert (response.json()["status"], response.json()["created"]) == ("succeeded", 25)


async def test_a_sync_of_another_tenants_integration_is_a_404(
    api: httpx.AsyncClient, hub: Hub
) -> None:
    from api_support import bearer, key_for

    created = await create_integration(api)
    other = await hub.access.create_tenant("other-tenant")
    key = await key_for(hub, other.id, "write")

    response = await api.post(f"/api/v1/integrations/{created['id']}/sync", headers=bearer(key))
    missing = await api.get("/api/v1/runs/run_doesnotexist", headers=bearer(key))

    assert response.status_code == 404
    assert missing.status_code == 404
