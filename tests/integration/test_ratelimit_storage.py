"""One contract, every rate-limit storage: in-process memory and Redis."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from fastapi import FastAPI
from limits import parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter

from isthmus.api.ratelimit import RateLimitMiddleware
from isthmus.ratelimit_storage import close_storage, make_storage

StorageFactory = Callable[[], Storage]


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def storage_factory(request: pytest.FixtureRequest) -> AsyncIterator[StorageFactory]:
    """Makes storages that see the same counters, as separate processes would.

    Memory storages are one object (a process shares its memory with itself); Redis ones
    are separate clients under one key prefix unique to this test, so the test can delete
    exactly the keys it made.
    """
    made: list[Storage] = []
    if request.param == "memory":
        shared = make_storage(None)
        made.append(shared)

        def factory() -> Storage:
            return shared
    else:
        url: str = request.getfixturevalue("redis_url")
        prefix = f"isthmus-test:{uuid.uuid4().hex}"

        def factory() -> Storage:
            s = make_storage(url, key_prefix=prefix)
            made.append(s)
            return s

    yield factory

    if made:
        await made[0].reset()
    for s in made:
        await close_storage(s)


@pytest.fixture
def storage(storage_factory: StorageFactory) -> Storage:
    return storage_factory()


async def test_storage_is_the_expected_kind(
    storage: Storage, request: pytest.FixtureRequest
) -> None:
    kind = request.node.callspec.params["storage_factory"]
    assert isinstance(storage, MemoryStorage if kind == "memory" else RedisStorage)
    assert await storage.check()


async def test_hits_until_the_budget_is_spent(storage: Storage) -> None:
    limiter = MovingWindowRateLimiter(storage)
    item = parse("3/minute")
    before = time.time()

    assert [await limiter.hit(item, "key", "a") for _ in range(4)] == [True, True, True, False]

    stats = await limiter.get_window_stats(item, "key", "a")
    assert stats.remaining == 0
    assert before + 59 < stats.reset_time <= time.time() + 60


async def test_remaining_counts_down(storage: Storage) -> None:
    limiter = MovingWindowRateLimiter(storage)
    item = parse("3/minute")
    remaining = []
    for _ in range(3):
        await limiter.hit(item, "key", "a")
        remaining.append((await limiter.get_window_stats(item, "key", "a")).remaining)
    assert remaining == [2, 1, 0]


async def test_identifiers_and_limits_are_separate_buckets(storage: Storage) -> None:
    limiter = MovingWindowRateLimiter(storage)
    item = parse("1/minute")
    assert await limiter.hit(item, "key", "a")
    assert not await limiter.hit(item, "key", "a")
    assert await limiter.hit(item, "key", "b")
    assert await limiter.hit(item, "ip", "a")
    # A changed limit starts a fresh bucket rather than inheriting the old count.
    assert await limiter.hit(parse("2/minute"), "key", "a")


async def test_clear_gives_the_budget_back(storage: Storage) -> None:
    limiter = MovingWindowRateLimiter(storage)
    item = parse("1/minute")
    assert await limiter.hit(item, "key", "a")
    await limiter.clear(item, "key", "a")
    assert await limiter.hit(item, "key", "a")


async def test_short_window_expires(storage: Storage) -> None:
    limiter = MovingWindowRateLimiter(storage)
    item = parse("1/second")
    assert await limiter.hit(item, "key", "a")
    assert not await limiter.hit(item, "key", "a")
    stats = await limiter.get_window_stats(item, "key", "a")
    await _sleep_until(stats.reset_time + 0.05)
    assert await limiter.hit(item, "key", "a")


def _app(storage: Storage) -> FastAPI:
    app = FastAPI()

    @app.get("/api/v1/things")
    async def things() -> list[str]:
        return []

    app.add_middleware(
        RateLimitMiddleware,
        storage=storage,
        default_limit="3/minute",
        ip_limit="100/minute",
        route_limits={},
    )
    return app


def _client(app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=("1.2.3.4", 123))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def test_app_instances_on_one_storage_share_one_budget(
    storage_factory: StorageFactory,
) -> None:
    # Two apps, as two processes would run them; with Redis each has its own connection.
    first, second = _app(storage_factory()), _app(storage_factory())
    auth = {"Authorization": "Bearer shared-key"}
    async with _client(first) as a, _client(second) as b:
        responses = [
            await a.get("/api/v1/things", headers=auth),
            await b.get("/api/v1/things", headers=auth),
            await a.get("/api/v1/things", headers=auth),
            await b.get("/api/v1/things", headers=auth),
            await a.get("/api/v1/things", headers=auth),
        ]
    assert [r.status_code for r in responses] == [200, 200, 200, 429, 429]
    assert [r.headers["x-ratelimit-remaining"] for r in responses] == ["2", "1", "0", "0", "0"]
    assert responses[3].json()["detail"] == "API key limit of 3 per 1 minute exceeded"
    assert int(responses[3].headers["retry-after"]) >= 1


@pytest.mark.redis
async def test_redis_key_prefixes_keep_deployments_apart(redis_url: str) -> None:
    item = parse("1/minute")
    ours = make_storage(redis_url, key_prefix=f"isthmus-test:{uuid.uuid4().hex}")
    theirs = make_storage(redis_url, key_prefix=f"isthmus-test:{uuid.uuid4().hex}")
    try:
        assert await MovingWindowRateLimiter(ours).hit(item, "key", "a")
        assert await MovingWindowRateLimiter(theirs).hit(item, "key", "a")
    finally:
        for s in (ours, theirs):
            await s.reset()
            await close_storage(s)


@pytest.mark.redis
async def test_redis_url_may_already_name_the_async_scheme(redis_url: str) -> None:
    s = make_storage("async+" + redis_url, key_prefix=f"isthmus-test:{uuid.uuid4().hex}")
    try:
        assert isinstance(s, RedisStorage)
        assert await s.check()
    finally:
        await close_storage(s)


async def _sleep_until(moment: float) -> None:
    await asyncio.sleep(max(0.0, moment - time.time()))
