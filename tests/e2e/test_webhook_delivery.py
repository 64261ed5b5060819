"""Webhook delivery by real processes: ``isthmus serve`` with its in-process workers on
SQLite, and ``serve --no-workers`` beside a separate ``isthmus worker`` on PostgreSQL. A local
receiver checks every delivery with the official ``standardwebhooks`` library."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook

from e2e.conftest import Launcher, Server, clean_env, isthmus_executable
from pg_support import create_postgres_database, drop_postgres_database

pytestmark = pytest.mark.e2e

LOOPBACK = {"ISTHMUS_OUTBOUND_ALLOWLIST": "127.0.0.0/8"}


class Receiver:
    def __init__(self) -> None:
        self.secret = ""
        self.got: list[dict[str, Any]] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        verified: Any = Webhook(self.secret).verify(body, dict(request.headers))  # raises
        self.got.append({"body": verified, "headers": dict(request.headers)})
        return web.Response(status=204)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    await server.start()
    try:
        yield server
    finally:
        assert server._runner is not None
        await server._runner.cleanup()


async def subscribe_and_publish(server: Server, key: str, receiver: Receiver) -> str:
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=server.url, headers=headers, trust_env=False) as api:
        created = await api.post(
            "/api/v1/webhooks",
            json={"url": f"http://127.0.0.1:{receiver.port}/hook", "events": ["contact.*"]},
        )
        assert created.status_code == 201, created.text
        receiver.secret = created.json()["secret"]
        published = await api.post(
            "/api/v1/events", json={"type": "contact.created", "data": {"email": "a@b.c"}}
        )
        assert published.status_code == 202, published.text
        assert published.json()["deliveries"] == 1
        return str(published.json()["id"])


async def wait_for(receiver: Receiver, n: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while len(receiver.got) < n:
        assert time.monotonic() < deadline, "no delivery arrived"
        await asyncio.sleep(0.05)


async def test_serve_delivers_with_its_own_workers(
    launcher: Launcher, tmp_path: Path, receiver: Receiver
) -> None:
    server = launcher.serve(home=tmp_path / "data", env=LOOPBACK)

    await subscribe_and_publish(server, server.admin_key(), receiver)
    await wait_for(receiver, 1)

    [got] = receiver.got
    assert got["body"]["event"] == "contact.created"
    assert got["body"]["data"] == {"email": "a@b.c"}
    assert json.loads(json.dumps(got["body"]))["tenantId"]


@pytest.mark.postgres
async def test_serve_without_workers_and_a_separate_worker_on_postgresql(
    launcher: Launcher, tmp_path: Path, receiver: Receiver
) -> None:
    url, name = await create_postgres_database()
    try:
        home = tmp_path / "data"
        server = launcher.serve(
            home=home, database_url=url, env=LOOPBACK, serve_args=["--no-workers"]
        )
        await subscribe_and_publish(server, server.admin_key(), receiver)
        await asyncio.sleep(1.5)
        assert receiver.got == []  # nobody runs jobs yet

        env = clean_env(ISTHMUS_HOME=str(home), ISTHMUS_DATABASE_URL=url, **LOOPBACK)
        worker = launcher.spawn(
            [isthmus_executable(), "worker", "--concurrency", "4"], env=env, name="worker"
        )
        await wait_for(receiver, 1)
        assert worker.running(), worker.tail()
        assert receiver.got[0]["body"]["event"] == "contact.created"
        assert worker.stop() in (0, -15), worker.tail()
    finally:
        launcher.stop_all()
        await drop_postgres_database(name)
