"""Fixtures shared by every test directory."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest

from isthmus.api.app import create_app
from isthmus.config import Settings, load_settings
from isthmus.hub import Hub
from isthmus.services.access import IssuedKey
from isthmus.store import migrate
from isthmus.store.db import Store, make_engine
from pg_support import create_postgres_database, drop_postgres_database

T = TypeVar("T")


@pytest.fixture
def redis_url() -> str:
    """The test Redis, from ``ISTHMUS_TEST_REDIS_URL``.

    A laptop without Redis skips with a visible reason; CI (``CI=true``) must have it, so
    there a missing URL fails instead of silently skipping the Redis half of the suite.
    """
    url = os.environ.get("ISTHMUS_TEST_REDIS_URL")
    if not url:
        reason = "ISTHMUS_TEST_REDIS_URL is not set (e.g. redis://127.0.0.1:6379/0)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI must run the Redis tests")
        pytest.skip(reason)
    return url


# -- the store on both databases, and the app over it --------------------------------------


_BOTH = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(scope="session")
def _shared_postgres() -> Iterator[str]:
    """One migrated PostgreSQL database for the session; each test starts it empty again
    (creating a database per test costs half a second, emptying one a few milliseconds)."""

    async def create() -> tuple[str, str]:
        url, name = await create_postgres_database()
        store = Store(make_engine(load_settings(database_url=url).resolved_database_url))
        try:
            await migrate.upgrade(store)
        finally:
            await store.close()
        return url, name

    url, name = _run_apart(create())
    try:
        yield url
    finally:
        _run_apart(drop_postgres_database(name))


def _run_apart(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to its end on a loop of its own: a session fixture may be set up
    from inside a test's running loop, where ``asyncio.run`` is not allowed."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _empty_postgres(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
            "AND tablename <> 'alembic_version'"
        )
        if tables:
            names = ", ".join(f'"{t["tablename"]}"' for t in tables)
            await conn.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated, empty SQLite file, made once per test process: each test gets a copy
    (migrating a new file costs a fifth of a second, copying one a millisecond)."""
    path = tmp_path_factory.mktemp("template") / "isthmus.db"

    async def create() -> None:
        url = load_settings(database_url=f"sqlite:///{path}").resolved_database_url
        store = Store(make_engine(url))
        try:
            await migrate.upgrade(store)
        finally:
            await store.close()

    _run_apart(create())
    # Closed cleanly, the last connection folded the write-ahead log into the file.
    assert not path.with_name(path.name + "-wal").exists()
    return path


@pytest.fixture(params=_BOTH)
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The store's URL, migrated and empty: a new SQLite file, then PostgreSQL."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("_sqlite_template")
        shutil.copyfile(template, tmp_path / "isthmus.db")
        yield f"sqlite:///{tmp_path / 'isthmus.db'}"
        return
    url: str = request.getfixturevalue("_shared_postgres")
    await _empty_postgres(url)
    yield url


@pytest.fixture(params=_BOTH)
async def fresh_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A store never migrated: a new SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    url, name = await create_postgres_database()
    try:
        yield url
    finally:
        await drop_postgres_database(name)


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    # Eight job slots, so a hub's PostgreSQL pool is 18 connections, not 42: the suite runs
    # tests side by side, some with two hubs, all on one server's 100 connections.
    return load_settings(home=tmp_path / "home", database_url=db_url, worker_concurrency=8)


@pytest.fixture
async def hub(settings: Settings) -> AsyncIterator[Hub]:
    built = Hub.build(settings)
    await migrate.upgrade(built.store)
    try:
        yield built
    finally:
        await built.close()


@pytest.fixture
async def admin_key(hub: Hub) -> IssuedKey:
    """The admin key of tenant ``default``, as the first ``serve`` makes it."""
    issued = await hub.access.bootstrap()
    assert issued is not None
    return issued


@pytest.fixture
async def client(hub: Hub, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An unauthenticated client of the real app, in process."""
    transport = httpx.ASGITransport(app=create_app(settings, hub), client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


@pytest.fixture
async def api(client: httpx.AsyncClient, admin_key: IssuedKey) -> httpx.AsyncClient:
    """The same client, sending the admin key."""
    client.headers["Authorization"] = f"Bearer {admin_key.secret}"
    return client


@pytest.fixture
async def receiver() -> AsyncIterator[Any]:
    """A ``ScriptedReceiver`` (``integration/delivery_support.py``) serving on 127.0.0.1."""
    from delivery_support import ScriptedReceiver  # the webhook delivery tests' helpers

    server = ScriptedReceiver()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def local_hub(hub: Hub, settings: Settings) -> AsyncIterator[Hub]:
    """A second hub over the (already migrated) store of ``hub``, allowed to reach loopback
    (``hub`` itself keeps the default allowlist, which refuses it)."""
    built = Hub.build(settings.model_copy(update={"outbound_allowlist": ["127.0.0.0/8"]}))
    try:
        yield built
    finally:
        await built.close()


@pytest.fixture
async def local_api(
    local_hub: Hub, settings: Settings, admin_key: IssuedKey
) -> AsyncIterator[httpx.AsyncClient]:
    """The API of ``local_hub``, as the admin."""
    transport = httpx.ASGITransport(app=create_app(settings, local_hub), client=("127.0.0.1", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        client.headers["Authorization"] = f"Bearer {admin_key.secret}"
        yield client
