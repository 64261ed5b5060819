"""Opening a PostgreSQL connection, patiently when the server is only busy.

A server at its connection limit ("too many clients") or still starting up refuses a new
connection for a moment, not for good: another process's burst ends, a pool lets idle
connections go. Failing there would lose work that waits on no one (a request log entry, a
delivery's settle), so such a refusal is tried again after a short, growing pause, for a
bounded time, then the store is unavailable. Everything else (a wrong password, a server
that is down) fails at once, as the driver raised it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import URL, make_url

from isthmus.errors import StoreUnavailable

log = logging.getLogger("isthmus.store")

#: How long a connection refused for a busy server is tried again before the error stands.
CONNECT_PATIENCE_SECONDS = 10.0
FIRST_PAUSE_SECONDS = 0.05
LONGEST_PAUSE_SECONDS = 1.0

#: The refusals that pass: the server's or a database's or a role's connection limit, and a
#: server starting up or shutting down.
BUSY = (asyncpg.TooManyConnectionsError, asyncpg.CannotConnectNowError)


def dsn(url: str | URL) -> str:
    """The store's SQLAlchemy URL as the libpq-style DSN asyncpg takes (its query, such as
    ``sslmode``, read by asyncpg itself)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def connect(*args: Any, patience: float | None = None, **kwargs: Any) -> Any:
    """``asyncpg.connect(*args, **kwargs)``, tried again while the server is busy for up to
    ``patience`` seconds (``CONNECT_PATIENCE_SECONDS`` when not given)."""
    if patience is None:
        patience = CONNECT_PATIENCE_SECONDS
    deadline = time.monotonic() + patience
    pause = FIRST_PAUSE_SECONDS
    warned = False
    while True:
        try:
            return await asyncpg.connect(*args, **kwargs)
        except BUSY as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                raise StoreUnavailable(
                    f"the database refused connections for {patience:g} s: {exc}"
                ) from exc
            if not warned:
                log.warning("the database refused a connection (%s); trying again", exc)
                warned = True
            # Jittered, so that processes refused together do not come back together.
            await asyncio.sleep(min(left, pause * random.uniform(0.5, 1.0)))
            pause = min(pause * 2, LONGEST_PAUSE_SECONDS)
