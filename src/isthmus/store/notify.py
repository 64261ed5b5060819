"""Worker wake-up: an enqueue tells waiting workers there is work, without polling delay.

Two halves:

- ``announce(conn, kinds)`` runs inside the enqueuing transaction. On PostgreSQL it issues
  ``pg_notify('isthmus_jobs', kind)`` once the transaction has committed (nothing on
  rollback; see ``announce`` for why after the commit, not in it). On SQLite it marks the
  connection; an engine ``commit`` hook then signals every in-process listener of that
  database file, and a rollback drops the mark.
- ``WakeUp`` is what a worker waits on: ``PostgresWakeUp`` LISTENs on a dedicated asyncpg
  connection; ``LocalWakeUp`` subscribes to the in-process signal. ``wakeup_for(store)`` picks.

A wake-up is a hint, never the only trigger: workers also poll on a timeout, so a lost
notification (a dropped LISTEN connection, an enqueue from another process on SQLite) only
costs that timeout. Usage, with no lost wake-up between the claim and the wait::

    wakeup.clear()
    jobs = await claim(...)
    if not jobs:
        await wakeup.wait(poll_interval)   # returns at once if work was announced meanwhile
"""

from __future__ import annotations

import asyncio
import logging
import os
import weakref
from collections.abc import Iterable
from typing import Any, Protocol

import asyncpg  # type: ignore[import-untyped]
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from isthmus.store import connect
from isthmus.store.db import Store, after_commit

log = logging.getLogger("isthmus.queue")

#: The PostgreSQL channel; the payload is the job kind.
CHANNEL = "isthmus_jobs"
_PENDING = "isthmus_jobs_announced"  # key in the SQLite connection's info: kinds to signal


class WakeUp(Protocol):
    """A worker's wake-up signal. ``clear`` then ``wait``: a signal that arrives in between
    is not lost (``wait`` returns at once)."""

    async def start(self) -> None:
        """Begin listening. Never raises: a listener that cannot start degrades to polling."""

    def clear(self) -> None:
        """Forget signals received so far."""

    async def wait(self, max_wait: float) -> bool:
        """Until a signal (True) or ``max_wait`` seconds have passed (False)."""

    async def close(self) -> None:
        """Stop listening."""


_NOTIFY = sa.select(sa.func.pg_notify(CHANNEL, sa.bindparam("kind", type_=sa.String())))
_NOTIFY_MANY = f"SELECT pg_notify('{CHANNEL}', kind) FROM unnest($1::text[]) AS kind"  # noqa: S608 - a constant


async def announce(conn: AsyncConnection, kinds: Iterable[str]) -> None:
    """Tell waiting workers, once this transaction commits, that jobs of ``kinds`` exist.

    On PostgreSQL inside a ``Store.transaction`` the NOTIFY goes after the commit, in a
    transaction of its own, sent by a task of the engine's (``_Announcer``) so the committer
    does not wait for it. A transaction that notifies holds the server's notification lock
    from its commit until its commit record is flushed, so every committing publisher would
    queue behind the others' disk flushes; one that only notifies flushes nothing. (A crash
    between the two only costs the workers' poll interval.) Elsewhere the NOTIFY is part of
    the transaction, delivered on its commit.
    """
    if conn.dialect.name == "postgresql":
        hooks = after_commit(conn)
        if hooks is None:
            for kind in sorted(set(kinds)):
                await conn.execute(_NOTIFY, {"kind": kind})
            return
        found = hooks.get(CHANNEL)
        if not isinstance(found, _Announcement):
            found = _Announcement(conn.engine)
            hooks[CHANNEL] = found
        found.kinds.update(kinds)
        return
    _install_commit_hook(conn.sync_engine)
    pending: set[str] = conn.sync_connection.info.setdefault(_PENDING, set())  # type: ignore[union-attr]
    pending.update(kinds)


class _Announcement:
    """The kinds a committed transaction announces: handed to its engine's announcer."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.kinds: set[str] = set()

    async def __call__(self, _driver: Any) -> None:
        announcer = _announcers.get(self.engine)
        if announcer is None:
            announcer = _announcers[self.engine] = _Announcer(Store(self.engine))
        announcer.post(self.kinds)


class _Announcer:
    """Sends an engine's announcements from a task of its own, on a pooled connection, one
    NOTIFY per kind; those posted while one is being sent go together in the next. A
    failure is logged: the workers' poll finds the jobs all the same."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.pending: set[str] = set()
        self.task: asyncio.Task[None] | None = None

    def post(self, kinds: set[str]) -> None:
        self.pending |= kinds
        loop = asyncio.get_running_loop()
        if self.task is None or self.task.done() or self.task.get_loop() is not loop:
            self.task = loop.create_task(self._send(), name="isthmus announcements")

    async def _send(self) -> None:
        while self.pending:
            kinds = sorted(self.pending)
            self.pending.clear()
            try:
                async with self.store.driver() as driver:
                    await driver.execute(_NOTIFY_MANY, kinds)
            except Exception as exc:
                log.warning("cannot wake the workers (their poll will find the jobs): %s", exc)


