"""Rate limits on the real app over the real store: 429s, their headers, per-route budgets."""

from __future__ import annotations

import httpx
import pytest
from api_support import (
    INTEGRATIONS,
    app_client,
    assert_problem,
    bearer,
    integration_body,
    key_for,
    walk,
)

from isthmus.config import Settings
from isthmus.hub import Hub
from isthmus.services.access import IssuedKey


def limit_headers(response: httpx.Response) -> tuple[int, int, int]:
    h = response.headers
    return int(h["x-ratelimit-limit"]), int(h["x-ratelimit-remaining"]), int(h["x-ratelimit-reset"])


async def test_fourth_request_over_3_per_minute_is_429(
    settings: Settings, hub: Hub, admin_key: IssuedKey
) -> None:
    async with app_client(settings, hub, rate_limit="3/minute") as c:
        c.headers.update(bearer(admin_key.secret))
        ok = await c.get(INTEGRATIONS)
        missing = await c.get(f"{INTEGRATIONS}/int_01jzzzzzzzzzzzzzzzzzzzzzzz")
        ok_again = await c.get(f"{INTEGRATIONS}/providers")
        refused = await c.get(INTEGRATIONS)

    assert [ok.status_code, missing.status_code, ok_again.status_code] == [200, 404, 200]
    assert [limit_headers(r)[:2] for r in (ok, missing, ok_again)] == [(3, 2), (3, 1), (3, 0)]
    for response in (ok, missing, ok_again):
        assert 0 < limit_headers(response)[2] <= 60

    assert refused.status_code == 429
    retry_after = int(refused.headers["retry-after"])
    assert 1 <= retry_after <= 60
    assert limit_headers(refused)[:2] == (3, 0)
    doc = assert_problem(refused, 429)
    assert {k: doc[k] for k in ("statusCode", "message", "retryAfter")} == {
        "statusCode": 429,
        "message": "Rate limit exceeded",
        "retryAfter": retry_after,
    }
    assert doc["title"] == "Rate limit exceeded"


async def test_refusals_carry_the_headers_too(
    settings: Settings, hub: Hub, admin_key: IssuedKey
) -> None:
    async with app_client(settings, hub, rate_limit="3/minute", rate_limit_ip="5/minute") as c:
        unknown = await c.get(INTEGRATIONS, headers=bearer("isk_" + "x" * 43))
        anonymous = await c.get(INTEGRATIONS)
        no_route = await c.get("/api/v1/nowhere", headers=bearer(admin_key.secret))
        bad_body = await c.post(INTEGRATIONS, json={}, headers=bearer(admin_key.secret))

    assert unknown.status_code == 401
    assert limit_headers(unknown)[:2] == (3, 2)  # that token's own bucket
    assert anonymous.status_code == 401
    assert limit_headers(anonymous)[:2] == (5, 3)  # no token: the client IP's bucket
    assert no_route.status_code == 404
    assert limit_headers(no_route)[:2] == (3, 2)
    assert bad_body.status_code == 422
    assert limit_headers(bad_body)[:2] == (3, 1)


async def test_default_limit_is_100_per_minute_per_key(api: httpx.AsyncClient) -> None:
    response = await api.get(INTEGRATIONS)

    assert limit_headers(response)[:2] == (100, 99)


async def test_each_key_has_its_own_budget(
    settings: Settings, hub: Hub, admin_key: IssuedKey
) -> None:
    other = await key_for(hub, admin_key.key.tenant_id, "read")
    async with app_client(settings, hub, rate_limit="2/minute") as c:
        spent = [(await c.get(INTEGRATIONS, headers=bearer(admin_key.secret))) for _ in range(3)]
        fresh = await c.get(INTEGRATIONS, headers=bearer(other))

    assert [r.status_code for r in spent] == [200, 200, 429]
    assert fresh.status_code == 200
    assert limit_headers(fresh)[:2] == (2, 1)


async def test_ip_limit_stops_anonymous_and_rotating_clients(settings: Settings, hub: Hub) -> None:
    async with app_client(settings, hub, rate_limit_ip="3/minute") as c:
        statuses = [
            (await c.get(INTEGRATIONS, headers=bearer(f"isk_guess{n}"))).status_code
            for n in range(3)
        ]
        refused = await c.get(INTEGRATIONS)

    assert statuses == [401, 401, 401]
    doc = assert_problem(refused, 429)
    assert "client IP" in doc["detail"]


async def test_a_route_limit_applies_to_that_route_only(
    settings: Settings, hub: Hub, admin_key: IssuedKey
) -> None:
    routes = {f"POST {INTEGRATIONS}": "2/minute"}
    async with app_client(settings, hub, rate_limit_routes=routes) as c:
        c.headers.update(bearer(admin_key.secret))
        made = [await c.post(INTEGRATIONS, json=integration_body(name=f"n{n}")) for n in range(3)]
        listed = await c.get(INTEGRATIONS)
        all_rows = await walk(c, INTEGRATIONS)

    assert [r.status_code for r in made] == [201, 201, 429]
    assert limit_headers(made[0])[:2] == (2, 1)
    doc = assert_problem(made[2], 429)
    assert f"POST {INTEGRATIONS}" in doc["detail"]
    assert doc["retryAfter"] == int(made[2].headers["retry-after"])
    # The refused create wrote nothing; other routes keep the default budget.
    assert [i["name"] for i in all_rows] == ["n0", "n1"]
    assert listed.status_code == 200
    assert limit_headers(listed)[0] == 100


async def test_a_route_limit_with_a_path_parameter_covers_every_id(
    settings: Settings, hub: Hub, admin_key: IssuedKey
) -> None:
    routes = {f"POST {INTEGRATIONS}/{{integration_id}}/disable": "1/minute"}
    async with app_client(settings, hub, rate_limit_routes=routes) as c:
        c.headers.update(bearer(admin_key.secret))
        first = (await c.post(INTEGRATIONS, json=integration_body(name="a"))).json()
        second = (await c.post(INTEGRATIONS, json=integration_body(name="b"))).json()
        ok = await c.post(f"{INTEGRATIONS}/{first['id']}/disable")
        refused = await c.post(f"{INTEGRATIONS}/{second['id']}/disable")
        state = await c.get(f"{INTEGRATIONS}/{second['id']}")

    assert ok.status_code == 200
    assert_problem(refused, 429)
    assert state.json()["status"] == "configuring"  # the refused disable did nothing


@pytest.mark.redis
async def test_two_apps_on_one_redis_share_a_budget(
    settings: Settings, hub: Hub, admin_key: IssuedKey, redis_url: str
) -> None:
    shared = settings.model_copy(update={"redis_url": redis_url, "rate_limit": "3/minute"})
    first, second = Hub.build(shared), Hub.build(shared)
    try:
        async with (
            app_client(shared, first) as one,
            app_client(shared, second) as two,
        ):
            headers = bearer(admin_key.secret)
            statuses = [
                (await one.get(INTEGRATIONS, headers=headers)).status_code,
                (await two.get(INTEGRATIONS, headers=headers)).status_code,
                (await one.get(INTEGRATIONS, headers=headers)).status_code,
                (await two.get(INTEGRATIONS, headers=headers)).status_code,
            ]
    finally:
        await first.close()
        await second.close()

    assert statuses == [200, 200, 200, 429]
