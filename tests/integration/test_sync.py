"""Contact sync runs end to end: a real local contacts API in HubSpot's shape, the API to
start runs, the ``integration.sync`` job run by a real worker on SQLite and PostgreSQL.

What a user sees: contacts arrive, a re-sync of unchanged data changes and publishes
nothing, a changed contact publishes one ``contact.updated``, records without an email are
counted as skipped with their reason, a run interrupted mid-way resumes from its checkpoint,
a rate limit is waited out (not a failure), a refused key ends in "reauthorization needed".
Incremental, full and cancelled runs: ``test_sync_control``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from aiohttp import web
from api_support import create_integration
from prometheus_client.parser import text_string_to_metric_families
from sync_support import (
    PAGE,
    Clock,
    HubSpotLike,
    contact_events,
    contacts,
    counts,
    fetched_at_least,
    make_integration,
    person,
    row_locked,
    run_held_at_page_three,
    sync_now,
)
from webhook_support import LocalServer, create_webhook

from isthmus.config import Settings
from isthmus.connectors import request_log_retention
from isthmus.domain.auth import Actor
from isthmus.hub import Hub
from isthmus.services.access import IssuedKey
from isthmus.store import queue
from isthmus.store.sync_runs import SYNC_KIND
from isthmus.store.tables import event_types
from isthmus.sync import runner
from isthmus.worker import Job, Worker


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

    # Person 500 (first of page 51) has person 499's email (last of page 50): a duplicate
    # at the source, skipped, whether or not the two pages were written in one transaction;
    # the contact is person 499's.
    assert run["status"] == "succeeded"
    assert counts(run) == (1234, 1233, 0, 0, 1)
    assert run["skippedReasons"] == {"duplicate email: an earlier record has it": 1}
    stored = await listed(local_api, "/api/v1/contacts")
    assert len({c["email"] for c in stored}) == len(stored) == 1233
    shared = next(c for c in stored if c["email"] == "person499@example.com")
    assert (shared["firstName"], shared["sources"][0]["externalId"]) == ("First499", "1499")
    deliveries = await listed(local_api, f"/api/v1/webhooks/{hook['id']}/deliveries")
    assert [d["eventType"] for d in deliveries] == ["contact.created"] * 1233
    metrics = await local_api.get(f"/api/v1/integrations/{integration['id']}/metrics")
    assert metrics.json()["totalRequests"] == len(crm.hits) == 124

    # The same listing again: the duplicate does not take the contact over (with the last
    # record winning, it did at every run, and the first gave it back: two updates a run,
    # published, for data that never changed); nothing is written or published.
    again = await sync_now(local_api, worker, integration["id"])
    assert counts(again) == (1234, 0, 0, 1233, 1)
    assert len(await listed(local_api, f"/api/v1/webhooks/{hook['id']}/deliveries")) == 1233


async def test_a_record_listed_again_later_in_the_walk_updates_its_contact(
    local_api: httpx.AsyncClient, crm: HubSpotLike, worker: Worker
) -> None:
    # A listing that moves under the walk (sorted by last change, say) shows a record
    # changed meanwhile again on a later page, under its own id: its later version stands.
    crm.people[:] = [person(n) for n in range(25)]
    moved = person(3)
    moved["properties"]["lastname"] = "Changed"
    crm.people.append(moved)
    integration = await make_integration(local_api, crm)

    run = await sync_now(local_api, worker, integration["id"])

    assert counts(run) == (26, 25, 1, 0, 0)
    [contact] = [c for c in await contacts(local_api) if c["email"] == "person3@example.com"]
    assert (contact["lastName"], contact["sources"][0]["externalId"]) == ("Changed", "1003")


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
    if local_hub.store.dialect != "postgresql":
        run = await sync_now(local_api, worker, integration["id"])
    else:
        async with row_locked(local_hub, held):
            running = asyncio.create_task(sync_now(local_api, worker, integration["id"]))
            while not any(hit.get("after") == "770" for hit in crm.hits):
                await asyncio.sleep(0.01)
            await asyncio.sleep(1.0)  # the writes after the held one run meanwhile
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
    # The third page hangs: the process dies while waiting for it, the first two written.
    run_id, doomed = await run_held_at_page_three(
        local_hub, local_api, crm, clock, integration["id"]
    )
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


# Cancelled inside a query, the driver leaves a connection attempt of its cleanup unawaited.
@pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning")
async def test_a_run_killed_inside_a_page_written_in_parts_resumes_inside_it(
    local_hub: Hub,
    local_api: httpx.AsyncClient,
    crm: HubSpotLike,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A page larger than one write goes in parts (here of 4: the pages have 10), each with
    # its checkpoint: that page again, from the record after the part.
    if local_hub.store.dialect != "postgresql":
        pytest.skip("holds a write between two parts by a row lock, which SQLite has not")
    monkeypatch.setattr(runner, "MAX_WRITE_RECORDS", 4)
    held = "person5@example.com"  # in the first page's second part (its records 4 to 7)
    made = await local_api.post("/api/v1/contacts", json={"email": held})
    assert made.status_code == 201, made.text
    hook = await create_webhook(local_api, url=crm.url("/hook"), events=["contact.*"])
    integration = await make_integration(local_api, crm)
    started = await local_api.post(f"/api/v1/integrations/{integration['id']}/sync")
    run_id = started.json()["id"]
    async with row_locked(local_hub, held):
        [claimed] = await queue.claim(
            local_hub.store, kinds=[SYNC_KIND], limit=1, lease_seconds=30, now=clock()
        )
        doomed = asyncio.create_task(local_hub.sync(Job(claimed, local_hub.store, clock)))
        await asyncio.wait_for(fetched_at_least(local_api, run_id, 4), 10)
        doomed.cancel()  # the process dies while the second part waits for the row
        # A task cancelled inside a query ends with what the driver's cleanup raises (a
        # killed process, with nothing): what counts is what the store holds after it.
        with contextlib.suppress(BaseException):
            await doomed

    midway = (await local_api.get(f"/api/v1/runs/{run_id}")).json()
    assert counts(midway) == (4, 4, 0, 0, 0)
    clock.ahead += timedelta(seconds=31)
    hits_before = len(crm.hits)
    rescuer = Worker(local_hub.store, clock=clock)
    rescuer.register(SYNC_KIND, local_hub.sync)
    assert await rescuer.run_pending() == 1

    # The first page again, its first four records not counted nor written twice.
    assert crm.hits[hits_before].get("after") is None
    run = (await local_api.get(f"/api/v1/runs/{run_id}")).json()
    assert (run["status"], counts(run)) == ("succeeded", (25, 24, 1, 0, 0))
    assert len(await contacts(local_api)) == 25
    events = await contact_events(local_api, hook["id"])
    assert events == ["contact.created"] * 24 + ["contact.updated"]


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


class AllAtOnce(LocalServer):
    """Every contact in one response, a top-level array (the shape the simplest APIs have)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.body = json.dumps([{"id": n, "email": f"p{n}@example.com"} for n in range(size)])

    async def _handle(self, request: web.Request) -> web.Response:
        return web.Response(text=self.body, content_type="application/json")


