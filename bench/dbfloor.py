"""The database's own share of a first sync: what PostgreSQL spends writing the rows a first
sync of N contacts leaves, with nothing else running.

After isthmus's PostgreSQL run, its scratch database holds what the first sync wrote: a
contact per record, a ``contact.created`` event each, the delivery of each event to the
bench's subscription and that delivery's job. Those rows are copied aside (temporary
tables), the four tables emptied, and the copies written back with one
``INSERT ... SELECT`` each in one transaction: the same rows, the same indexes, no client
work, no parameters to parse, no lookups, one commit. The CPU the server process spends on
those statements (from ``/proc`` when the server runs on this machine, else their wall
time) per contact is the floor: no client, however fast, makes PostgreSQL write a contact
with its event, delivery and job for less.

With the bare loop's own CPU per record (fetching and parsing alone) and the contacts API's
CPU serving it, it bounds what any sync of this shape can reach on this machine:
``cores / (floor + bare CPU + API CPU)`` records per second, every core busy, the sync's
own Python work (mapping, hashing, serialising) free.
"""

from __future__ import annotations

import os
import time
from typing import Any

from benchsupport import cpu_seconds

#: The first sync's rows and how to find them; jobs by the delivery each one carries.
_COPIES = (
    ("contacts", "SELECT * FROM contacts"),
    ("events", "SELECT * FROM events WHERE type = 'contact.created'"),
    ("deliveries", "SELECT * FROM deliveries WHERE event_type = 'contact.created'"),
    (
        "jobs",
        "SELECT * FROM jobs WHERE payload->>'deliveryId' IN "
        "(SELECT id FROM deliveries WHERE event_type = 'contact.created')",
    ),
)


async def floor_main(database_url: str) -> dict[str, Any]:
    import asyncpg

    from isthmus.store.connect import dsn

    conn = await asyncpg.connect(dsn(database_url))
    try:
        [contacts] = await conn.fetchrow("SELECT count(*) FROM contacts")
        for table, query in _COPIES:
            await conn.execute(f"CREATE TEMP TABLE copy_{table} AS {query}")
        await conn.execute("TRUNCATE contacts, events, deliveries, jobs")
        await conn.execute("CHECKPOINT")  # no checkpoint of the load before falls in the timing
        pid = await conn.fetchval("SELECT pg_backend_pid()")
        measured = "cpu" if cpu_seconds(pid) is not None else "wall"
        tables: dict[str, float] = {}
        writing = conn.transaction()
        await writing.start()
        for table, _query in _COPIES:
            cpu, wall = cpu_seconds(pid), time.perf_counter()
            await conn.execute(f"INSERT INTO {table} SELECT * FROM copy_{table}")
            tables[table] = _spent(pid, cpu, wall)
        cpu, wall = cpu_seconds(pid), time.perf_counter()
        await writing.commit()
        tables["commit"] = _spent(pid, cpu, wall)
    finally:
        await conn.close()
    seconds = sum(tables.values())
    return {
        "contacts": int(contacts),
        "seconds": seconds,
        "measured": measured,
        "tables": tables,
    }


def _spent(pid: int, cpu: float | None, wall: float) -> float:
    now = cpu_seconds(pid)
    if cpu is not None and now is not None:
        return now - cpu
    return time.perf_counter() - wall


def ceiling(floor: dict[str, Any], fetching_cpu_per_row: float) -> float:
    """Records per second no sync of this shape passes here (see the module docstring)."""
    per_contact = floor["seconds"] / floor["contacts"]
    return (os.cpu_count() or 1) / (per_contact + fetching_cpu_per_row)
