"""The per-integration request log's SQL: append, read (filtered, paged newest first), sum up
into metrics, and delete what retention has passed.

Every read is scoped by tenant and integration. The 95th percentile is the nearest-rank one
(the smallest duration at least 95 % of the calls did not exceed), found with window
functions that SQLite and PostgreSQL both have.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from isthmus.connectors.types import LogLevel
from isthmus.domain.pagination import encode_cursor
from isthmus.domain.records import Page
from isthmus.store.tables import integration_requests as calls

#: The levels in rising order; a query for one returns it and those above it.
LEVELS: tuple[LogLevel, ...] = ("debug", "info", "warn", "error")


@dataclass(frozen=True)
class RequestEntry:
    """One outbound call of an integration, as the log keeps it (URL already redacted)."""

    id: str
    tenant_id: str
    integration_id: str
    at: datetime
    level: str
    method: str
    url: str
    status_code: int | None
    duration_ms: float
    bytes: int
    error_class: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class RequestMetrics:
    """What the log says about an integration's calls; durations in milliseconds. A call
    succeeded when it got a 2xx answer; every other call (other statuses, no answer)
    failed."""

    total: int = 0
    successes: int = 0
    failures: int = 0
    average_ms: float | None = None
    p95_ms: float | None = None
    last_at: datetime | None = None

    @property
    def success_rate(self) -> float | None:
        return self.successes / self.total if self.total else None

    @property
    def error_rate(self) -> float | None:
        return self.failures / self.total if self.total else None


async def insert(conn: AsyncConnection, entries: Sequence[RequestEntry]) -> None:
    if entries:
        await conn.execute(calls.insert(), [e.__dict__ for e in entries])


def levels_from(level: LogLevel) -> tuple[LogLevel, ...]:
    return LEVELS[LEVELS.index(level) :]


async def query(
    conn: AsyncConnection,
    tenant_id: str,
    integration_id: str,
    *,
    level: LogLevel | None = None,
    q: str | None = None,
    since: datetime | None = None,
    after: str | None = None,
    limit: int,
) -> Page[RequestEntry]:
    """Newest first; ``q`` is a case-insensitive substring of the URL or the message."""
    conditions: list[Any] = [
        calls.c.tenant_id == tenant_id,
        calls.c.integration_id == integration_id,
    ]
    if level:
        conditions.append(calls.c.level.in_(levels_from(level)))
    if q:
        needle = q.lower()
        conditions.append(
            sa.or_(
                sa.func.lower(calls.c.url).contains(needle, autoescape=True),
                sa.func.lower(calls.c.message).contains(needle, autoescape=True),
            )
        )
    if since:
        conditions.append(calls.c.at >= since)
    if after:
        conditions.append(calls.c.id < after)
    statement = sa.select(calls).where(*conditions).order_by(calls.c.id.desc()).limit(limit + 1)
    rows = [RequestEntry(**r._mapping) for r in await conn.execute(statement)]
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, encode_cursor(rows[-1].id) if more and rows else None)


def _success() -> sa.ColumnElement[bool]:
    return sa.and_(calls.c.status_code >= 200, calls.c.status_code < 300)


def summary_query(where: list[Any], group: list[Any]) -> sa.Select[Any]:
    return (
        sa.select(
            *group,
            sa.func.count().label("total"),
            sa.func.count().filter(_success()).label("successes"),
            sa.func.avg(calls.c.duration_ms).label("average_ms"),
            sa.func.max(calls.c.at).label("last_at"),
        )
        .where(*where)
        .group_by(*group)
    )


def p95_query(where: list[Any], group: list[Any]) -> sa.Select[Any]:
    """The nearest-rank 95th percentile duration per group: rank ceil(0.95 n), in integer
    arithmetic so both databases compute it alike."""
    partition = group or None
    ranked = (
        sa.select(
            *group,
            calls.c.duration_ms,
            sa.func.row_number()
            .over(partition_by=partition, order_by=calls.c.duration_ms)
            .label("rank"),
            sa.func.count().over(partition_by=partition).label("n"),
        )
        .where(*where)
        .subquery()
    )
    return sa.select(*(ranked.c[c.name] for c in group), ranked.c.duration_ms).where(
        ranked.c.rank == (95 * ranked.c.n + 99) // 100
    )


def metrics_of(row: Any, p95: float | None) -> RequestMetrics:
    total = int(row.total)
    return RequestMetrics(
        total=total,
        successes=int(row.successes),
        failures=total - int(row.successes),
        average_ms=float(row.average_ms) if row.average_ms is not None else None,
        p95_ms=p95,
        last_at=row.last_at,
    )


async def metrics(
    conn: AsyncConnection,
    tenant_id: str,
    integration_id: str,
    *,
    since: datetime | None = None,
) -> RequestMetrics:
    where: list[Any] = [calls.c.tenant_id == tenant_id, calls.c.integration_id == integration_id]
    if since:
        where.append(calls.c.at >= since)
    row = (await conn.execute(summary_query(where, []))).first()
    if row is None or not row.total:
        return RequestMetrics()
    p95 = (await conn.execute(p95_query(where, []))).scalar()
    return metrics_of(row, float(p95) if p95 is not None else None)


async def purge(conn: AsyncConnection, *, before: datetime, limit: int) -> int:
    """Delete up to ``limit`` entries older than ``before``; how many went."""
    doomed = sa.select(calls.c.id).where(calls.c.at < before).limit(limit).scalar_subquery()
    result = await conn.execute(sa.delete(calls).where(calls.c.id.in_(doomed)))
    return int(result.rowcount or 0)
