"""The store: one async engine over SQLite or PostgreSQL, and its transactions.

SQLite gets WAL, foreign keys, a busy timeout, and ``BEGIN IMMEDIATE`` for write
transactions: a deferred transaction that reads and then writes can fail at once with
"database is locked" when another writer got there first, instead of waiting its turn.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from isthmus.errors import StoreUnavailable

_READ_ONLY = "isthmus_read_only"


def make_engine(url: str, **kwargs: Any) -> AsyncEngine:
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30}, **kwargs)
        _tune_sqlite(engine)
        return engine
    return create_async_engine(url, pool_pre_ping=True, **kwargs)


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

    async def ping(self) -> bool:
        try:
            async with self.read() as conn:
                await conn.execute(text("SELECT 1"))
        except (StoreUnavailable, DBAPIError, OSError):
            return False
        return True

    async def close(self) -> None:
        await self.engine.dispose()
