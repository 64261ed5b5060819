"""No 429 at all when the API announces its budget in headers: the integration's budget
reads ``X-RateLimit-*`` and holds calls back before the API would refuse them.

The local API allows ``LIMIT`` calls per wall-clock second and says so on every answer
(``X-RateLimit-Limit``, ``X-RateLimit-Remaining``, ``X-RateLimit-Reset`` as an epoch second);
one call more in the same second gets a 429. A client without the budget meets that 429
(the control); with it, none arrives.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from limits.aio.storage import MemoryStorage
from webhook_support import LocalServer

from isthmus.connectors import APIClient, RetryPolicy
from isthmus.connectors.ratelimit import budget_for
from isthmus.errors import UpstreamRateLimited
from isthmus.http import OutboundHTTP

LIMIT = 10
CALLS = 25


class CountingAPI(LocalServer):
    def __init__(self) -> None:
        super().__init__()
        self.windows: dict[int, int] = {}
        self.refused = 0

    async def _handle(self, request: web.Request) -> web.Response:
        now = time.time()
        window = math.floor(now)
        used = self.windows.get(window, 0) + 1
        self.windows[window] = used
        headers = {
            "X-RateLimit-Limit": str(LIMIT),
            "X-RateLimit-Remaining": str(max(LIMIT - used, 0)),
            "X-RateLimit-Reset": str(window + 1),
        }
        if used > LIMIT:
            self.refused += 1
            headers["Retry-After"] = "1"
            return web.json_response({"message": "slow down"}, status=429, headers=headers)
        return web.json_response({"ok": True}, headers=headers)


@pytest.fixture
async def api_server() -> AsyncIterator[CountingAPI]:
    server = CountingAPI()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def http() -> AsyncIterator[OutboundHTTP]:
    async with OutboundHTTP(allowlist=["127.0.0.0/8"]) as client:
        yield client


async def test_without_the_budget_the_api_answers_429(
    api_server: CountingAPI, http: OutboundHTTP
) -> None:
    async with APIClient(api_server.url("/"), http=http, retry=RetryPolicy(max_attempts=1)) as api:
        with pytest.raises(UpstreamRateLimited):
            for _ in range(CALLS):
                await api.get("items")
    assert api_server.refused == 1


async def test_with_the_budget_no_429_ever_arrives(
    api_server: CountingAPI, http: OutboundHTTP
) -> None:
    budget = budget_for("int_headers", None, MemoryStorage())
    async with APIClient(
        api_server.url("/"), http=http, rate_limit=budget, retry=RetryPolicy(max_attempts=1)
    ) as api:
        for _ in range(CALLS):
            response = await api.get("items")
            assert response.status == 200

    assert api_server.refused == 0
    assert sum(api_server.windows.values()) == CALLS
    assert max(api_server.windows.values()) <= LIMIT
