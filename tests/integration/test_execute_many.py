"""Many rows in one statement (``isthmus.store.many``) are stored exactly as SQLAlchemy's own
``executemany`` stores them; on SQLite the count of rows changed comes back (asyncpg does
not count the rows of an executemany)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from isthmus.hub import Hub
from isthmus.store.many import execute_many
from isthmus.store.tables import jobs

INSERT = jobs.insert()
RETRY = (
    jobs.update()
    .where(jobs.c.id == sa.bindparam("b_id"))
    .values(attempts=sa.bindparam("b_attempts"), last_error=sa.bindparam("b_error"))
)


def job(job_id: str, n: int) -> dict[str, Any]:
    at = datetime(2026, 3, 29, 1, 59, 59, n, tzinfo=UTC)
    return {
        "id": job_id,
        "tenant_id": None if n % 3 == 0 else f"ten_{n}",
        "kind": "webhook.deliver",
        "payload": {"deliveryId": f"dlv_{n}", "nested": [n, None, "é 🙂"], "none": None},
        "group_key": None,
        "status": "queued",
        # an offset other than UTC, whole seconds, microseconds: stored as UTC text
        "run_at": at.astimezone(timezone(timedelta(hours=5, minutes=30))),
        "attempts": n,
        "lease_token": None,
        "last_error": 'quote " and\nnewline' if n % 2 else None,
        "created_at": at.replace(microsecond=0),
        "updated_at": at + timedelta(days=n),
    }


async def stored(hub: Hub, prefix: str) -> list[tuple[Any, ...]]:
    """The rows as the database holds them (no result processing), ids without prefix."""
    async with hub.store.read() as conn:
        rows = await conn.exec_driver_sql(
            "SELECT id, tenant_id, kind, CAST(payload AS TEXT), group_key, status, "
            "CAST(run_at AS TEXT), attempts, lease_token, last_error, "
            "CAST(created_at AS TEXT), CAST(updated_at AS TEXT) "
            f"FROM jobs WHERE id LIKE '{prefix}%' ORDER BY id"
        )
        return [(row[0][len(prefix) :], *row[1:]) for row in rows]


async def test_rows_are_stored_as_sqlalchemy_stores_them(hub: Hub) -> None:
    async with hub.store.transaction() as conn:
        count = await execute_many(conn, INSERT, [job(f"a-{n:02d}", n) for n in range(12)])
        await conn.execute(INSERT, [job(f"b-{n:02d}", n) for n in range(12)])

    assert await stored(hub, "a-") == await stored(hub, "b-")
    assert len(await stored(hub, "a-")) == 12
    assert count == (12 if hub.store.dialect == "sqlite" else -1)


async def test_an_update_per_row_counts_the_rows_it_changed(hub: Hub) -> None:
    async with hub.store.transaction() as conn:
        await execute_many(conn, INSERT, [job(f"a-{n:02d}", n) for n in range(3)])
        await conn.execute(INSERT, [job(f"b-{n:02d}", n) for n in range(3)])
    changes = [{"b_id": "a-01", "b_attempts": 7, "b_error": "boom"}]
    changes += [{"b_id": "a-02", "b_attempts": 8, "b_error": None}]
    changes += [{"b_id": "missing", "b_attempts": 9, "b_error": "none"}]
    async with hub.store.transaction() as conn:
        count = await execute_many(conn, RETRY, changes)
        await conn.execute(RETRY, [{**c, "b_id": "b" + c["b_id"][1:]} for c in changes])

    assert await stored(hub, "a-") == await stored(hub, "b-")
    assert [row[7] for row in await stored(hub, "a-")] == [0, 7, 8]
    assert count == (2 if hub.store.dialect == "sqlite" else -1)


async def test_no_rows_is_nothing_done(hub: Hub) -> None:
    async with hub.store.transaction() as conn:
        assert await execute_many(conn, INSERT, []) == 0
    assert await stored(hub, "") == []


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_naive_time_is_refused_as_the_store_refuses_it(hub: Hub) -> None:
    row = {**job("a-01", 1), "run_at": datetime(2026, 1, 1)}
    with pytest.raises(ValueError, match="naive datetime"):
        async with hub.store.transaction() as conn:
            await execute_many(conn, INSERT, [row])


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_rows_past_one_statement_go_in_a_few_statements(hub: Hub) -> None:
    # SQLite: an INSERT's rows go many to a statement (the driver's executemany would step,
    # and hand the GIL back and forth, once per row).
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.startswith("INSERT"):
            statements.append(statement)

    sa.event.listen(hub.store.engine.sync_engine, "before_cursor_execute", seen)
    try:
        async with hub.store.transaction() as conn:
            count = await execute_many(conn, INSERT, [job(f"a-{n:04d}", n) for n in range(1203)])
    finally:
        sa.event.remove(hub.store.engine.sync_engine, "before_cursor_execute", seen)
    async with hub.store.transaction() as conn:
        await conn.execute(INSERT, [job(f"b-{n:04d}", n) for n in range(1203)])

    assert count == 1203
    assert len(statements) == 3  # 500 + 500 + 203
    assert await stored(hub, "a-") == await stored(hub, "b-")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_rows_skipped_on_conflict_are_not_counted(hub: Hub) -> None:
    skipping = sqlite_insert(jobs).on_conflict_do_nothing(index_elements=["id"])
    async with hub.store.transaction() as conn:
        await execute_many(conn, INSERT, [job(f"a-{n:04d}", n) for n in range(0, 1200, 2)])
    before = await stored(hub, "a-")
    retried = [{**job(f"a-{n:04d}", n), "kind": "other"} for n in range(1200)]
    async with hub.store.transaction() as conn:
        count = await execute_many(conn, skipping, retried)

    assert count == 600
    after = await stored(hub, "a-")
    assert len(after) == 1200
    assert [row for row in after if row[2] == "webhook.deliver"] == before  # left as they were
