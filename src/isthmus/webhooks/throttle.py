"""Per-subscription rate limit and maximum concurrency of deliveries, and the share of job
slots that slow endpoints may hold.

Each answers "not now" instead of waiting: the delivery handler then hands its job back to
the queue (``RetryLater``, no attempt counted), so a worker slot is never spent waiting on
one endpoint and a slow endpoint cannot hold back the others.

- Rate (``rateLimitPerSecond``): a moving window in the hub's ``limits`` storage, in memory
  for one process or Redis shared by every process.
- Concurrency (``maxConcurrency``): within a process, a count per subscription; across
  processes on PostgreSQL, one of ``maxConcurrency`` session advisory locks per subscription,
  held on a dedicated connection while the request is in flight. The server frees the lock
  when the connection dies, so a killed worker never leaks a slot. SQLite serves one process,
  where the in-process count is exact.
- Slow endpoints (any subscription, in each process): one whose last call took
  ``SLOW_CALL_SECONDS`` or more (a timeout included) is slow until a call is quick again;
  calls to slow endpoints hold at most ``slow_share`` of the process's job slots in all.
  Without it, a backlog for one endpoint that answers in seconds fills every slot in turn,
  and every other subscriber's deliveries and every sync wait behind it. A quick endpoint
  never counts, so a busy subscriber with a quick receiver keeps every slot.

A delivery turned away is not sent back for a fixed moment, which makes the worker claim
and return a large backlog again and again (a backlog of 600 for a 2 s endpoint kept a
core busy, and one at 5 a second half a core): each takes the next place in its
subscription's line, paced as the subscription can take them (one call's time divided by
the slots it may hold, or one rate interval, after the one before), at most
``MAX_WAIT_SECONDS`` ahead.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import sqlalchemy as sa
from limits import RateLimitItemPerSecond
from limits.aio.storage import Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError

from isthmus.domain.records import WebhookSubscription
from isthmus.store.db import Store

log = logging.getLogger("isthmus.webhooks")

_NAMESPACE = "webhook"
_TAKE_SLOT = sa.text(
    "SELECT s FROM generate_series(0, :n - 1) AS s WHERE pg_try_advisory_lock(:k, s) LIMIT 1"
)
_FREE_SLOT = sa.text("SELECT pg_advisory_unlock(:k, :s)")

#: Subscribers are asked to answer within seconds; a call this long holds its slot long
#: enough to starve the others when many follow it.
SLOW_CALL_SECONDS = 1.0
#: How far ahead a turned-away delivery is put at most: a longer line comes round again,
#: and an endpoint that has become quick meanwhile waits no longer than this.
MAX_WAIT_SECONDS = 300.0
#: The least a turned-away delivery waits: enough for calls in flight to move on.
_MOMENT = 0.2
AT_CAPACITY = "subscription at its maximum concurrency"
SLOW = "endpoint slow: its calls already hold their share of the job slots"


@dataclass(frozen=True)
class NotNow:
    """Why a delivery may not go now, and in how many seconds to try it again."""

    reason: str
    delay: float


def _lock_key(sub_id: str) -> int:
    """The subscription's advisory lock key, a signed 32-bit int (a rare collision between
    two subscriptions only makes them share slots)."""
    return int.from_bytes(zlib.crc32(sub_id.encode()).to_bytes(4, "big"), "big", signed=True)


class Throttle:
    def __init__(self, store: Store, storage: Storage, *, slow_share: int) -> None:
        self.store = store
        self.limiter = MovingWindowRateLimiter(storage)
        self.slow_share = slow_share
        self._local: dict[str, int] = {}
        self._took: dict[str, float] = {}  # subscription -> seconds its last call took
        self._line: dict[str, float] = {}  # subscription -> its line's last place (monotonic)
        self._slow_in_flight = 0

    def is_slow(self, sub: WebhookSubscription) -> bool:
        return self._took.get(sub.id, 0.0) >= SLOW_CALL_SECONDS

    def observe(self, sub: WebhookSubscription, seconds: float) -> None:
        """Note how long a call to the subscription took."""
        was_slow, slow = self.is_slow(sub), seconds >= SLOW_CALL_SECONDS
        self._took[sub.id] = seconds
        if slow and not was_slow:
            log.warning(
                "webhook %s is slow (a call took %.1f s): its deliveries share %d of this "
                "process's job slots with other slow endpoints until it answers quickly",
                sub.id,
                seconds,
                self.slow_share,
            )
        elif was_slow and not slow:
            self._line.pop(sub.id, None)  # a line made for slow calls is too long now
            log.info("webhook %s answers quickly again (%.2f s)", sub.id, seconds)

    def _in_line(self, sub_id: str, *, earliest: float, gap: float) -> float:
        """Seconds to the next place in the subscription's line: ``gap`` after the last
        place taken, ``earliest`` from now at the soonest, ``MAX_WAIT_SECONDS`` at most."""
        now = time.monotonic()
        last = max(self._line.get(sub_id, 0.0), now + earliest)
        delay = min(last - now + gap, MAX_WAIT_SECONDS)
        self._line[sub_id] = now + delay
        return delay

    def _not_now(self, reason: str, sub_id: str, slots: int) -> NotNow:
        """A slot is held: the next place, one call's time over ``slots`` apart."""
        gap = self._took.get(sub_id, 0.0) / slots
        return NotNow(reason, self._in_line(sub_id, earliest=_MOMENT, gap=gap))

    async def rate_delay(self, sub: WebhookSubscription) -> float | None:
        """None if this delivery may go now; else seconds to its place in the line, one
        rate interval apart, once the window has moved. A storage failure lets the
        delivery go: a rate limit is no reason to stop delivering."""
        if not sub.rate_limit_per_second:
            return None
        item = RateLimitItemPerSecond(sub.rate_limit_per_second)
        try:
            if await self.limiter.hit(item, _NAMESPACE, sub.id):
                return None
            stats = await self.limiter.get_window_stats(item, _NAMESPACE, sub.id)
        except StorageError as exc:
            log.warning("rate limit storage failed; delivering unthrottled: %s", exc)
            return None
        wait = min(max(stats.reset_time - time.time(), 0.01), 1.0)
        return self._in_line(sub.id, earliest=wait, gap=1 / sub.rate_limit_per_second)

    @asynccontextmanager
    async def slot(self, sub: WebhookSubscription) -> AsyncIterator[NotNow | None]:
        """Yields None while the call may go (holding what it counts against), else why
        it may not go now and when to try again."""
        if not self.is_slow(sub):
            async with self._capped(sub) as refused:
                yield refused
            return
        if self._slow_in_flight >= self.slow_share:
            yield self._not_now(SLOW, sub.id, self.slow_share)
            return
        self._slow_in_flight += 1
        try:
            async with self._capped(sub) as refused:
                yield refused
        finally:
            self._slow_in_flight -= 1

    @asynccontextmanager
    async def _capped(self, sub: WebhookSubscription) -> AsyncIterator[NotNow | None]:
        """Holds one of the subscription's ``maxConcurrency`` slots for the block, if it
        has a maximum (None), else says when to try again."""
        cap = sub.max_concurrency
        if not cap:
            yield None
            return
        held = self._local.get(sub.id, 0)
        if held >= cap:
            yield self._not_now(AT_CAPACITY, sub.id, cap)
            return
        self._local[sub.id] = held + 1
        try:
            if self.store.dialect == "postgresql":
                async with self._shared_slot(sub.id, cap) as got:
                    yield None if got else self._not_now(AT_CAPACITY, sub.id, cap)
            else:
                yield None
        finally:
            left = self._local[sub.id] - 1
            if left:
                self._local[sub.id] = left
            else:
                del self._local[sub.id]

    @asynccontextmanager
    async def _shared_slot(self, sub_id: str, cap: int) -> AsyncIterator[bool]:
        key = _lock_key(sub_id)
        async with self.store.engine.connect() as conn:
            taken = (await conn.execute(_TAKE_SLOT, {"n": cap, "k": key})).scalar()
            await conn.commit()  # session locks outlive the transaction; no idle transaction
            if taken is None:
                yield False
                return
            try:
                yield True
            finally:
                try:
                    await conn.execute(_FREE_SLOT, {"k": key, "s": taken})
                    await conn.commit()
                except BaseException:
                    # A pooled connection must never keep a slot: drop it, the server frees it.
                    await conn.invalidate()
                    raise
