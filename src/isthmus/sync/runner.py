"""The ``integration.sync`` job: one run of an integration's contact sync.

One run::

    start the run (queued -> running; a job resumed after a crash or a rate-limit wait
    finds it running, with its checkpoint)
    open the integration (auth, rate-limit budget, request log)
    fetch page after page, from the checkpoint when there is one, and map each page's
    records to contacts (records without a usable email, or with the email of an earlier
    record of the walk, skipped: ``EmailClaims``; reasons counted); the fetching runs ahead
    of the writing, at most PREFETCH_PAGES pages
    meanwhile, for the pages fetched so far (one, or all that are waiting when the writer
    lags, up to MAX_WRITE_RECORDS records): one transaction, fenced by the job's lease:
        upsert them (only changed contacts written), publish contact.created /
        contact.updated for them, save the counts and the last page's next request as
        the checkpoint
    (up to WRITERS such transactions in flight, committing in page order: see _Writes)
    one transaction: the incremental state (after a whole walk), the run's outcome and
    the polling rules (``record_outcome_in``), the job's completion

A failed fetch ends the walk once the pages fetched before it are written, so a checkpoint
always stands for every page before it. A rate limit is not a failure: a 429 the client
would not wait out, or the integration's budget out of room, puts the job back for the
time given (``RetryLater``) and the run resumes from its checkpoint. Any other failure
ends the run as failed and the polling rules decide on retries and disabling.

Incremental sync (an updated-since value or a saved cursor): see :mod:`isthmus.sync.walk`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any

from isthmus.connectors.selector import get_path
from isthmus.connectors.types import Page, Record, Request
from isthmus.domain.contact_mapping import (
    EmailClaims,
    FieldMapping,
    RecordEmails,
    Skipped,
    map_record,
)
from isthmus.domain.contacts import Mapped
from isthmus.errors import (
    BudgetExhausted,
    InvalidInput,
    OutboundError,
    UpstreamNotFound,
    UpstreamRateLimited,
    UpstreamRejected,
)
from isthmus.job import Job, LeaseLost, RetryLater
from isthmus.services.connections import ConnectionService
from isthmus.services.contacts import publish_changes
from isthmus.services.polling import Outcome, record_outcome_in
from isthmus.store import contact_upserts, queue, sync_runs, sync_state
from isthmus.store import contacts as contacts_repo
from isthmus.store import integrations as integrations_repo
from isthmus.store.contact_upserts import UpsertOutcome
from isthmus.store.db import Store
from isthmus.store.sync_runs import ACTIVE, RunStatus, SyncRun
from isthmus.sync.walk import MappedPage, Walk, highest, past_a_power_of_ten
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
        walk = Walk(run, integration.config, state)
        async with self.store.read() as conn:
            linked = await contacts_repo.linked_emails(conn, tenant_id, run.integration_id)
        walk.record_emails = RecordEmails(linked)
        error: BaseException | None = None
        try:
            mapping = FieldMapping.build(
                integration.provider, integration.config.get("fieldMapping")
            )
            await self._walk_or_start_over(job, walk, mapping)
        except _RunEnded:
            log.info("sync run %s stopped: it was cancelled (or its integration deleted)", run_id)
            return  # the worker completes the job
        except (UpstreamRateLimited, BudgetExhausted) as exc:
            wait = exc.retry_after if exc.retry_after is not None else DEFAULT_RATE_LIMIT_WAIT
            log.info("sync run %s waits %.0f s on a rate limit: %s", run_id, wait, exc.message)
            raise RetryLater(f"rate limited: {exc.message}", delay=wait) from exc
        except (OutboundError, InvalidInput) as exc:
            error = exc
            log.warning("sync run %s failed: %s", run_id, exc)
        async with self.store.transaction() as conn:
            settled = await record_outcome_in(
                conn, tenant_id, run_id, Outcome(walk.counts, error), now=job.clock()
            )
            # Not for a run cancelled meanwhile: its walk may not have reached the end.
            if settled is not None and error is None and (picks_up := walk.next_state()):
                await sync_state.put(conn, tenant_id, integration.id, picks_up, job.clock())
            await job.complete_in(conn)
        if walk.stale_statistics:  # upkeep for the runs that follow, once this one has ended
            await self._refresh_statistics(walk.run)

    async def _walk_or_start_over(self, job: Job, walk: Walk, mapping: FieldMapping) -> None:
        """The walk; from the top of the listing when the API refuses the cursor a cursor
        incremental run starts from (expired, say), before anything was written."""
        try:
            await self._walk(job, walk, mapping)
        except (UpstreamRejected, UpstreamNotFound) as exc:
            if not walk.from_saved_cursor or walk.writes:
                raise
            log.info(
                "sync run %s: the API refused the saved cursor (%s); walking the whole listing",
                walk.run.id,
                exc.message,
            )
            walk.forget_cursor()
            await self._walk(job, walk, mapping)

    async def _walk(self, job: Job, walk: Walk, mapping: FieldMapping) -> None:
        run = walk.run
        endpoint = await self.connections.open(
            run.tenant_id, run.integration_id, clock=lambda: job.clock().timestamp()
        )
        async with endpoint:
            pages = endpoint.pages(resume=walk.resume_from(), params=walk.first_params())
            ready: asyncio.Queue[MappedPage | _End] = asyncio.Queue(PREFETCH_PAGES)
            fetcher = asyncio.create_task(
                _fetch(
                    pages,
                    _Mapper(mapping, walk.record_field, walk.claims, walk.record_emails),
                    ready,
                    walk.resume_skip,
                ),
                name=f"sync {run.id} fetch",
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
        self, job: Job, walk: Walk, pages: list[MappedPage], before: asyncio.Task[None] | None
    ) -> None:
        """The pages in one transaction fenced by the lease; the checkpoint is the last's.
        It commits only after ``before`` (the write of the pages before these) did, and not
        at all if that one failed: a checkpoint stands for every page before it."""
        run = walk.run
        now = job.clock()
        moved = {new: old for page in pages for new, old in page.moved.items()}
        async with self.store.transaction() as conn:
            outcome = UpsertOutcome([], [], 0)
            for group in _upsert_groups(pages):
                done = await contact_upserts.upsert_many(
                    conn, run.tenant_id, run.integration_id, group, now, moved=moved
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
            checkpoint = walk.checkpoint(pages[-1], watermark)
            if not await sync_runs.save_checkpoint(conn, run.id, checkpoint, counts):
                raise _RunEnded(run.id)  # cancelled meanwhile: this write is not kept
        # Only what committed counts: a failed write leaves the walk where it stood.
        if past_a_power_of_ten(walk.counts.created, counts.created):
            walk.stale_statistics = True
        walk.counts, walk.watermark = counts, watermark
        walk.last_request = pages[-1].request

    async def _refresh_statistics(self, run: SyncRun) -> None:
        if self.store.dialect != "postgresql":
            return  # SQLite plans from the table as it is; its writers take turns
        try:
            async with self.store.transaction() as conn:
                await contact_upserts.refresh_statistics(conn)
        except Exception:
            # Only the speed of what follows depends on it; the pages are written.
            log.warning("sync run %s: could not refresh statistics", run.id, exc_info=True)


class _RunEnded(Exception):
    """The run was settled elsewhere while it ran (cancelled, or gone with its integration):
    stop, and keep nothing more."""


@dataclass
class _End:
    """The walk is over: every page was read, or ``error`` stopped it."""

    error: Exception | None = None


@dataclass
class _Batch:
    """What the writer takes at once: the pages waiting (at least one, unless the walk ended
    with an error), and the error that ended the walk after them."""

    pages: list[MappedPage]
    error: Exception | None = None


async def _fetch(
    pages: AsyncIterator[Page],
    mapper: _Mapper,
    ready: asyncio.Queue[MappedPage | _End],
    skip: int,
) -> None:
    """Fetch and map page after page into ``ready`` (the first page from its record ``skip``
    on: the checkpoint of a page written in parts), then an ``_End``. The next page's
    request is known as soon as a page arrives, so fetching goes on while the writer writes;
    the queue's bound keeps it at most ``PREFETCH_PAGES`` ahead (memory stays bounded)."""
    try:
        async for page in pages:
            for part in mapper.parts(page, skip):
                await ready.put(part)
            skip = 0
    except Exception as exc:  # the writer raises it, after writing what came before
        await ready.put(_End(exc))
    else:
        await ready.put(_End())
    finally:
        if isinstance(pages, AsyncGenerator):
            await pages.aclose()


