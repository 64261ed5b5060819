"""The ``integration.sync`` job: one run of an integration's contact sync.

One run::

    start the run (queued -> running; a job resumed after a crash or a rate-limit wait
    finds it running, with its checkpoint)
    open the integration (auth, rate-limit budget, request log)
    fetch page after page, from the checkpoint when there is one, and map each page's
    records to contacts (records without a usable email skipped, reasons counted); the
    fetching runs ahead of the writing, at most PREFETCH_PAGES pages
    meanwhile, for the pages fetched so far (one, or all that are waiting when the writer
    lags, up to MAX_WRITE_RECORDS records): one transaction, fenced by the job's lease:
        upsert them (only changed contacts written), publish contact.created /
        contact.updated for them, save the counts and the last page's next request as
        the checkpoint
    (up to WRITERS such transactions in flight, committing in page order: see _Writes)
    one transaction: the incremental watermark (after a whole walk), the run's outcome and
    the polling rules (``record_outcome_in``), the job's completion

A failed fetch ends the walk once the pages fetched before it are written, so a checkpoint
always stands for every page before it. A rate limit is not a failure: a 429 the client
would not wait out, or the integration's budget out of room, puts the job back for the
time given (``RetryLater``) and the run resumes from its checkpoint. Any other failure
ends the run as failed and the polling rules decide on retries and disabling.

Incremental sync (config ``incremental: {"param": "updatedSince", "recordField":
"updatedAt"}``): after a run that walked the whole listing, the highest ``recordField`` seen
is saved; the next run asks for records from there (``?updatedSince=<value>``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine, Mapping
from dataclasses import dataclass, replace
from typing import Any

from isthmus.connectors.selector import MISSING, get_path
from isthmus.connectors.types import Page, Request
from isthmus.domain.contact_mapping import FieldMapping, Skipped, map_record
from isthmus.domain.contacts import Mapped
from isthmus.errors import (
    BudgetExhausted,
    InvalidInput,
    OutboundError,
    UpstreamRateLimited,
)
from isthmus.job import Job, LeaseLost, RetryLater
from isthmus.services.connections import ConnectionService
from isthmus.services.contacts import publish_changes
from isthmus.services.polling import Outcome, record_outcome_in
from isthmus.store import contact_upserts, queue, sync_runs, sync_state
from isthmus.store import integrations as integrations_repo
from isthmus.store.contact_upserts import UpsertOutcome
from isthmus.store.db import Store
from isthmus.store.sync_runs import ACTIVE, RunCounts, RunStatus, SyncRun
from isthmus.webhooks.event_types import EventTypeService
from isthmus.webhooks.publish import DEFAULT_MAX_PAYLOAD_BYTES

log = logging.getLogger("isthmus.sync")

#: How long to wait on a 429 that named no time.
DEFAULT_RATE_LIMIT_WAIT = 60.0
#: Pages fetched ahead of the writer: enough to keep it busy, few enough to bound memory.
PREFETCH_PAGES = 20
#: The most records one write transaction takes when pages are waiting for the writer.
MAX_WRITE_RECORDS = 2000
#: Write transactions in flight at once (see ``_Writes``).
WRITERS = 2


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
            # Before any write of the run: see ``_Writes`` for why no write may seed them.
            await EventTypeService.seed_in(conn, tenant_id)
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
        if walk.stale_statistics:  # upkeep for the runs that follow, once this one has ended
            await self._refresh_statistics(walk.run)

    async def _walk(self, job: Job, walk: _Walk, mapping: FieldMapping) -> None:
        run = walk.run
        endpoint = await self.connections.open(
            run.tenant_id, run.integration_id, clock=lambda: job.clock().timestamp()
        )
        async with endpoint:
            pages = endpoint.pages(resume=walk.resume_from(), params=walk.first_params())
            ready: asyncio.Queue[_Read | _End] = asyncio.Queue(PREFETCH_PAGES)
            fetcher = asyncio.create_task(
                _fetch(pages, mapping, walk.incremental, ready), name=f"sync {run.id} fetch"
            )
            writes = _Writes()
            try:
                while batch := await _next_batch(ready, writes.last()):
                    if walk.stale_statistics:
                        # Beside the writes in flight: ANALYZE takes no lock they wait
                        # for (SQLite, which has nothing to refresh, does no transaction).
                        await self._refresh_statistics(run)
                        walk.stale_statistics = False
                    if batch.pages:
                        emails = frozenset[str]().union(*(p.emails for p in batch.pages))
                        await writes.make_room(emails, first=walk.writes == 0)
                        walk.writes += 1
                        writes.start(
                            self._write(job, walk, batch.pages, writes.last()),
                            emails,
                            name=f"sync {run.id} write {walk.writes}",
                        )
                    if batch.error is not None:
                        await writes.drain()
                        raise batch.error
                await writes.drain()
            finally:
                await writes.cancel()
                fetcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await fetcher

    async def _write(
        self, job: Job, walk: _Walk, pages: list[_Read], before: asyncio.Task[None] | None
    ) -> None:
        """The pages in one transaction fenced by the lease; the checkpoint is the last's.
        It commits only after ``before`` (the write of the pages before these) did, and not
        at all if that one failed: a checkpoint stands for every page before it."""
        run = walk.run
        now = job.clock()
        async with self.store.transaction() as conn:
            outcome = UpsertOutcome([], [], 0)
            for group in _upsert_groups(pages):
                done = await contact_upserts.upsert_many(
                    conn, run.tenant_id, run.integration_id, group, now
                )
                outcome = UpsertOutcome(
                    outcome.created + done.created,
                    outcome.updated + done.updated,
                    outcome.unchanged + done.unchanged,
                )
            await publish_changes(
                conn,
                run.tenant_id,
                created=outcome.created,
                updated=outcome.updated,
                now=now,
                max_payload_bytes=self.max_payload_bytes,
            )
            if before is not None:
                await before  # raises what ended it: then this transaction rolls back
            # The fence last: the share lock it takes is held from here to the commit, so
            # two writes never both hold it and the worker's lease extension gets its turn.
            if not await queue.holds_lease_in(conn, job.id, job.claimed.lease_token):
                raise LeaseLost(f"sync run {run.id}: job {job.id} was taken over")
            counts, watermark = walk.after(pages, outcome)
            checkpoint = walk.checkpoint(pages[-1].following, watermark)
            await sync_runs.save_checkpoint(conn, run.id, checkpoint, counts)
        # Only what committed counts: a failed write leaves the walk where it stood.
        if _past_a_power_of_ten(walk.counts.created, counts.created):
            walk.stale_statistics = True
        walk.counts, walk.watermark = counts, watermark

    async def _refresh_statistics(self, run: SyncRun) -> None:
        if self.store.dialect != "postgresql":
            return  # SQLite plans from the table as it is; its writers take turns
        try:
            async with self.store.transaction() as conn:
                await contact_upserts.refresh_statistics(conn)
        except Exception:
            # Only the speed of what follows depends on it; the pages are written.
            log.warning("sync run %s: could not refresh statistics", run.id, exc_info=True)


@dataclass
class _Read:
    """A page fetched and mapped, waiting to be written."""

    mapped: list[Mapped]
    skipped: Counter[str]
    fetched: int
    watermark: Any
    following: Request | None
    #: The emails of ``mapped``: what the writes keep apart.
    emails: frozenset[str]


@dataclass
class _End:
    """The walk is over: every page was read, or ``error`` stopped it."""

    error: Exception | None = None


@dataclass
class _Batch:
    """What the writer takes at once: the pages waiting (at least one, unless the walk ended
    with an error), and the error that ended the walk after them."""

    pages: list[_Read]
    error: Exception | None = None


async def _fetch(
    pages: AsyncIterator[Page],
    mapping: FieldMapping,
    incremental: Mapping[str, str] | None,
    ready: asyncio.Queue[_Read | _End],
) -> None:
    """Fetch and map page after page into ``ready``, then an ``_End``. The next page's
    request is known as soon as a page arrives, so fetching goes on while the writer writes;
    the queue's bound keeps it at most ``PREFETCH_PAGES`` ahead (memory stays bounded)."""
    try:
        async for page in pages:
            await ready.put(_read(page, mapping, incremental))
    except Exception as exc:  # the writer raises it, after writing what came before
        await ready.put(_End(exc))
    else:
        await ready.put(_End())
    finally:
        if isinstance(pages, AsyncGenerator):
            await pages.aclose()


