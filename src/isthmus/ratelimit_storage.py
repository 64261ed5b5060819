"""Where rate-limit counters live: in this process, or in Redis shared by every process.

The inbound API limiter and the outbound connector budgets both take their storage from
here, so one ``ISTHMUS_REDIS_URL`` makes every limit in the deployment global.
"""

from __future__ import annotations

import asyncio
import inspect

from limits.aio.storage import MemoryStorage, RedisStorage, Storage

DEFAULT_KEY_PREFIX = "isthmus:limits"


def make_storage(redis_url: str | None, *, key_prefix: str = DEFAULT_KEY_PREFIX) -> Storage:
    """Build the counter storage: in memory when ``redis_url`` is None, else Redis.

    ``redis_url`` is a plain ``redis://``, ``rediss://`` or ``redis+unix://`` URL as the
    user configures it; limits wants its ``async+`` form to pick the asyncio client.
    ``key_prefix`` namespaces every Redis key, so several deployments (or test runs) can
    share one Redis and be cleared without touching each other. Storage errors are wrapped
    in ``limits.errors.StorageError`` so callers can catch one type whatever the backend.
    """
    if redis_url is None:
        return MemoryStorage(wrap_exceptions=True)
    uri = redis_url if redis_url.startswith("async+") else "async+" + redis_url
    return RedisStorage(uri, wrap_exceptions=True, key_prefix=key_prefix)


async def close_storage(storage: Storage) -> None:
    """Release what the storage holds: Redis connections, the memory expiry task."""
    if isinstance(storage, RedisStorage):
        # Every bridge keeps its client as .storage, but the base class does not declare it.
        client = getattr(storage.bridge, "storage", None)
        pool = getattr(client, "connection_pool", None)
        if pool is not None:
            # coredis disconnects synchronously, redis-py returns a coroutine.
            result = pool.disconnect()
            if inspect.isawaitable(result):
                await result
    elif isinstance(storage, MemoryStorage):
        timer = storage.timer
        if timer is not None and not timer.done():
            timer.cancel()
            # wait() rather than await: the task's own CancelledError is not ours to raise.
            await asyncio.wait([timer])
