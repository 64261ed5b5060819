"""What the sync tests share: a HubSpot-shaped contacts API on 127.0.0.1, a clock a test can
move ahead, and helpers to start runs and read what they did (the fixtures ``crm``, ``clock``
and ``worker`` are in this directory's conftest)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa
from aiohttp import web
from api_support import create_integration
from webhook_support import LocalServer

from isthmus.hub import Hub
from isthmus.store import queue
from isthmus.store.sync_runs import SYNC_KIND
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
        self.expire_once_at: str | None = None  # answer 410 once for this cursor
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
        if self.expire_once_at == after:
            self.expire_once_at = None
            return web.json_response({"status": "error", "message": "cursor expired"}, status=410)
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


async def make_integration(
    api: httpx.AsyncClient, crm: HubSpotLike, *, name: str = "Contacts API", **config: Any
) -> dict[str, Any]:
    return await create_integration(
        api,
        name=name,
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


async def run_held_at_page_three(
    hub: Hub, api: httpx.AsyncClient, crm: HubSpotLike, clock: Clock, integration_id: str
) -> tuple[str, asyncio.Task[None]]:
    """A run started and taken by a job in the background, its first two pages written, the
    request for its third hanging until ``crm.release`` is set: (its id, the job's task)."""
    started = await api.post(f"/api/v1/integrations/{integration_id}/sync")
    run_id: str = started.json()["id"]
    crm.hold_at = "20"
    [claimed] = await queue.claim(
        hub.store, kinds=[SYNC_KIND], limit=1, lease_seconds=30, now=clock()
    )
    running = asyncio.create_task(hub.sync(Job(claimed, hub.store, clock)))
    await asyncio.wait_for(crm.held.wait(), 10)
    # Pages are fetched ahead of the writing: page three hangs while the first two are
    # still being written.
    await asyncio.wait_for(fetched_at_least(api, run_id, 20), 10)
    return run_id, running


@contextlib.asynccontextmanager
async def row_locked(hub: Hub, email: str) -> AsyncIterator[None]:
    """PostgreSQL: the contact with ``email`` locked by another transaction (a write that
    touches it waits) until the block ends."""
    locked, release = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with hub.store.transaction() as conn:
            query = "SELECT id FROM contacts WHERE email = :email FOR UPDATE"
            await conn.execute(sa.text(query), {"email": email})
            locked.set()
            await release.wait()

    holder = asyncio.create_task(hold())
    try:
        await asyncio.wait_for(locked.wait(), 10)
        yield
    finally:
        release.set()
        await holder
