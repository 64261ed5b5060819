"""Sync runs as the API shows them: ask for one, wait for it, cancel it, read them."""

from __future__ import annotations

import asyncio
import time

from isthmus.domain.auth import Actor
from isthmus.domain.pagination import DEFAULT_LIMIT, decode_cursor
from isthmus.domain.records import Page
from isthmus.errors import Conflict, NotFound
from isthmus.services.audit import record
from isthmus.services.integrations import RESOURCE
from isthmus.services.polling import PollingService, RequestedSync
from isthmus.store import integrations as integrations_repo
from isthmus.store import sync_runs as repo
from isthmus.store.db import Store
from isthmus.store.sync_runs import ACTIVE, RunStatus, SyncRun, Trigger
from isthmus.store.types import utcnow

#: How often a waiting request looks at its run again.
WAIT_POLL_SECONDS = 0.2


class SyncRunService:
    def __init__(self, store: Store, polling: PollingService) -> None:
        self.store = store
        self.polling = polling

    async def request(
        self,
        actor: Actor,
        integration_id: str,
        trigger: Trigger = Trigger.API,
        *,
        full: bool = False,
    ) -> RequestedSync:
        """Queue a run now, or join the one already queued or running (``full``: see
        ``PollingService.request_sync``)."""
        return await self.polling.request_sync(actor, integration_id, trigger, full=full)

    async def cancel(self, actor: Actor, run_id: str) -> SyncRun:
        """End a queued or running run as cancelled, with the counts it has reached. A
        running one stops at its next write (which is not kept); what it wrote before
        stays, and no incremental state is saved. ``Conflict`` if the run has ended."""
        async with self.store.transaction() as conn:
            run = await repo.get(conn, actor.tenant_id, run_id, for_update=True)
            if run is None:
                raise NotFound.of("run", run_id)
            if run.status not in ACTIVE:
                raise Conflict(
                    f"run {run_id!r} has ended ({run.status}); there is nothing to cancel"
                )
            await repo.finish(
                conn,
                run.id,
                status=RunStatus.CANCELLED,
                counts=run.counts,
                error=None,
                error_class=None,
                now=utcnow(),
            )
            diff = {"runId": run.id, "status": {"from": str(run.status), "to": "cancelled"}}
            await record(conn, actor, "integration.sync.cancel", RESOURCE, run.integration_id, diff)
            cancelled = await repo.get(conn, actor.tenant_id, run_id)
        assert cancelled is not None
        return cancelled

    async def get(self, tenant_id: str, run_id: str) -> SyncRun:
        async with self.store.read() as conn:
            run = await repo.get(conn, tenant_id, run_id)
        if run is None:
            raise NotFound.of("run", run_id)
        return run

    async def wait(self, tenant_id: str, run_id: str, *, seconds: float) -> SyncRun:
        """The run once it has finished, or as it stands when ``seconds`` are up."""
        deadline = time.monotonic() + seconds
        while True:
            run = await self.get(tenant_id, run_id)
            if run.status not in ACTIVE or time.monotonic() >= deadline:
                return run
            await asyncio.sleep(min(WAIT_POLL_SECONDS, max(deadline - time.monotonic(), 0)))

    async def list(
        self,
        tenant_id: str,
        integration_id: str,
        *,
        cursor: str | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> Page[SyncRun]:
        async with self.store.read() as conn:
            if await integrations_repo.get(conn, tenant_id, integration_id) is None:
                raise NotFound.of("integration", integration_id)
            return await repo.list_for(
                conn, tenant_id, integration_id, before=decode_cursor(cursor), limit=limit
            )
