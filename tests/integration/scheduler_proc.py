"""One scheduler process for ``test_polling.py`` (not a test module).

    python scheduler_proc.py POSTGRES_URL GO_FILE OUT_FILE BATCH

Prints ``ready``, waits (at most 30 s) for GO_FILE to exist, then ticks the scheduler
(``isthmus.scheduler.tick``, batches of BATCH) until two ticks in a row hand out nothing, and
writes what it handed out to OUT_FILE as JSON: ``[[integration_id, run_id or null], ...]``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from isthmus.scheduler import tick
from isthmus.store.db import Store, make_engine


async def main(url: str, go: Path, out: Path, batch: int) -> None:
    store = Store(make_engine(url.replace("postgresql://", "postgresql+asyncpg://", 1)))
    try:
        async with store.read() as conn:  # connect before the start, not after it
            await conn.exec_driver_sql("SELECT 1")
        print("ready", flush=True)
        deadline = time.monotonic() + 30
        while not go.exists():
            if time.monotonic() > deadline:
                raise SystemExit("no go")
            await asyncio.sleep(0.002)
        handed: list[tuple[str, str | None]] = []
        idle = 0
        for _ in range(500):
            taken = await tick(store, batch=batch)
            handed += [(d.integration_id, d.run_id) for d in taken]
            idle = 0 if taken else idle + 1
            if idle == 2:
                break
        out.write_text(json.dumps(handed))
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])))
