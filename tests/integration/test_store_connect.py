"""A PostgreSQL server at its connection limit is waited for, not failed on (real PostgreSQL:
a role allowed one connection, with that connection taken by someone else)."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy import make_url

from isthmus.errors import StoreUnavailable
from isthmus.store import connect
from isthmus.store.db import Store, make_engine
from pg_support import create_postgres_database, drop_postgres_database, postgres_admin_url

pytestmark = pytest.mark.postgres


@pytest.fixture
async def limited_url() -> AsyncIterator[str]:
    """The URL of a new database, as a new role that may hold one connection at a time."""
    url, name = await create_postgres_database()
    role = f"isthmus_one_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(postgres_admin_url())
    try:
        await admin.execute(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 1')
        yield make_url(url).set(username=role).render_as_string(hide_password=False)
    finally:
        await drop_postgres_database(name)
        await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        await admin.close()


@pytest.fixture
async def store(limited_url: str) -> AsyncIterator[Store]:
    built = Store(make_engine(limited_url.replace("postgresql://", "postgresql+asyncpg://", 1)))
    try:
        yield built
    finally:
        await built.close()


async def _hold_then_free(url: str, seconds: float, until: asyncio.Event | None = None) -> None:
    taken = await asyncpg.connect(url)
    try:
        await asyncio.sleep(seconds)
        if until is not None:
            await until.wait()
    finally:
        await taken.close()


async def _select_one(store: Store) -> int:
    async with store.read() as conn:
        return int((await conn.execute(sa.text("SELECT 1"))).scalar_one())


async def _select_one_hot(store: Store) -> int:
    async with store.driver() as conn:
        return int(await conn.fetchval("SELECT 1"))


@pytest.mark.parametrize("select", [_select_one, _select_one_hot], ids=["engine", "hot-pool"])
async def test_a_connection_refused_for_the_limit_waits_for_a_free_one(
    limited_url: str, store: Store, select: object
) -> None:
    holder = asyncio.create_task(_hold_then_free(limited_url, 0.5))
    await asyncio.sleep(0.1)  # the role's one connection is taken
    with pytest.raises(asyncpg.TooManyConnectionsError):
        await asyncpg.connect(limited_url)  # what the store would have failed with

    started = time.monotonic()
    assert await select(store) == 1  # type: ignore[operator]
    assert time.monotonic() - started >= 0.3  # it waited for the holder to let go
    await holder


async def test_a_limit_that_lasts_past_the_patience_is_store_unavailable(
    limited_url: str, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connect, "CONNECT_PATIENCE_SECONDS", 0.5)
    release = asyncio.Event()  # the holder lets go only once the store has given up
    holder = asyncio.create_task(_hold_then_free(limited_url, 0.1, until=release))
    await asyncio.sleep(0.1)

    with pytest.raises(StoreUnavailable, match=r"refused connections for 0\.5 s"):
        await _select_one(store)
    assert await store.ping() is False
    release.set()
    await holder
    assert await _select_one(store) == 1


async def test_other_refusals_fail_at_once(limited_url: str) -> None:
    unknown = make_url(limited_url).set(username="isthmus_nobody").render_as_string(False)
    store = Store(make_engine(unknown.replace("postgresql://", "postgresql+asyncpg://", 1)))
    try:
        started = time.monotonic()
        with pytest.raises(Exception, match="isthmus_nobody"):
            await _select_one(store)
        assert time.monotonic() - started < connect.CONNECT_PATIENCE_SECONDS / 2
    finally:
        await store.close()
