"""The store: one async engine over SQLite or PostgreSQL, and its transactions.

SQLite gets WAL, foreign keys, a busy timeout, and ``BEGIN IMMEDIATE`` for write
transactions: a deferred transaction that reads and then writes can fail at once with
"database is locked" when another writer got there first, instead of waiting its turn.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from isthmus.errors import StoreUnavailable

_READ_ONLY = "isthmus_read_only"
_IDLE_SINCE = "isthmus_idle_since"
#: A pooled PostgreSQL connection idle this long is pinged before it is handed out.
PING_AFTER_IDLE_SECONDS = 5.0


def make_engine(url: str, **kwargs: Any) -> AsyncEngine:
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30}, **kwargs)
        _tune_sqlite(engine)
        return engine
    engine = create_async_engine(url, **kwargs)
    _ping_when_idle(engine)
    return engine


def _ping_when_idle(engine: AsyncEngine) -> None:
    """Pre-ping, but only connections that sat idle in the pool for a while.

    ``pool_pre_ping`` costs a round trip at every checkout, several per delivery when busy.
    A connection back in use within seconds is not pinged; one that was idle (a server
    restart, an idle timeout may have cut it) is, and is replaced when the ping fails. A
    connection cut while busy fails its statement once; SQLAlchemy then discards every pooled
    connection older than the failure, and the callers' retries (the queue's) do the rest.
    """

    @event.listens_for(engine.sync_engine, "checkin")
    def _checkin(_dbapi_conn: Any, record: Any) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get(_IDLE_SINCE)
        if since is None or time.monotonic() - since < PING_AFTER_IDLE_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:
            raise DisconnectionError(f"pooled connection lost while idle: {exc}") from exc


def _tune_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves, below
        cursor = dbapi_conn.cursor()
        for pragma in ("journal_mode=WAL", "foreign_keys=ON", "busy_timeout=30000"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Any) -> None:
        read_only = conn.get_execution_options().get(_READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


class Store:
    """Owns the engine; hands out transactions. All SQL lives in ``isthmus.store``."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction: committed when the block ends, rolled back if it raises."""
        try:
            async with self.engine.begin() as conn:
                yield conn
        except OperationalError as exc:
            raise StoreUnavailable(f"the database cannot be reached: {exc.orig}") from exc

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read-only transaction (SQLite takes no write lock for it)."""
        try:
            async with self.engine.connect() as conn:
                conn = await conn.execution_options(**{_READ_ONLY: True})
                async with conn.begin():
                    yield conn
        except OperationalError as exc:
            raise StoreUnavailable(f"the database cannot be reached: {exc.orig}") from exc

    @asynccontextmanager
    async def read_statements(self) -> AsyncIterator[AsyncConnection]:
        """For reads whose statements each stand alone: on PostgreSQL a connection in
        autocommit (no BEGIN and COMMIT round trips around them); on SQLite ``read``."""
        if self.dialect != "postgresql":
            async with self.read() as conn:
                yield conn
            return
        async with self.autocommit() as conn:
            yield conn

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[AsyncConnection]:
        """A connection in autocommit: each statement commits on its own, with no BEGIN and
        COMMIT round trips. Only for statements that are whole units of work by themselves."""
        try:
            async with self.engine.connect() as conn:
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                yield conn
        except OperationalError as exc:
            raise StoreUnavailable(f"the database cannot be reached: {exc.orig}") from exc

    async def ping(self) -> bool:
        try:
            async with self.read() as conn:
                await conn.execute(text("SELECT 1"))
        except (StoreUnavailable, DBAPIError, OSError):
            return False
        return True

    async def close(self) -> None:
        await self.engine.dispose()
