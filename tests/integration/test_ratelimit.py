from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import Depends, FastAPI, Header, HTTPException
from limits.aio.storage import Storage

from isthmus.api.ratelimit import RateLimitMiddleware
from isthmus.ratelimit_storage import close_storage, make_storage

KNOWN_TOKENS = {"token-a", "token-b"}
ROUTE = "POST /api/v1/items/{item_id}"


def build_app(
    storage: Storage,
    *,
    default_limit: str = "5/minute",
    ip_limit: str = "20/minute",
    route_limits: dict[str, str] | None = None,
) -> FastAPI:
    app = FastAPI(docs_url="/api/docs", redoc_url="/api/redoc", openapi_url="/api/openapi.json")

    # Stands in for the real auth, which runs after the limiter: unknown tokens get 401.
    async def require_key(authorization: str | None = Header(None)) -> str:
        token = (authorization or "").removeprefix("Bearer ")
        if token not in KNOWN_TOKENS:
            raise HTTPException(401, "unknown key")
        return token

    @app.get("/api/v1/items")
    async def list_items(key: str = Depends(require_key)) -> dict[str, str]:
        return {"key": key}

    @app.post("/api/v1/items/{item_id}")
    async def touch_item(item_id: str, key: str = Depends(require_key)) -> dict[str, str]:
        return {"item": item_id}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.add_middleware(
        RateLimitMiddleware,
        storage=storage,
        default_limit=default_limit,
        ip_limit=ip_limit,
        route_limits={ROUTE: "2/minute"} if route_limits is None else route_limits,
    )
    return app


def client(app: FastAPI, ip: str = "1.2.3.4") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(ip, 123))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def limit_headers(response: httpx.Response) -> tuple[int, int, int]:
    h = response.headers
    return int(h["x-ratelimit-limit"]), int(h["x-ratelimit-remaining"]), int(h["x-ratelimit-reset"])


@pytest.fixture
async def storage() -> AsyncIterator[Storage]:
    s = make_storage(None)
    yield s
    await close_storage(s)


async def test_every_limited_response_carries_the_headers(storage: Storage) -> None:
    async with client(build_app(storage, default_limit="3/minute")) as c:
        responses = [
            await c.get("/api/v1/items", headers=bearer("token-a")),  # 200
            await c.get("/api/v1/items", headers=bearer("token-a")),  # 200
            await c.get("/api/v1/nowhere", headers=bearer("token-a")),  # 404
            await c.get("/api/v1/items", headers=bearer("token-a")),  # 429
            await c.get("/api/v1/items"),  # 401, no token: the IP bucket
        ]
    assert [r.status_code for r in responses] == [200, 200, 404, 429, 401]
    for r in responses:
        limit, remaining, reset = limit_headers(r)
        assert 0 <= remaining < limit
        assert 0 < reset <= 60


async def test_remaining_counts_down_then_429_with_problem_body(storage: Storage) -> None:
    async with client(build_app(storage)) as c:
        seen = []
        for _ in range(5):
            r = await c.get("/api/v1/items", headers=bearer("token-a"))
            assert r.status_code == 200
            seen.append(limit_headers(r)[:2])
        refused = await c.get("/api/v1/items", headers=bearer("token-a"))

    assert seen == [(5, 4), (5, 3), (5, 2), (5, 1), (5, 0)]
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    retry_after = int(refused.headers["retry-after"])
    assert 1 <= retry_after <= 60
    assert refused.json() == {
        "type": "about:blank",
        "title": "Rate limit exceeded",
        "status": 429,
        "detail": "API key limit of 5 per 1 minute exceeded",
        "statusCode": 429,
        "message": "Rate limit exceeded",
        "retryAfter": retry_after,
    }
    assert limit_headers(refused)[:2] == (5, 0)


async def test_budget_comes_back_after_retry_after(storage: Storage) -> None:
    async with client(build_app(storage, default_limit="1/second")) as c:
        assert (await c.get("/api/v1/items", headers=bearer("token-a"))).status_code == 200
        refused = await c.get("/api/v1/items", headers=bearer("token-a"))
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "1"
        await asyncio.sleep(1.05)
        assert (await c.get("/api/v1/items", headers=bearer("token-a"))).status_code == 200


async def test_each_key_has_its_own_budget(storage: Storage) -> None:
    async with client(build_app(storage, default_limit="2/minute")) as c:
        for _ in range(2):
            assert (await c.get("/api/v1/items", headers=bearer("token-a"))).status_code == 200
        assert (await c.get("/api/v1/items", headers=bearer("token-a"))).status_code == 429

        other = await c.get("/api/v1/items", headers=bearer("token-b"))
    assert other.status_code == 200
    assert limit_headers(other)[:2] == (2, 1)


