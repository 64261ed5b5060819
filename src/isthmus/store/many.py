"""One statement over many rows on SQLite, without SQLAlchemy's work per value.

SQLAlchemy runs an ``executemany`` row by row and value by value through its parameter
processing (a dict per row, then a type's processor per value, datetimes formatted anew
each time): half of a SQLite sync's event-loop time went there. Here the statement is
compiled once (per statement and set of keys), each value goes through its column type's
own processor (a UTC timestamp's cached: a batch's rows share their times), and the driver
gets plain tuples. What is stored is what SQLAlchemy stores.
PostgreSQL keeps SQLAlchemy's path (its bulk statements take JSON rows: ``bulk``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from operator import itemgetter
from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.dml import UpdateBase

from isthmus.store.types import UTCDateTime

Convert = Callable[[Any], Any]


async def execute_many(
    conn: AsyncConnection, statement: UpdateBase, rows: Sequence[Mapping[str, Any]]
) -> int:
    """Run ``statement`` (a module-level INSERT or UPDATE: plans are cached by it) once per
    row, as ``conn.execute(statement, rows)`` would; every row has the first row's keys.
    Returns the number of rows it changed as the driver counts them: SQLite does, asyncpg
    does not for many rows (-1)."""
    if not rows:
        return 0
    if conn.dialect.name != "sqlite":
        return (await conn.execute(statement, list(rows))).rowcount
    plan = _plan(statement, tuple(rows[0]), conn.dialect)
    params: list[tuple[Any, ...]] = []
    for row in rows:
        values = plan.values(row)
        for i, convert in plan.converted:
            values[i] = convert(values[i])
        params.append(tuple(values))
    return (await conn.exec_driver_sql(plan.sql, params)).rowcount


@dataclass(frozen=True)
class _Plan:
    sql: str
    #: A row's values in the statement's order, as a list (converted in place).
    values: Callable[[Mapping[str, Any]], list[Any]]
    #: The positions of the values that need converting, and how.
    converted: tuple[tuple[int, Convert], ...]


@lru_cache(maxsize=64)
def _plan(statement: UpdateBase, keys: tuple[str, ...], dialect: Dialect) -> _Plan:
    compiled = statement.compile(dialect=dialect, column_keys=list(keys))
    names = list(compiled.positiontup or [])
    converted: list[tuple[int, Convert]] = []
    for i, name in enumerate(names):
        type_ = compiled.binds[name].type
        processor = type_._cached_bind_processor(dialect)  # what SQLAlchemy itself runs
        if processor is not None and isinstance(type_, UTCDateTime):
            # A write's rows share their few times: each is formatted once.
            processor = lru_cache(maxsize=256)(processor)
        if processor is not None:
            converted.append((i, processor))
    pick = itemgetter(*names)
    if len(names) == 1:
        return _Plan(compiled.string, lambda row: [pick(row)], tuple(converted))
    return _Plan(compiled.string, lambda row: list(pick(row)), tuple(converted))
