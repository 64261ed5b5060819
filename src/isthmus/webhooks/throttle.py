"""Per-subscription rate limit and maximum concurrency of deliveries.

Both answer "not now" instead of waiting: the delivery handler then hands its job back to
the queue for a moment (``RetryLater``, no attempt counted), so a worker slot is never spent
waiting on one endpoint and a slow endpoint cannot hold back the others.

- Rate (``rateLimitPerSecond``): a moving window in the hub's ``limits`` storage, in memory
  for one process or Redis shared by every process.
- Concurrency (``maxConcurrency``): within a process, a count per subscription; across
  processes on PostgreSQL, one of ``maxConcurrency`` session advisory locks per subscription,
  held on a dedicated connection while the request is in flight. The server frees the lock
  when the connection dies, so a killed worker never leaks a slot. SQLite serves one process,
  where the in-process count is exact. A subscription without ``maxConcurrency`` is not
  limited (a cap it did not ask for would only bounce its jobs through the queue).
"""

from __future__ import annotations

import logging
import random
import time
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

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


def _lock_key(sub_id: str) -> int:
    """The subscription's advisory lock key, a signed 32-bit int (a rare collision between
    two subscriptions only makes them share slots)."""
    return int.from_bytes(zlib.crc32(sub_id.encode()).to_bytes(4, "big"), "big", signed=True)


class Throttle:
    def __init__(self, store: Store, storage: Storage) -> None:
        self.store = store
        self.limiter = MovingWindowRateLimiter(storage)
        self._local: dict[str, int] = {}

    async def rate_delay(self, sub: WebhookSubscription) -> float | None:
        """None if this delivery may go now; else seconds to wait for the window to move.
        A storage failure lets the delivery go: a rate limit is no reason to stop delivering."""
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
        return wait + random.uniform(0, 1 / sub.rate_limit_per_second)

    @asynccontextmanager
    async def slot(self, sub: WebhookSubscription) -> AsyncIterator[bool]:
        """Yields whether a concurrency slot of the subscription is held for the block."""
        cap = sub.max_concurrency
        if not cap:
            yield True
            return
        held = self._local.get(sub.id, 0)
        if held >= cap:
            yield False
            return
        self._local[sub.id] = held + 1
        try:
            if self.store.dialect == "postgresql":
                async with self._shared_slot(sub.id, cap) as got:
                    yield got
            else:
                yield True
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
