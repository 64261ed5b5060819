"""One statement over many rows on SQLite, without SQLAlchemy's work per value.

SQLAlchemy runs an ``executemany`` row by row and value by value through its parameter
processing (a dict per row, then a type's processor per value, datetimes formatted anew
each time): half of a SQLite sync's event-loop time went there. Here the statement is
compiled once (per statement and set of keys), each value goes through its column type's
own processor (a UTC timestamp's cached: a batch's rows share their times), and the driver
gets plain tuples. What is stored is what SQLAlchemy stores.

An INSERT's rows then go many to a statement (``VALUES (...), (...), ...``), not through
the driver's ``executemany``: that steps once per row in the connection's thread, letting go
of the GIL for each step and waiting to take it back from the event loop's thread, which
keeps winning it back while it is busy (it lets go and retakes it at every system call).
Measured with an event loop kept busy (0.1 ms of work between its turns): 500 rows took
39.6 s by ``executemany`` and 1.4 s as one statement (0.02 s either way with an idle loop).
Each statement still waits for the GIL once or twice; only the rows' own waits are gone.
PostgreSQL keeps SQLAlchemy's path (its bulk statements take JSON rows: ``bulk``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from operator import itemgetter
from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.dml import Insert, UpdateBase

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
    if plan.values_group is None:
        params = [tuple(_values(plan, row)) for row in rows]
        return (await conn.exec_driver_sql(plan.sql, params)).rowcount
    # An INSERT's rows go in many to a statement: see the module docstring.
    per = plan.rows_per_statement
    changed = 0
    for start in range(0, len(rows), per):
        flat: list[Any] = []
        for row in rows[start : start + per]:
            flat += _values(plan, row)
        sql = _many_rows_sql(plan, min(per, len(rows) - start))
        changed += (await conn.exec_driver_sql(sql, tuple(flat))).rowcount
    return changed


def _values(plan: _Plan, row: Mapping[str, Any]) -> list[Any]:
    values = plan.values(row)
    for i, convert in plan.converted:
        values[i] = convert(values[i])
    return values


@dataclass(frozen=True)
class _Plan:
    sql: str
    #: A row's values in the statement's order, as a list (converted in place).
    values: Callable[[Mapping[str, Any]], list[Any]]
    #: The positions of the values that need converting, and how.
    converted: tuple[tuple[int, Convert], ...]
    #: An INSERT's ``(?, ?, ...)``, which ``_many_rows_sql`` repeats; None for others.
    values_group: str | None = None
    rows_per_statement: int = 1


# What one statement may bind: SQLite's default limit (999 before 3.32).
_MAX_VARIABLES = 32766 if sqlite3.sqlite_version_info >= (3, 32, 0) else 999
#: Rows per multi-row INSERT: a few hundred leave the per-statement waits a small share
#: (statements of up to 2,500 rows measured within the noise of these in a sync).
_MAX_ROWS_PER_STATEMENT = 500


@lru_cache(maxsize=256)
def _many_rows_sql(plan: _Plan, rows: int) -> str:
    if rows == 1 or plan.values_group is None:
        return plan.sql
    one = f" VALUES {plan.values_group}"
    return plan.sql.replace(one, " VALUES " + ", ".join([plan.values_group] * rows), 1)


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
    values: Callable[[Mapping[str, Any]], list[Any]] = (
        (lambda row: [pick(row)]) if len(names) == 1 else (lambda row: list(pick(row)))
    )
    group = "(" + ", ".join(["?"] * len(names)) + ")"
    if not isinstance(statement, Insert) or compiled.string.count(f" VALUES {group}") != 1:
        return _Plan(compiled.string, values, tuple(converted))
    per = max(1, min(_MAX_ROWS_PER_STATEMENT, _MAX_VARIABLES // max(1, len(names))))
    return _Plan(compiled.string, values, tuple(converted), group, per)