async def test_ip_limit_catches_rotating_tokens(storage: Storage) -> None:
    app = build_app(storage, default_limit="5/minute", ip_limit="10/minute")
    async with client(app) as c:
        for n in range(10):
            r = await c.get("/api/v1/items", headers=bearer(f"guess-{n}"))
            assert r.status_code == 401
            # The headers speak for the (fresh) key bucket, not the draining IP bucket.
            assert limit_headers(r)[:2] == (5, 4)
        refused = await c.get("/api/v1/items", headers=bearer("guess-new"))
        anonymous = await c.get("/api/v1/items")
        known = await c.get("/api/v1/items", headers=bearer("token-a"))
    assert refused.status_code == 429
    assert refused.json()["detail"] == "client IP limit of 10 per 1 minute exceeded"
    assert anonymous.status_code == 429
    assert limit_headers(anonymous)[:2] == (10, 0)
    # A valid key behind a spent IP is refused too: both buckets must have room.
    assert known.status_code == 429

    async with client(app, ip="5.6.7.8") as elsewhere:
        assert (await elsewhere.get("/api/v1/items", headers=bearer("token-a"))).status_code == 200


async def test_anonymous_requests_use_the_ip_bucket(storage: Storage) -> None:
    async with client(build_app(storage, ip_limit="3/minute")) as c:
        statuses = [(await c.get("/api/v1/items")).status_code for _ in range(4)]
        last = await c.get("/api/v1/items")
    assert statuses == [401, 401, 401, 429]
    assert limit_headers(last)[:2] == (3, 0)


async def test_route_limit_overrides_the_default_for_that_route(storage: Storage) -> None:
    async with client(build_app(storage)) as c:
        first = await c.post("/api/v1/items/1", headers=bearer("token-a"))
        # A different item is the same route template, so the same bucket.
        second = await c.post("/api/v1/items/2", headers=bearer("token-a"))
        third = await c.post("/api/v1/items/3", headers=bearer("token-a"))
        elsewhere = await c.get("/api/v1/items", headers=bearer("token-a"))
        other_key = await c.post("/api/v1/items/1", headers=bearer("token-b"))

    assert [first.status_code, second.status_code, third.status_code] == [200, 200, 429]
    assert limit_headers(first)[:2] == (2, 1)
    assert third.json()["detail"] == (
        "API key limit of 2 per 1 minute for POST /api/v1/items/{item_id} exceeded"
    )
    # The route's budget is separate from the key's default budget.
    assert elsewhere.status_code == 200
    assert limit_headers(elsewhere)[:2] == (5, 4)
    assert other_key.status_code == 200


async def test_route_limit_names_are_case_insensitive_in_the_method(storage: Storage) -> None:
    app = build_app(storage, route_limits={"post /api/v1/items/{item_id}": "1/minute"})
    async with client(app) as c:
        assert (await c.post("/api/v1/items/1", headers=bearer("token-a"))).status_code == 200
        assert (await c.post("/api/v1/items/1", headers=bearer("token-a"))).status_code == 429


def test_bad_route_limit_is_refused_at_construction(storage: Storage) -> None:
    with pytest.raises(ValueError, match="METHOD /path"):
        build_app(storage, route_limits={"/api/v1/items": "1/minute"}).build_middleware_stack()
    with pytest.raises(ValueError):
        build_app(storage, default_limit="lots").build_middleware_stack()


@pytest.mark.parametrize(
    "path", ["/healthz", "/api/docs", "/api/redoc", "/api/openapi.json", "/openapi.json"]
)
async def test_exempt_paths_carry_no_limit(storage: Storage, path: str) -> None:
    async with client(build_app(storage, ip_limit="2/minute")) as c:
        responses = [await c.get(path, headers=bearer("token-a")) for _ in range(5)]
        # ...and they have not spent anything from the budget of limited paths.
        limited = await c.get("/api/v1/items", headers=bearer("token-a"))
    assert all(r.status_code != 429 for r in responses)
    assert all("x-ratelimit-limit" not in r.headers for r in responses)
    assert limited.status_code == 200
    assert limit_headers(limited)[:2] == (5, 4)


async def test_unreachable_storage_lets_requests_through() -> None:
    # Port 1 refuses at once: the limiter must not turn a Redis outage into an API outage.
    down = make_storage("redis://127.0.0.1:1/0")
    try:
        async with client(build_app(down)) as c:
            r = await c.get("/api/v1/items", headers=bearer("token-a"))
    finally:
        await close_storage(down)
    assert r.status_code == 200
    assert "x-ratelimit-limit" not in r.headers