async def test_a_listing_in_one_response_over_a_megabyte_is_synced(
    local_hub: Hub,
    local_api: httpx.AsyncClient,
    worker: Worker,
    settings: Settings,
    admin_key: IssuedKey,
) -> None:
    # 40,000 contacts in one 1.4 MB answer: over the 1 MiB cap of the hub's other outbound
    # calls (webhook receivers' answers), under the integrations' own (16 MiB by default).
    server = AllAtOnce(40_000)
    await server.start()
    try:
        assert settings.outbound_max_response_bytes < len(server.body)
        assert len(server.body) < settings.connector_max_response_bytes
        config = {"apiEndpoint": server.url("/contacts"), "auth": {"type": "none"}}
        integration = await create_integration(local_api, config=config, credentials={})

        run = await sync_now(local_api, worker, integration["id"])
        assert counts(run) == (40_000, 40_000, 0, 0, 0)

        # Over the integrations' cap: the run fails saying so, the test says what to do.
        capped = settings.model_copy(
            update={"outbound_allowlist": ["127.0.0.0/8"], "connector_max_response_bytes": 10**6}
        )
        small = Hub.build(capped)
        try:
            actor = Actor(admin_key.key.tenant_id, "test")
            requested = await small.sync_runs.request(actor, integration["id"])
            capped_worker = Worker(small.store)
            capped_worker.register(SYNC_KIND, small.sync)
            await capped_worker.run_pending()
            failed = await small.sync_runs.get(actor.tenant_id, requested.run.id)
            check = await small.connections.check(actor, integration["id"])
        finally:
            await small.close()
        assert (failed.status.value, failed.error_class) == ("failed", "too_large")
        assert "over the 1000000-byte cap" in (failed.error or "")
        assert (check.success, check.error_class) == (False, "too_large")
        assert "ISTHMUS_CONNECTOR_MAX_RESPONSE_BYTES" in check.message
    finally:
        await server.stop()


