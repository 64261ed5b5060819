"""The ``integration.sync`` job: one run of an integration's contact sync.

One run::

    start the run (queued -> running; a job resumed after a crash or a rate-limit wait
    finds it running, with its checkpoint)
    open the integration (auth, rate-limit budget, request log)
    for each page, from the checkpoint when there is one:
        map the records to contacts (records without a usable email skipped, reasons counted)
        one transaction, fenced by the job's lease: upsert the page (only changed contacts
        written), publish contact.created / contact.updated for them, save the counts and
        the next page's request as the checkpoint
    one transaction: the incremental watermark (after a whole walk), the run's outcome and
    the polling rules (``record_outcome_in``), the job's completion

A rate limit is not a failure: a 429 the client would not wait out, or the integration's
budget out of room, puts the job back for the time given (``RetryLater``) and the run
resumes from its checkpoint. Any other failure ends the run as failed and the polling rules
decide on retries and disabling.

Incremental sync (config ``incremental: {"param": "updatedSince", "recordField":
"updatedAt"}``): after a run that walked the whole listing, the highest ``recordField`` seen
is saved; the next run asks for records from there (``?updatedSince=<value>``).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from isthmus.connectors.selector import MISSING, get_path
from isthmus.connectors.types import Request
from isthmus.domain.contact_mapping import FieldMapping, Skipped, map_record
from isthmus.domain.contacts import Mapped
from isthmus.errors import (
    BudgetExhausted,
    InvalidInput,
    OutboundError,
    UpstreamRateLimited,
)
from isthmus.services.connections import ConnectionService
from isthmus.services.contacts import publish_changes
from isthmus.services.polling import Outcome, record_outcome_in
from isthmus.store import contacts as contacts_repo
from isthmus.store import integrations as integrations_repo
from isthmus.store import queue, sync_runs, sync_state
from isthmus.store.db import Store
from isthmus.store.sync_runs import ACTIVE, RunStatus, SyncRun
from isthmus.webhooks.publish import DEFAULT_MAX_PAYLOAD_BYTES
from isthmus.worker import Job, LeaseLost, RetryLater

log = logging.getLogger("isthmus.sync")

#: How long to wait on a 429 that named no time.
DEFAULT_RATE_LIMIT_WAIT = 60.0


class SyncRunner:
    """Call it with a claimed ``integration.sync`` job (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        connections: ConnectionService,
        *,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    ) -> None:
        self.store = store
        self.connections = connections
        self.max_payload_bytes = max_payload_bytes

    async def __call__(self, job: Job) -> None:
        run_id = str(job.payload.get("runId", ""))
        tenant_id = job.tenant_id or ""
        now = job.clock()
        async with self.store.transaction() as conn:
            run = await sync_runs.get(conn, tenant_id, run_id)
            if run is None or run.status not in ACTIVE:
                return  # settled meanwhile, or its integration deleted: nothing to do
            if run.status is RunStatus.QUEUED:
                await sync_runs.start(conn, run_id, now=now)
            integration = await integrations_repo.get(conn, tenant_id, run.integration_id)
            state = await sync_state.get(conn, run.integration_id)
        if integration is None:
            return
        incremental = _incremental(integration.config)
        walk = _Walk(run, incremental, state)
        error: BaseException | None = None
        try:
            mapping = FieldMapping.build(
                integration.provider, integration.config.get("fieldMapping")
            )
            await self._walk(job, walk, mapping)
        except (UpstreamRateLimited, BudgetExhausted) as exc:
            wait = exc.retry_after if exc.retry_after is not None else DEFAULT_RATE_LIMIT_WAIT
            log.info("sync run %s waits %.0f s on a rate limit: %s", run_id, wait, exc.message)
            raise RetryLater(f"rate limited: {exc.message}", delay=wait) from exc
        except (OutboundError, InvalidInput) as exc:
            error = exc
            log.warning("sync run %s failed: %s", run_id, exc)
        async with self.store.transaction() as conn:
            if error is None and incremental is not None and walk.watermark is not None:
                state = {**state, "since": walk.watermark}
                await sync_state.put(conn, tenant_id, integration.id, state, job.clock())
            await record_outcome_in(
                conn, tenant_id, run_id, Outcome(walk.counts, error), now=job.clock()
            )
            await job.complete_in(conn)

    async def _walk(self, job: Job, walk: _Walk, mapping: FieldMapping) -> None:
        run = walk.run
        endpoint = await self.connections.open(
            run.tenant_id, run.integration_id, clock=lambda: job.clock().timestamp()
        )
        async with endpoint:
            pages = endpoint.pages(resume=walk.resume_from(), params=walk.first_params())
            async for page in pages:
                mapped: list[Mapped] = []
                skipped: Counter[str] = Counter()
                for record in page.records:
                    result = map_record(record, mapping)
                    if isinstance(result, Skipped):
                        skipped[result.reason] += 1
                    else:
                        mapped.append(result)
                    walk.see(record)
                await self._write_page(job, walk, mapped, skipped, len(page.records), page.next)

    async def _write_page(
        self,
        job: Job,
        walk: _Walk,
        mapped: list[Mapped],
        skipped: Counter[str],
        fetched: int,
        following: Request | None,
    ) -> None:
        run = walk.run
        now = job.clock()
        async with self.store.transaction() as conn:
            if not await queue.holds_lease_in(conn, job.id, job.claimed.lease_token):
                raise LeaseLost(f"sync run {run.id}: job {job.id} was taken over")
            outcome = await contacts_repo.upsert_many(
                conn, run.tenant_id, run.integration_id, mapped, now
            )
            await publish_changes(
                conn,
                run.tenant_id,
                created=outcome.created,
                updated=outcome.updated,
                now=now,
                max_payload_bytes=self.max_payload_bytes,
            )
            walk.add(fetched, len(outcome.created), len(outcome.updated), outcome.unchanged)
            walk.skip(skipped)
            await sync_runs.save_checkpoint(conn, run.id, walk.checkpoint(following), walk.counts)


