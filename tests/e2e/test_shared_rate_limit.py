"""Two ``isthmus serve`` processes on one store: with Redis they share each API key's budget,
without it each process counts on its own.

The budget is per API key, and each run's key is new (a fresh store bootstraps a fresh admin
key), so counters other runs left in Redis cannot touch this one.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from e2e.conftest import Launcher, Server
from isthmus.vault import KEY_FILE_NAME, parse_master_keys

pytestmark = pytest.mark.e2e

LIMIT = 6
ROUTE = "/api/v1/integrations"
#: The per-IP budget is not under test; keep it out of the way of the per-key one.
ENV = {"ISTHMUS_RATE_LIMIT": f"{LIMIT}/minute", "ISTHMUS_RATE_LIMIT_IP": "10000/minute"}


def two_servers(
    launcher: Launcher, tmp_path: Path, db_url: str, redis_url: str | None
) -> tuple[Server, Server, str]:
    """Two API processes over one store; the second finds the store made and prints no key."""
    home = tmp_path / "data"
    first = launcher.serve(
        home=home, database_url=db_url, redis_url=redis_url, env=ENV, serve_args=["--no-workers"]
    )
    key = first.admin_key()
    second = launcher.serve(
        home=home, database_url=db_url, redis_url=redis_url, env=ENV, serve_args=["--no-workers"]
    )
    assert second.admin_keys() == []
    return first, second, key


def alternate(servers: tuple[Server, Server], key: str, count: int) -> list[httpx.Response]:
    clients = [s.client(key) for s in servers]
    try:
        return [clients[i % 2].get(ROUTE) for i in range(count)]
    finally:
        for c in clients:
            c.close()


def assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    body = response.json()
    assert (body["statusCode"], body["message"]) == (429, "Rate limit exceeded")
    assert body["retryAfter"] == int(response.headers["retry-after"]) >= 1
    assert response.headers["x-ratelimit-limit"] == str(LIMIT)
    assert response.headers["x-ratelimit-remaining"] == "0"


async def test_two_processes_share_one_budget_through_redis(
    launcher: Launcher, tmp_path: Path, db_url: str, redis_url: str
) -> None:
    first, second, key = two_servers(launcher, tmp_path, db_url, redis_url)

    responses = alternate((first, second), key, LIMIT + 2)

    allowed, refused = responses[:LIMIT], responses[LIMIT:]
    assert [r.status_code for r in allowed] == [200] * LIMIT
    # One count across both processes: 5, 4, ... 0, whichever process answered.
    assert [int(r.headers["x-ratelimit-remaining"]) for r in allowed] == list(
        range(LIMIT - 1, -1, -1)
    )
    assert {r.url.port for r in allowed} == {first.port, second.port}
    for response in refused:  # the 7th on the first process, the 8th on the second
        assert_refused(response)
    assert {r.url.port for r in refused} == {first.port, second.port}


async def test_without_redis_each_process_has_its_own_budget(
    launcher: Launcher, tmp_path: Path, db_url: str
) -> None:
    first, second, key = two_servers(launcher, tmp_path, db_url, None)

    responses = alternate((first, second), key, 2 * LIMIT + 2)

    allowed, refused = responses[: 2 * LIMIT], responses[2 * LIMIT :]
    assert [r.status_code for r in allowed] == [200] * (2 * LIMIT)
    remaining = [int(r.headers["x-ratelimit-remaining"]) for r in allowed]
    per_process = list(range(LIMIT - 1, -1, -1))
    assert remaining[0::2] == per_process and remaining[1::2] == per_process
    for response in refused:
        assert_refused(response)


async def test_processes_started_together_on_a_fresh_store(
    launcher: Launcher, tmp_path: Path, fresh_db_url: str
) -> None:
    """A deployment starts its API processes at once on a new store and data dir: one of them
    migrates the store, makes the admin key and the master key; the others wait for it, use
    the same, and serve too."""
    home = tmp_path / "data"
    servers = [
        launcher.serve(
            home=home, database_url=fresh_db_url, serve_args=["--no-workers"], wait=False
        )
        for _ in range(3)
    ]
    for server in servers:
        server.wait_healthy()
    printed = [key for server in servers for key in server.admin_keys()]
    assert len(printed) == 1, "\n".join(s.tail() for s in servers)
    assert len(parse_master_keys((home / KEY_FILE_NAME).read_text())) == 1
    secret = "sk_live_0123456789abcdef_together"
    body = {
        "name": "Shared",
        "provider": "api_endpoint",
        "config": {"apiEndpoint": "https://api.example.com/v1/contacts"},
        "credentials": {"apiKey": secret},
    }
    with servers[0].client(printed[0]) as api:
        created = api.post(ROUTE, json=body)
        assert created.status_code == 201, created.text
    # What one process sealed, every other opens: they hold the one master key.
    for server in servers:
        assert "Traceback" not in server.stderr(), server.tail()
        with server.client(printed[0]) as api:
            revealed = api.post(
                f"{ROUTE}/{created.json()['id']}/credentials/reveal", json={"field": "apiKey"}
            )
            assert revealed.status_code == 200, revealed.text
            assert revealed.json()["value"] == secret