async def test_prometheus_shows_each_integrations_health_and_sync_runs(
    local_api: httpx.AsyncClient, crm: HubSpotLike, worker: Worker, admin_key: IssuedKey
) -> None:
    integration = await make_integration(local_api, crm)
    crm.people[3]["properties"]["email"] = "not an address"
    first = await sync_now(local_api, worker, integration["id"])
    crm.people[5]["properties"]["lastname"] = "Changed"
    second = await sync_now(local_api, worker, integration["id"])

    response = await local_api.get("/metrics")
    assert response.status_code == 200
    samples = {
        (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "tenant"))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
        if s.labels.get("tenant") == admin_key.key.tenant_id
    }
    mine = (("integration", integration["id"]), ("provider", "api_endpoint"))

    def value(name: str, *extra: tuple[str, str]) -> float:
        return samples[(name, tuple(sorted(mine + extra)))]

    # Records were skipped: its health is warning.
    health = {h: value("isthmus_integration_health", ("health", h)) for h in HEALTHS}
    assert health == {"healthy": 0, "warning": 1, "error": 0, "unknown": 0}
    assert value("isthmus_sync_runs", ("status", "succeeded")) == 2
    finished = datetime.fromisoformat(second["finishedAt"])
    assert value("isthmus_sync_last_success_timestamp_seconds") == finished.timestamp()
    last = {o: value("isthmus_sync_last_run_records", ("outcome", o)) for o in OUTCOMES}
    assert last == {"fetched": 25, "created": 0, "updated": 1, "unchanged": 23, "skipped": 1}
    assert samples[("isthmus_contacts", ())] == first["created"] == 24


HEALTHS = ("healthy", "warning", "error", "unknown")
OUTCOMES = ("fetched", "created", "updated", "unchanged", "skipped")


async def test_ended_runs_are_kept_for_the_retention_but_each_integrations_latest(
    local_hub: Hub, local_api: httpx.AsyncClient, crm: HubSpotLike, worker: Worker, clock: Clock
) -> None:
    assert local_hub.settings.sync_run_retention_days == 90
    busy = await make_integration(local_api, crm)
    idle = await make_integration(local_api, crm, name="Idle")
    old = [await sync_now(local_api, worker, i["id"]) for i in (busy, idle, busy)]
    clock.ahead = timedelta(days=11)
    recent = await sync_now(local_api, worker, busy["id"])
    assert {r["status"] for r in [*old, recent]} == {"succeeded"}
    later = datetime.now(UTC) + timedelta(days=100)  # the first three 100 days old, the last 89

    gone = await request_log_retention.purge_runs(local_hub.store, 90, now=later)

    # The busy one keeps its run of 89 days ago; the idle one its only run, however old.
    assert gone == 2
    listed = (await local_api.get(f"/api/v1/integrations/{busy['id']}/runs")).json()["data"]
    assert [r["id"] for r in listed] == [recent["id"]]
    listed = (await local_api.get(f"/api/v1/integrations/{idle['id']}/runs")).json()["data"]
    assert [r["id"] for r in listed] == [old[1]["id"]]
    assert await request_log_retention.purge_runs(local_hub.store, 90, now=later) == 0


async def test_a_record_listed_twice_on_one_page_is_counted_twice_and_written_once(
    local_api: httpx.AsyncClient, crm: HubSpotLike, worker: Worker
) -> None:
    crm.people.insert(5, person(3))  # the first page lists person 3 twice (same id)
    integration = await make_integration(local_api, crm)

    run = await sync_now(local_api, worker, integration["id"])

    # Every record fetched is counted once: created, updated, unchanged or skipped.
    assert counts(run) == (26, 25, 0, 1, 0)
    assert len(await contacts(local_api)) == 25