#: One announcer per engine (the pool it sends from).
_announcers: weakref.WeakKeyDictionary[AsyncEngine, _Announcer] = weakref.WeakKeyDictionary()


def wakeup_for(store: Store, kinds: Iterable[str] | None = None) -> WakeUp:
    """The wake-up for this store's database; ``kinds`` filters which announcements count
    (None: all)."""
    wanted = frozenset(kinds) if kinds is not None else None
    url = store.engine.url
    if url.get_backend_name() == "postgresql":
        return PostgresWakeUp(connect.dsn(url), wanted)
    return LocalWakeUp(_local_key(store.engine.sync_engine), wanted)


class _Flag:
    """An asyncio.Event that may be set from any thread or event loop."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self) -> None:
        self._loop = asyncio.get_running_loop()

    def set(self) -> None:
        loop = self._loop
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is None or loop is running:
            self._event.set()
        elif not loop.is_closed():
            loop.call_soon_threadsafe(self._event.set)

    def clear(self) -> None:
        self._event.clear()

    async def wait(self, max_wait: float) -> bool:
        try:
            await asyncio.wait_for(self._event.wait(), max_wait)
        except TimeoutError:
            return False
        return True


# -- SQLite: the in-process signal ---------------------------------------------------------

#: Listeners per database file: every engine of this process over that file shares them.
_listeners: dict[str, weakref.WeakSet[LocalWakeUp]] = {}


def _local_key(engine: Engine) -> str:
    database = engine.url.database or ""
    return database if database in ("", ":memory:") else os.path.realpath(database)


class LocalWakeUp:
    """Woken after a commit that enqueued jobs, in this process, on the same database."""

    def __init__(self, key: str, kinds: frozenset[str] | None = None) -> None:
        self._key = key
        self._kinds = kinds
        self._flag = _Flag()

    async def start(self) -> None:
        self._flag.bind()
        _listeners.setdefault(self._key, weakref.WeakSet()).add(self)

    def clear(self) -> None:
        self._flag.clear()

    async def wait(self, max_wait: float) -> bool:
        return await self._flag.wait(max_wait)

    async def close(self) -> None:
        _listeners.get(self._key, weakref.WeakSet()).discard(self)

    def signal(self, kinds: set[str]) -> None:
        if self._kinds is None or not self._kinds.isdisjoint(kinds):
            self._flag.set()


def _install_commit_hook(engine: Engine) -> None:
    if not event.contains(engine, "commit", _on_commit):
        event.listen(engine, "commit", _on_commit)
        event.listen(engine, "rollback", _on_rollback)


def _on_commit(conn: Connection) -> None:
    # The hook runs just before the COMMIT itself. That is early enough and never too early:
    # every write transaction is BEGIN IMMEDIATE, so a claim that a woken worker starts now
    # waits for this commit before it reads the queue.
    kinds: set[str] | None = conn.info.pop(_PENDING, None)
    if kinds:
        for listener in list(_listeners.get(_local_key(conn.engine), ())):
            listener.signal(kinds)


def _on_rollback(conn: Connection) -> None:
    conn.info.pop(_PENDING, None)


# -- PostgreSQL: LISTEN/NOTIFY ---------------------------------------------------------------


class PostgresWakeUp:
    """LISTEN on a dedicated connection (outside the engine's pool). A lost connection is
    re-opened on the next ``wait``; the reconnect counts as a signal, since notifications
    sent while it was down are gone."""

    def __init__(self, dsn: str, kinds: frozenset[str] | None = None) -> None:
        self._dsn = dsn
        self._kinds = kinds
        self._flag = _Flag()
        self._conn: Any = None  # asyncpg.Connection (asyncpg ships no types)

    async def start(self) -> None:
        self._flag.bind()
        await self._connect()

    async def _connect(self) -> None:
        conn: Any = None
        try:
            conn = await asyncpg.connect(self._dsn, timeout=5)
            await conn.add_listener(CHANNEL, self._on_notify)
            conn.add_termination_listener(self._on_lost)
        except Exception as exc:  # any failure here only means polling until the next try
            log.warning("cannot LISTEN for new jobs (polling meanwhile): %s", exc)
            if conn is not None:
                conn.terminate()
            return
        self._conn = conn
        self._flag.set()

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        if self._kinds is None or payload in self._kinds:
            self._flag.set()

    def _on_lost(self, _conn: Any) -> None:
        # Wake the worker: its next ``wait`` re-opens the connection.
        self._flag.set()

    def clear(self) -> None:
        self._flag.clear()

    async def wait(self, max_wait: float) -> bool:
        if self._conn is None or self._conn.is_closed():
            self._conn = None
            await self._connect()
        return await self._flag.wait(max_wait)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.remove_termination_listener(self._on_lost)
            try:
                await conn.close(timeout=5)
            except (OSError, asyncpg.PostgresError, TimeoutError):
                conn.terminate()