@dataclass
class _Mapper:
    """Pages to contacts, as a run maps them."""

    mapping: FieldMapping
    record_field: str | None
    claims: EmailClaims
    record_emails: RecordEmails

    def parts(self, page: Page, skip: int) -> Iterator[MappedPage]:
        """The page's records from ``skip`` on, in parts of at most ``MAX_WRITE_RECORDS``
        (one write each, mapped as the writer takes them): a listing served in one large
        response costs one part's memory at a time, and a killed run resumes inside it."""
        records, request = page.records, page.request
        start = min(skip, len(records))
        while True:
            stop = len(records)
            if request is not None and stop - start > MAX_WRITE_RECORDS:
                stop = start + MAX_WRITE_RECORDS
                yield self._part(records[start:stop], page, request, stop)
                start = stop
                continue
            yield self._part(records[start:stop], page, page.next, 0)
            return

    def _part(
        self, records: list[Record], page: Page, following: Request | None, skip: int
    ) -> MappedPage:
        mapped: list[Mapped] = []
        skipped: Counter[str] = Counter()
        moved: dict[str, str] = {}
        watermark: Any = None
        field, mapping, check = self.record_field, self.mapping, self.claims.check
        was = self.record_emails.moved
        for record in records:
            result = check(map_record(record, mapping))
            if isinstance(result, Skipped):
                skipped[result.reason] += 1
            else:
                mapped.append(result)
                if (before := was(result)) is not None:
                    moved[result.email] = before
            if field is not None:
                watermark = highest(watermark, get_path(record, field))
        emails = frozenset(m.email for m in mapped).union(moved.values())
        return MappedPage(
            mapped, skipped, len(records), watermark, page.request, following, emails, skip, moved
        )


def _upsert_groups(pages: list[MappedPage]) -> list[list[Mapped]]:
    """The pages' contacts in as few upserts as keep each page's meaning: a page holding an
    email that an earlier page of the group holds starts the next group. So a record
    listed again on a later page (the same id: ``EmailClaims`` skips any other) is created,
    then updated, whether or not the pages were written together (an upsert counts an
    email once, as its last record)."""
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
    ready: asyncio.Queue[MappedPage | _End], busy: asyncio.Task[None] | None
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
    ready: asyncio.Queue[MappedPage | _End], busy: asyncio.Task[None]
) -> MappedPage | _End | None:
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


__all__ = ["DEFAULT_RATE_LIMIT_WAIT", "SyncRunner"]