def _read(page: Page, mapping: FieldMapping, incremental: Mapping[str, str] | None) -> _Read:
    mapped: list[Mapped] = []
    skipped: Counter[str] = Counter()
    watermark: Any = None
    field = incremental["recordField"] if incremental is not None else None
    for record in page.records:
        result = map_record(record, mapping)
        if isinstance(result, Skipped):
            skipped[result.reason] += 1
        else:
            mapped.append(result)
        if field is not None:
            watermark = _highest(watermark, get_path(record, field))
    emails = frozenset(m.email for m in mapped)
    return _Read(mapped, skipped, len(page.records), watermark, page.next, emails)


def _upsert_groups(pages: list[_Read]) -> list[list[Mapped]]:
    """The pages' contacts in as few upserts as keep each page's meaning: a page holding an
    email that an earlier page of the group holds starts the next group. So a contact
    listed on two pages is created, then updated, whether or not the pages were written
    together (an upsert counts an email once, as its last record)."""
    groups: list[list[Mapped]] = []
    seen: set[str] = set()
    for page in pages:
        emails = page.emails
        if not groups or not seen.isdisjoint(emails):
            groups.append([])
            seen = set()
        groups[-1].extend(page.mapped)
        seen |= emails
    return groups


async def _next_batch(
    ready: asyncio.Queue[_Read | _End], busy: asyncio.Task[None] | None
) -> _Batch | None:
    """The next pages to write: those waiting, and while ``busy`` (the write before) has not
    ended, those that arrive meanwhile, up to ``MAX_WRITE_RECORDS`` records; so the writes
    grow as large as the database is slow, and each costs its fixed statements once for
    many pages. None once the walk has ended and everything was written."""
    item = await ready.get()
    batch = _Batch([])
    records = 0
    while True:
        if isinstance(item, _End):
            if item.error is None and not batch.pages:
                return None
            ready.put_nowait(_End())  # what ends the walk ends it for the next call too
            batch.error = item.error
            return batch
        batch.pages.append(item)
        records += item.fetched
        if records >= MAX_WRITE_RECORDS:
            return batch
        if not ready.empty():
            item = ready.get_nowait()
            continue
        if busy is None or busy.done():
            return batch
        found = await _arrival(ready, busy)
        if found is None:
            return batch
        item = found


