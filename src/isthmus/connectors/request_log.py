"""The per-integration request log: every outbound call an integration makes, retries
included, and the metrics read from it.

:class:`RequestLog` is the :class:`~isthmus.connectors.types.CallObserver` a connector's API
client reports to. Writing is cheap per call: calls that end while a write is under way are
written together in the next one (a group commit), so a busy integration costs one
transaction per batch rather than one per call. A failing store is logged and the entry
dropped: the log describes calls and must never fail one.

:class:`RequestLogService` reads it for the API, scoped by tenant: another tenant's
integration is as missing as one that does not exist.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from isthmus.connectors.types import CallRecord, LogLevel
from isthmus.domain.ids import new_id
from isthmus.domain.pagination import DEFAULT_LIMIT, decode_cursor
from isthmus.domain.records import Page
from isthmus.errors import NotFound
from isthmus.http import redact_url
from isthmus.store import integration_requests as repo
from isthmus.store import integrations as integrations_repo
from isthmus.store.db import Store
from isthmus.store.integration_requests import RequestEntry, RequestMetrics

log = logging.getLogger("isthmus.connectors.request_log")

ID_PREFIX = "ireq"
#: Longest message kept per entry (characters).
MAX_MESSAGE = 2000
#: Longest URL kept per entry (characters).
MAX_URL = 4000


def _text(value: str, limit: int) -> str:
    # PostgreSQL text cannot hold NUL; an upstream's message may.
    return value.replace("\x00", "")[:limit]


class RequestLog:
    """Records the calls of one integration (implements ``CallObserver``)."""

    def __init__(self, store: Store, tenant_id: str, integration_id: str) -> None:
        self.store = store
        self.tenant_id = tenant_id
        self.integration_id = integration_id
        self._pending: list[RequestEntry] = []
        self._writing = asyncio.Lock()

    def entry(self, record: CallRecord) -> RequestEntry:
        return RequestEntry(
            id=new_id(ID_PREFIX),
            tenant_id=self.tenant_id,
            integration_id=self.integration_id,
            at=record.at,
            level=record.level,
            method=_text(record.method.upper(), 10),
            # The client redacts already; again here, so no caller can log a secret by mistake.
            url=_text(redact_url(record.url), MAX_URL),
            status_code=record.status,
            duration_ms=float(record.duration_ms),
            bytes=int(record.bytes),
            error_class=_text(record.error_class, 40) if record.error_class else None,
            message=_text(record.message, MAX_MESSAGE) if record.message else None,
        )

    async def __call__(self, record: CallRecord) -> None:
        self._pending.append(self.entry(record))
        async with self._writing:
            if not self._pending:
                return  # written with the batch of the call before
            batch, self._pending = self._pending, []
            try:
                async with self.store.transaction() as conn:
                    await repo.insert(conn, batch)
            except Exception:
                # Whatever the store's trouble (down, integration deleted meanwhile), the
                # call itself went as it went: record the loss, do not fail the caller.
                log.warning(
                    "could not write %d request log entries of integration %s",
                    len(batch),
                    self.integration_id,
                    exc_info=True,
                )


class RequestLogService:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def metrics(
        self, tenant_id: str, integration_id: str, *, since: datetime | None = None
    ) -> RequestMetrics:
        async with self.store.read() as conn:
            await _exists(conn, tenant_id, integration_id)
            return await repo.metrics(conn, tenant_id, integration_id, since=since)

    async def entries(
        self,
        tenant_id: str,
        integration_id: str,
        *,
        level: LogLevel | None = None,
        q: str | None = None,
        since: datetime | None = None,
        cursor: str | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> Page[RequestEntry]:
        after = decode_cursor(cursor)
        async with self.store.read() as conn:
            await _exists(conn, tenant_id, integration_id)
            return await repo.query(
                conn,
                tenant_id,
                integration_id,
                level=level,
                q=q,
                since=since,
                after=after,
                limit=limit,
            )


async def _exists(conn: AsyncConnection, tenant_id: str, integration_id: str) -> None:
    if await integrations_repo.get(conn, tenant_id, integration_id) is None:
        raise NotFound.of("integration", integration_id)
