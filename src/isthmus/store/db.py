"""The store: one async engine over SQLite or PostgreSQL, and its transactions.

SQLite gets WAL, foreign keys, a busy timeout, and ``BEGIN IMMEDIATE`` for write
transactions: a deferred transaction that reads and then writes can fail at once with
"database is locked" when another writer got there first, instead of waiting its turn.
The writers of one store also queue in process for their turn, first come first served:
SQLite's own wait for a busy database sleeps in growing steps (up to 100 ms), so under a
steady stream of writers most of the waiting would be sleep.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from isthmus import jsonread, jsonwrite
from isthmus.errors import StoreUnavailable
from isthmus.store import connect

log = logging.getLogger("isthmus.store")

_READ_ONLY = "isthmus_read_only"
_IDLE_SINCE = "isthmus_idle_since"
_AFTER_COMMIT = "isthmus_after_commit"

#: Something to do once a transaction has committed, given the pooled connection's driver
#: connection (asyncpg, outside any transaction); see ``after_commit``.
AfterCommit = Callable[[Any], Awaitable[None]]
#: A pooled PostgreSQL connection idle this long is pinged before it is handed out.
PING_AFTER_IDLE_SECONDS = 5.0
#: Connections of the hot path's own pool (``Store.driver``), per process and event loop: a
#: worker runs a claim, a batched record and a batched completion at once, now and then a
#: lease extension or a wake-up announcement. Idle ones close after a minute.
HOT_POOL_SIZE = 4
HOT_POOL_IDLE_SECONDS = 60.0
#: How the hot path's connections plan. Its statements are key lookups, claims down the queue
#: index and batched writes by key, prepared once per connection: a generic plan made once
#: serves them, where planning each execution cost as much as running it. With sequential
#: and bitmap scans off that plan uses the indexes even when it is made on empty tables, and
#: a claim's plain index scan marks the entries of dead queue rows, so later claims skip
#: them (a bitmap scan reads them all again each time). Their commits do not wait for the
#: WAL flush: what one of them loses in a server crash (a claim, a recorded attempt, a
#: completion) puts a job back as it was before, to run again, which at-least-once allows;
#: publishing and everything else commits on the engine's connections, which do wait.
_HOT_SETTINGS = {
    "plan_cache_mode": "force_generic_plan",
    "enable_seqscan": "off",
    "enable_bitmapscan": "off",
    "jit": "off",
    "synchronous_commit": "off",
}
#: How long closing the store waits for the hot path's connections to come back.
POOL_CLOSE_SECONDS = 5.0
#: A SQLite writer waits this long for its turn in process, then leaves the wait to SQLite
#: (a transaction opened inside another one's block would otherwise wait for ever).
SQLITE_TURN_SECONDS = 10.0


#: What a failed driver call that means "the connection is gone" raises.
_LOST = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)


async def _keep_session(_conn: Any) -> None:
    """The hot pool's reset: nothing (see ``Store._make_hot_pool``)."""


def make_engine(url: str, **kwargs: Any) -> AsyncEngine:
    kwargs.setdefault("json_deserializer", jsonread.loads)
    kwargs.setdefault("json_serializer", jsonwrite.dumps)
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30}, **kwargs)
        _tune_sqlite(engine)
        return engine
    # The most recently returned connection is handed out first: a few hot connections
    # serve a busy worker (their server processes, caches and prepared statements warm)
    # instead of every statement waking the next of dozens in turn.
    kwargs.setdefault("pool_use_lifo", True)
    # Every statement is planned for the table as it is now. The driver prepares statements
    # and the server would soon settle on one generic plan per statement, made once, often
    # while the tables were still empty: a sequential scan that stays after the queue holds
    # 100,000 rows (and a fresh or never-analysed table has no statistics to correct it).
    connect_args = dict(kwargs.pop("connect_args", {}))
    server_settings = dict(connect_args.get("server_settings", {}))
    server_settings.setdefault("plan_cache_mode", "force_custom_plan")
    server_settings.setdefault("jit", "off")
    connect_args["server_settings"] = server_settings
    dsn = connect.dsn(url)

    async def open_connection() -> Any:
        return await connect.connect(dsn, **connect_args)

    engine = create_async_engine(url, async_creator=open_connection, **kwargs)
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


def after_commit(conn: AsyncConnection) -> dict[str, AfterCommit] | None:
    """The actions (by name: one per name) to run once the ``Store.transaction`` that
    ``conn`` belongs to has committed, on the same connection, outside the transaction;
    None when ``conn`` is not in one. A rolled-back transaction runs none; an action that
    fails is logged, never raised (the transaction is committed by then). PostgreSQL only:
    SQLite's connection has no driver connection of this kind."""
    hooks: dict[str, AfterCommit] | None = conn.info.get(_AFTER_COMMIT)
    return hooks


async def _run_after_commit(conn: AsyncConnection, hooks: dict[str, AfterCommit]) -> None:
    driver = (await conn.get_raw_connection()).driver_connection
    for name, action in hooks.items():
        try:
            await action(driver)
        except Exception as exc:
            log.warning("after commit, %s failed: %s", name, exc)