class _Walk:
    """Where a run stands: its counts, its checkpoint, the incremental watermark."""

    def __init__(
        self, run: SyncRun, incremental: Mapping[str, str] | None, state: Mapping[str, Any]
    ) -> None:
        self.run = run
        self.counts = run.counts
        self.incremental = incremental
        self.state = state
        saved = run.checkpoint or {}
        self.watermark: Any = saved.get("watermark")
        self._saved_next: dict[str, Any] | None = saved.get("next")

    def resume_from(self) -> Request | None:
        if self._saved_next is None:
            return None
        saved = self._saved_next
        return Request(
            method=saved["method"],
            url=saved["url"],
            params=[(str(k), str(v)) for k, v in saved.get("params", [])],
            headers=dict(saved.get("headers", {})),
            json=saved.get("json"),
        )

    def first_params(self) -> list[tuple[str, str]] | None:
        if self.incremental is None or "since" not in self.state:
            return None
        return [(self.incremental["param"], str(self.state["since"]))]

    def see(self, record: Any) -> None:
        if self.incremental is None:
            return
        value = get_path(record, self.incremental["recordField"])
        if value is MISSING or value is None or isinstance(value, bool | dict | list):
            return
        if self.watermark is None or _later(value, self.watermark):
            self.watermark = value

    def add(self, fetched: int, created: int, updated: int, unchanged: int) -> None:
        c = self.counts
        self.counts = replace(
            c,
            fetched=c.fetched + fetched,
            created=c.created + created,
            updated=c.updated + updated,
            unchanged=c.unchanged + unchanged,
        )

    def skip(self, reasons: Counter[str]) -> None:
        if not reasons:
            return
        merged = Counter(dict(self.counts.skipped_reasons))
        merged.update(reasons)
        self.counts = replace(
            self.counts,
            skipped=self.counts.skipped + sum(reasons.values()),
            skipped_reasons=dict(merged),
        )

    def checkpoint(self, following: Request | None) -> dict[str, Any]:
        saved: dict[str, Any] = {"watermark": self.watermark}
        if following is not None:
            saved["next"] = {
                "method": following.method,
                "url": following.url,
                "params": [list(pair) for pair in following.params],
                "headers": following.headers,
                "json": following.json,
            }
        return saved


def _later(value: Any, than: Any) -> bool:
    """Watermarks compare as numbers when both are, else as text (ISO 8601 sorts as text)."""
    if isinstance(value, int | float) and isinstance(than, int | float):
        return value > than
    return str(value) > str(than)


def _incremental(config: Mapping[str, Any]) -> Mapping[str, str] | None:
    block = config.get("incremental")
    if not isinstance(block, Mapping) or not block.get("param") or not block.get("recordField"):
        return None
    return {"param": str(block["param"]), "recordField": str(block["recordField"])}


__all__ = ["DEFAULT_RATE_LIMIT_WAIT", "SyncRunner"]
