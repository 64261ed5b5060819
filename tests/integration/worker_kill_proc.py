"""One worker process for ``test_worker_kill.py`` (not a test module).

    python worker_kill_proc.py POSTGRES_URL NAME STARTED_FILE [WORK_SECONDS]

Runs ``isthmus.worker.Worker`` on kind ``test.record`` with a short lease. The handler
appends the job id to STARTED_FILE (line by line, so a SIGKILL leaves every line written
before it), sleeps WORK_SECONDS (default 0.02) so jobs overlap, then inserts ``(job_id, NAME,
attempt)`` into the test's ``processed`` table in the transaction that completes the job.
SIGTERM stops it gracefully; it prints ``ready`` once it is about to start working.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import sqlalchemy as sa

from isthmus.store.db import Store, make_engine
from isthmus.worker import Job, Worker

KIND = "test.record"
LEASE_SECONDS = 2.0
CONCURRENCY = 8

_RECORD = sa.text("INSERT INTO processed (job_id, worker, attempt) VALUES (:job, :worker, :n)")


async def main(url: str, name: str, started_file: Path, work_seconds: float) -> None:
    url = url.replace("postgresql://", "postgresql+asyncpg://", 1)
    # A connection for every handler, the claim and the heartbeat: no pool churn.
    store = Store(make_engine(url, pool_size=CONCURRENCY + 4))
    started = started_file.open("a", buffering=1)

    async def record(job: Job) -> None:
        started.write(f"{job.id}\n")
        await asyncio.sleep(work_seconds)
        async with job.store.transaction() as conn:
            await conn.execute(_RECORD, {"job": job.id, "worker": name, "n": job.attempts})
            await job.complete_in(conn)

    worker = Worker(store, concurrency=CONCURRENCY, lease_seconds=LEASE_SECONDS, poll_interval=0.5)
    worker.register(KIND, record)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    try:
        await worker.run(stop)
    finally:
        started.close()
        await store.close()


if __name__ == "__main__":
    work = float(sys.argv[4]) if len(sys.argv) > 4 else 0.02
    asyncio.run(main(sys.argv[1], sys.argv[2], Path(sys.argv[3]), work))
