"""The worker: claim a batch -> run each job's handler -> settle it, leases kept alive.

A handler is ``async def handler(job: Job) -> None``, registered per job kind. What it does
decides what happens to the job:

- **returns**: the worker completes the job (fenced by its lease);
- **settles the job itself**, in its own transaction, so its rows and the job's new state
  commit together::

      async with job.store.transaction() as conn:
          await conn.execute(...)           # the handler's own writes
          await job.complete_in(conn)       # or job.retry_in(conn, ...) / job.fail_in(conn, ...)

  ``*_in`` raise ``LeaseLost`` when another worker has rescued the job, which rolls the
  handler's writes back with it;
- **raises ``RetryLater``** (``delay`` seconds or an ``at`` time): queued again for then; the
  handler owns its schedule and the worker puts no cap on these;
- **raises anything else**: queued again after ``retry_backoff(attempts)`` while
  ``job.attempts < max_attempts``, then failed with the error's text (kept, not deleted).

Two optional ways for a busy kind to do less per job:

- a handler with a ``prepare(jobs)`` method has it awaited once for the jobs of its kind
  claimed together, before their handlers start: one read for the batch, its results left
  on each job's ``prepared`` (a handler must still cope without them: if ``prepare``
  raises, the handlers run all the same);
- a handler whose job is being settled elsewhere, in a statement batched with others and
  fenced by the lease, hands the future of that settle to ``job.settle_later``: the job's
  slot is free as soon as the handler returns, and the worker awaits the future in the
  background (and on stop, before it hands anything back).

A busy worker claims jobs ahead (half of ``concurrency``): while every slot
is taken it claims and prepares the next jobs, held leased and ready, so a freed slot
starts one at once instead of waiting for two round trips to the store. They are kept
alive with the running ones and handed back at once on stop, or when no slot has freed
for ``hold_seconds`` (long jobs in every slot must not keep them from idle workers); it
claims ahead again once a slot frees.

Jobs run at least once: a handler runs again for a job whose worker died or lost the lease
before settling it (a SIGKILL loses nothing; another worker takes the job once the lease
expires). While a handler runs, the worker extends its lease every third of
``lease_seconds``, so only a dead or stuck worker loses its jobs. On stop it claims nothing
more, lets running handlers finish for ``shutdown_grace`` seconds, then cancels them and
hands their jobs back at once (``release``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Literal

from isthmus.coalescer import Coalescer
from isthmus.domain.jobs import ClaimedJob
from isthmus.job import Clock, Handler, Job, LeaseLost, RetryLater, retry_backoff
from isthmus.store import queue
from isthmus.store.db import Store
from isthmus.store.notify import WakeUp, wakeup_for
from isthmus.store.types import utcnow

log = logging.getLogger("isthmus.worker")

#: At most this many jobs are completed by one statement.
_COMPLETE_BATCH = 500


class Worker:
    """Runs registered handlers on claimed jobs, up to ``concurrency`` at a time."""

    def __init__(
        self,
        store: Store,
        *,
        wakeup: WakeUp | None = None,
        concurrency: int = 32,
        lease_seconds: float = 30.0,
        poll_interval: float = 1.0,
        max_attempts: int = 5,
        shutdown_grace: float = 10.0,
        hold_seconds: float = 1.0,
        clock: Clock = utcnow,
    ) -> None:
        if concurrency < 1 or lease_seconds <= 0 or poll_interval <= 0:
            raise ValueError("concurrency, lease_seconds and poll_interval must be positive")
        self.store = store
        self.concurrency = concurrency
        self.lease_seconds = lease_seconds
        self.poll_interval = poll_interval
        self.max_attempts = max_attempts
        self.shutdown_grace = shutdown_grace
        self.hold_seconds = hold_seconds
        self.clock = clock
        self._wakeup = wakeup
        self._handlers: dict[str, Handler] = {}
        self._prepares: dict[str, Callable[[Sequence[Job]], Awaitable[None]]] = {}
        self._running: dict[str, tuple[Job, asyncio.Task[None]]] = {}
        # Claimed and prepared ahead while every slot is busy, with when (monotonic);
        # started as slots free up.
        self._ready: deque[tuple[Job, float]] = deque()
        self._starting = True
        # Jobs whose handlers returned while their settle is under way (``settle_later``).
        self._settling: dict[str, Job] = {}
        # Jobs whose handlers returned are completed together (one UPDATE per batch).
        self._completions: Coalescer[Job, bool] = Coalescer(
            self._complete_many, max_batch=_COMPLETE_BATCH
        )
        # Claim again once this many slots are free, not at every finished job: fewer,
        # larger claims when busy. An idle worker claims at once whatever it is woken for.
        # A busy one claims as many ahead (see the module docstring).
        self._refill = max(1, concurrency // 2)
        self._ahead = self._refill
        self._ahead_now = self._ahead  # 0 after held jobs went back, until a slot frees
        self._slots_free = asyncio.Event()

    def register(self, kind: str, handler: Handler) -> None:
        if kind in self._handlers:
            raise ValueError(f"a handler for {kind!r} is already registered")
        self._handlers[kind] = handler
        prepare = getattr(handler, "prepare", None)
        if prepare is not None:
            self._prepares[kind] = prepare

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset(self._handlers)

    async def run(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set, then drain (see the module docstring)."""
        if not self._handlers:
            raise ValueError("register at least one handler before running the worker")
        wakeup = self._wakeup or wakeup_for(self.store, self.kinds)
        await wakeup.start()
        heartbeat = asyncio.create_task(self._heartbeat())
        try:
            while not stop.is_set():
                free = self._wanted()
                if free < self._refill and self._running:
                    self._slots_free.clear()
                    slots = asyncio.ensure_future(self._slots_free.wait())
                    hold = self.hold_seconds if self._ready else None
                    try:
                        await self._until(stop, [slots], hold)  # enough slots free up
                    finally:
                        slots.cancel()
                    await self._hand_back_held()
                    continue
                wakeup.clear()
                claimed = await self._claim(free)
                if len(claimed) < free:  # nothing more is due: sleep until told or polled
                    woken = asyncio.ensure_future(wakeup.wait(self.poll_interval))
                    try:
                        await self._until(stop, [woken])
                    finally:
                        woken.cancel()
        finally:
            await self._drain()
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            await wakeup.close()

    async def run_pending(self) -> int:
        """Run every job due now to its end, then return how many ran (tests, one-off
        commands; no wake-up, no heartbeat)."""
        ran = 0
        while claimed := await self._claim(self.concurrency):
            ran += len(claimed)
            while self._running:
                await asyncio.gather(*self._tasks())
            await self._settled()
        return ran

    async def _settled(self) -> None:
        """Until every settle under way elsewhere (``settle_later``) has finished."""
        while settling := [j.pending for j in self._settling.values() if j.pending is not None]:
            await asyncio.wait(settling)

    # -- internals --------------------------------------------------------------------------

    def _tasks(self) -> list[asyncio.Task[None]]:
        return [task for _job, task in self._running.values()]

    def _wanted(self) -> int:
        """How many jobs to claim now: free slots, plus the ones held ahead while busy."""
        return self.concurrency + self._ahead_now - len(self._running) - len(self._ready)

    async def _claim(self, limit: int) -> list[ClaimedJob]:
        try:
            claimed = await queue.claim(
                self.store,
                kinds=self.kinds,
                limit=limit,
                lease_seconds=self.lease_seconds,
                now=self.clock(),
            )
        except Exception:
            log.exception("claiming jobs failed; trying again after the poll interval")
            return []
        made = [Job(item, self.store, self.clock) for item in claimed]
        if self._prepares:
            await self._prepare(made)
        for job in made:
            if len(self._running) < self.concurrency and self._starting:
                self._start(job)
            else:
                self._ready.append((job, time.monotonic()))
        return claimed

    def _start(self, job: Job) -> None:
        task = asyncio.create_task(self._execute(job), name=f"job {job.id}")
        self._running[job.id] = (job, task)
        task.add_done_callback(functools.partial(self._forget, job.id))

    async def _prepare(self, made: list[Job]) -> None:
        by_kind: dict[str, list[Job]] = {}
        for job in made:
            if job.kind in self._prepares:
                by_kind.setdefault(job.kind, []).append(job)
        for kind, group in by_kind.items():
            try:
                await self._prepares[kind](group)
            except Exception:
                # Only a shortcut: each handler does without it.
                log.exception("preparing %d %s jobs failed", len(group), kind)

    def _forget(self, job_id: str, _task: asyncio.Task[None]) -> None:
        self._running.pop(job_id, None)
        self._ahead_now = self._ahead
        if self._ready and self._starting:
            self._start(self._ready.popleft()[0])
        if self._wanted() >= self._refill:
            self._slots_free.set()

    async def _execute(self, job: Job) -> None:
        handler = self._handlers[job.kind]
        try:
            await handler(job)
        except asyncio.CancelledError:
            raise
        except LeaseLost:
            log.warning("job %s (%s): lease lost, another worker has it", job.id, job.kind)
            return
        except RetryLater as exc:
            await self._settle(job, "retry", run_at=exc.run_at(self.clock()), error=exc.reason)
            return
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            if job.attempts < self.max_attempts:
                log.warning("job %s (%s) attempt %d: %s", job.id, job.kind, job.attempts, error)
                delay = timedelta(seconds=retry_backoff(job.attempts))
                await self._settle(job, "retry", run_at=self.clock() + delay, error=error)
            else:
                log.error(
                    "job %s (%s) failed, attempt %d: %s", job.id, job.kind, job.attempts, error
                )
                await self._settle(job, "fail", error=error)
            return
        if job.pending is not None:
            self._settling[job.id] = job
            job.pending.add_done_callback(functools.partial(self._settled_later, job))
        elif not job.settled:
            await self._complete(job)

    def _settled_later(self, job: Job, settle: asyncio.Future[bool]) -> None:
        self._settling.pop(job.id, None)
        if settle.cancelled():
            log.warning("job %s (%s): its settle was cancelled", job.id, job.kind)
        elif (exc := settle.exception()) is not None:
            # The lease runs out and another worker takes the job: at least once.
            log.warning("job %s (%s): recording its outcome failed: %s", job.id, job.kind, exc)
        elif not settle.result():
            log.warning("job %s (%s): lease lost before its settle", job.id, job.kind)

    async def _complete(self, job: Job) -> None:
        """Completions are grouped: jobs whose handlers return while one completion
        statement is under way are completed together by the next."""
        if not await self._completions(job):
            log.warning("job %s (%s): lease lost before complete", job.id, job.kind)

    async def _complete_many(self, batch: list[Job]) -> list[bool]:
        leases = [(job.id, job.claimed.lease_token) for job in batch]
        try:
            held = await queue.complete_many(self.store, leases, now=self.clock())
        except Exception:
            # The leases run out and other workers take the jobs: at least once.
            log.exception("recording %d completed jobs failed", len(batch))
            held = set()
        for job in batch:
            # Marked here, not by the job's task: one cancelled meanwhile (a stop) must not
            # be handed back after its completion was recorded.
            job.settled = job.settled or job.id in held
        return [job.id in held for job in batch]

    async def _settle(
        self,
        job: Job,
        how: Literal["retry", "fail", "release"],
        *,
        run_at: datetime | None = None,
        error: str = "",
    ) -> None:
        token, now = job.claimed.lease_token, self.clock()
        try:
            if how == "retry":
                assert run_at is not None
                held = await queue.retry(
                    self.store, job.id, token, run_at=run_at, error=error, now=now
                )
            elif how == "fail":
                held = await queue.fail(self.store, job.id, token, error=error, now=now)
            else:
                held = await queue.release(self.store, job.id, token, now=now)
        except Exception:
            # The lease runs out and another worker takes the job: at least once, not lost.
            log.exception("job %s (%s): recording the outcome failed", job.id, job.kind)
            return
        if held:
            job.settled = True
        elif not job.settled:
            log.warning("job %s (%s): lease lost before %s", job.id, job.kind, how)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            held = [(job.id, job.claimed.lease_token) for job, _t in self._running.values()]
            held += [(job.id, job.claimed.lease_token) for job in self._settling.values()]
            held += [(job.id, job.claimed.lease_token) for job, _at in self._ready]
            if not held:
                continue
            try:
                kept = await queue.extend_leases(
                    self.store, held, lease_seconds=self.lease_seconds, now=self.clock()
                )
            except Exception:
                log.exception("extending leases failed")
                continue
            for job_id, _token in held:
                entry = self._running.get(job_id)
                if job_id not in kept and entry is not None and not entry[0].settled:
                    log.warning("job %s: lease lost while running", job_id)

    async def _drain(self) -> None:
        # Jobs claimed ahead and not started go back first, for other workers to take now.
        self._starting = False
        while self._ready:
            await self._settle(self._ready.popleft()[0], "release")
        await self._drain_running()
        settling = [job.pending for job in self._settling.values() if job.pending is not None]
        if settling:
            await asyncio.wait(settling, timeout=self.shutdown_grace)

    async def _drain_running(self) -> None:
        tasks = self._tasks()
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks, timeout=self.shutdown_grace)
        unfinished = [job for job, task in self._running.values() if task in pending]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await self._completions.idle()  # completions already under way are recorded first
        for job in unfinished:
            if not job.settled:
                await self._settle(job, "release")

    async def _hand_back_held(self) -> None:
        """Jobs held ahead for ``hold_seconds`` with no slot freeing go back to the queue,
        for other workers; no more are claimed ahead until a slot frees."""
        now = time.monotonic()
        while self._ready and now - self._ready[0][1] >= self.hold_seconds:
            self._ahead_now = 0
            await self._settle(self._ready.popleft()[0], "release")

    @staticmethod
    async def _until(
        stop: asyncio.Event, waits: Sequence[asyncio.Future[Any]], at_most: float | None = None
    ) -> None:
        """Until ``stop`` is set, the first of ``waits`` is done (none is cancelled) or
        ``at_most`` seconds passed."""
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait(
                [stopper, *waits], timeout=at_most, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            stopper.cancel()


async def run_worker(
    store: Store,
    handlers: Mapping[str, Handler],
    stop: asyncio.Event,
    *,
    concurrency: int = 32,
    lease_seconds: float = 30.0,
    poll_interval: float = 1.0,
    max_attempts: int = 5,
    shutdown_grace: float = 10.0,
) -> None:
    """Run a worker for ``handlers`` (kind -> handler) on ``store`` until ``stop`` is set,
    woken by LISTEN/NOTIFY on PostgreSQL and by the in-process signal on SQLite."""
    worker = Worker(
        store,
        concurrency=concurrency,
        lease_seconds=lease_seconds,
        poll_interval=poll_interval,
        max_attempts=max_attempts,
        shutdown_grace=shutdown_grace,
    )
    for kind, handler in handlers.items():
        worker.register(kind, handler)
    await worker.run(stop)


__all__ = [
    "Handler",
    "Job",
    "LeaseLost",
    "RetryLater",
    "Worker",
    "retry_backoff",
    "run_worker",
]