class Store:
    """Owns the engine; hands out transactions. All SQL lives in ``isthmus.store``."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        # SQLite: the in-process queue of writers, one per event loop using this store.
        self._writers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )
        # PostgreSQL: the hot path's pool, one per event loop (asyncpg pools are loop-bound).
        self._hot_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task[Any]] = (
            weakref.WeakKeyDictionary()
        )

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction: committed when the block ends, rolled back if it raises.
        What the transaction registered with ``after_commit`` runs once it has committed."""
        hooks: dict[str, AfterCommit] = {}
        async with self._turn():
            try:
                async with self.engine.connect() as conn:
                    conn.info[_AFTER_COMMIT] = hooks
                    try:
                        async with conn.begin():
                            yield conn
                    finally:
                        conn.info.pop(_AFTER_COMMIT, None)
                    if hooks:
                        await _run_after_commit(conn, hooks)
            except OperationalError as exc:
                raise StoreUnavailable(f"the database cannot be reached: {exc.orig}") from exc

    @asynccontextmanager
    async def _turn(self) -> AsyncIterator[None]:
        """SQLite: this writer's turn among the store's writers in this process."""
        if self.dialect != "sqlite":
            yield
            return
        loop = asyncio.get_running_loop()
        lock = self._writers.get(loop)
        if lock is None:
            lock = self._writers[loop] = asyncio.Lock()
        try:
            async with asyncio.timeout(SQLITE_TURN_SECONDS):
                await lock.acquire()
        except TimeoutError:
            log.warning(
                "a write waited %g s for its turn in this process; SQLite's own wait decides now",
                SQLITE_TURN_SECONDS,
            )
            yield
            return
        try:
            yield
        finally:
            lock.release()

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
    async def autocommit(self) -> AsyncIterator[AsyncConnection]:
        """A connection in autocommit: each statement commits on its own, with no BEGIN and
        COMMIT round trips. Only for statements that are whole units of work by themselves."""
        try:
            async with self.engine.connect() as conn:
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                yield conn
        except OperationalError as exc:
            raise StoreUnavailable(f"the database cannot be reached: {exc.orig}") from exc

    @asynccontextmanager
    async def driver(self) -> AsyncIterator[Any]:
        """PostgreSQL only: an asyncpg connection of the hot path's own pool, each statement
        committing on its own (no transaction is open on it). For the queue's hot paths,
        where SQLAlchemy's per-statement CPU costs several times the round trip: the store's
        statements run there as SQL text with positional parameters. Its connections plan
        once per statement and never scan a table whole (``_HOT_SETTINGS``): only index
        lookups, claims and writes by key belong there.

        A connection that broke, or whose statement was interrupted (cancelled mid-flight,
        its protocol state unknown), is dropped from the pool rather than handed out again;
        one left inside a transaction is rolled back when it returns.
        """
        if self.dialect != "postgresql":
            raise RuntimeError("Store.driver() is for PostgreSQL")
        try:
            pool = await self._hot_pool()
            conn = await pool.acquire()
        except _LOST as exc:
            raise StoreUnavailable(f"the database cannot be reached: {exc}") from exc
        try:
            yield conn
        except Exception as exc:
            # Also a connection the server dropped before the driver noticed: its protocol
            # state is confused (InternalClientError), or it is closed by now.
            if isinstance(exc, _LOST) or conn.is_closed():
                raise StoreUnavailable(f"the database connection failed: {exc}") from exc
            raise
        finally:
            try:
                await pool.release(conn)
            except Exception as exc:  # the pool terminated the connection; nothing is lost
                log.warning("a database connection could not be reset, dropped: %s", exc)

    async def _hot_pool(self) -> Any:
        loop = asyncio.get_running_loop()
        made = self._hot_pools.get(loop)
        if made is None or (made.done() and (made.cancelled() or made.exception())):
            made = self._hot_pools[loop] = loop.create_task(self._make_hot_pool())
        # Shielded: a caller cancelled while the pool is made does not stop it for the rest.
        return await asyncio.shield(made)

    async def _make_hot_pool(self) -> Any:
        return await asyncpg.create_pool(
            connect.dsn(self.engine.url),
            connect=connect.connect,
            min_size=0,
            max_size=HOT_POOL_SIZE,
            max_inactive_connection_lifetime=HOT_POOL_IDLE_SECONDS,
            server_settings=_HOT_SETTINGS,
            # Nothing on these connections changes session state (no SET, LISTEN or
            # advisory lock): the default reset's round trip at every release is not needed.
            reset=_keep_session,
        )

    async def ping(self) -> bool:
        try:
            async with self.read() as conn:
                await conn.execute(text("SELECT 1"))
        except (StoreUnavailable, DBAPIError, OSError):
            return False
        return True

    async def close(self) -> None:
        pools, self._hot_pools = dict(self._hot_pools), weakref.WeakKeyDictionary()
        running = asyncio.get_running_loop()
        for loop, made in pools.items():
            if not made.done() or made.cancelled() or made.exception() is not None:
                made.cancel()
                continue
            pool = made.result()
            if loop is running:
                try:
                    await asyncio.wait_for(pool.close(), POOL_CLOSE_SECONDS)
                except TimeoutError:
                    pool.terminate()
            else:
                pool.terminate()
        await self.engine.dispose()