async def _arrival(
    ready: asyncio.Queue[_Read | _End], busy: asyncio.Task[None]
) -> _Read | _End | None:
    """The next item of ``ready``, or None if ``busy`` ends first (the item then stays
    queued: a cancelled ``get`` takes nothing)."""
    getter = asyncio.ensure_future(ready.get())
    await asyncio.wait({getter, busy}, return_when=asyncio.FIRST_COMPLETED)
    if getter.done():
        return getter.result()
    getter.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        return await getter
    return None


class _Writes:
    """The write transactions in flight, oldest first, each with its pages' emails.

    At most ``WRITERS`` at once, so PostgreSQL runs one's statements while Python prepares
    the next's. A later write waits (in Python) for the earlier one's commit before its
    own, so the earlier must never wait (in PostgreSQL) for a row the later one wrote, a
    deadlock the server cannot see. Hence: two in flight never share an email (an insert
    or row lock of the same contact); the run seeds the tenant's event types before its
    first write (publishing seeds the missing ones, rows two writes would both insert); and
    the first write of a run goes alone."""

    def __init__(self) -> None:
        self._flight: list[tuple[asyncio.Task[None], frozenset[str]]] = []

    def last(self) -> asyncio.Task[None] | None:
        return self._flight[-1][0] if self._flight else None

    async def make_room(self, emails: frozenset[str], *, first: bool) -> None:
        """Wait (oldest first; raising what a write raised) until a write of ``emails``
        may start."""
        while self._flight and (
            first
            or len(self._flight) >= WRITERS
            or self._flight[0][0].done()
            or any(not emails.isdisjoint(held) for _task, held in self._flight)
        ):
            task, _emails = self._flight.pop(0)
            await task

    def start(self, write: Coroutine[Any, Any, None], emails: frozenset[str], *, name: str) -> None:
        self._flight.append((asyncio.create_task(write, name=name), emails))

    async def drain(self) -> None:
        while self._flight:
            task, _emails = self._flight.pop(0)
            await task

    async def cancel(self) -> None:
        for task, _emails in self._flight:
            task.cancel()
        for task, _emails in self._flight:
            with contextlib.suppress(BaseException):
                await task
        self._flight.clear()


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
        self.writes = 0
        self.stale_statistics = False
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

    def after(self, pages: list[_Read], outcome: UpsertOutcome) -> tuple[RunCounts, Any]:
        """The counts and the watermark once ``pages`` are written with ``outcome``."""
        c = self.counts
        reasons = Counter(dict(c.skipped_reasons))
        watermark = self.watermark
        for page in pages:
            reasons.update(page.skipped)
            watermark = _highest(watermark, page.watermark)
        counts = replace(
            c,
            fetched=c.fetched + sum(page.fetched for page in pages),
            created=c.created + len(outcome.created),
            updated=c.updated + len(outcome.updated),
            unchanged=c.unchanged + outcome.unchanged,
            skipped=c.skipped + sum(sum(page.skipped.values()) for page in pages),
            skipped_reasons=dict(reasons),
        )
        return counts, watermark

    def checkpoint(self, following: Request | None, watermark: Any) -> dict[str, Any]:
        saved: dict[str, Any] = {"watermark": watermark}
        if following is not None:
            saved["next"] = {
                "method": following.method,
                "url": following.url,
                "params": [list(pair) for pair in following.params],
                "headers": following.headers,
                "json": following.json,
            }
        return saved


def _past_a_power_of_ten(before: int, after: int) -> bool:
    """Whether a count went past 10, 100, 1,000, ...: the contacts table grew by about that
    much, and its statistics are worth refreshing. From 10: statistics of a table that was
    empty, or held one contact, rate the tenant index as good as the email index for a
    lookup by email, and the first thousands of a first sync each read every contact."""
    mark = 10
    while mark <= after:
        if before < mark:
            return True
        mark *= 10
    return False


def _highest(watermark: Any, value: Any) -> Any:
    """The later of a watermark and a record's value (a value that cannot be one is not)."""
    if value is MISSING or value is None or isinstance(value, bool | dict | list):
        return watermark
    if watermark is None or _later(value, watermark):
        return value
    return watermark


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
