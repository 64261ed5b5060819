"""A worker killed with SIGKILL mid-run loses nothing (PostgreSQL, two worker processes).

Two real worker processes (``worker_kill_proc.py``) share 2,000 jobs; one is killed while it
holds leased jobs. Every job must end ``done``, and the jobs the dead worker had started but
not completed must go out from the other one once their 2 s lease runs out. The handler
records each job in ``processed`` in the transaction that completes it, so each job's effect
is committed exactly once, although the job itself may run twice (at least once: only when
its first worker died holding it).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from isthmus.domain.jobs import JobStatus, NewJob
from isthmus.store import migrate, queue
from isthmus.store.db import Store, make_engine

pytestmark = pytest.mark.postgres

PROC = Path(__file__).with_name("worker_kill_proc.py")
KIND = "test.record"
JOBS = 2_000
LEASE_SECONDS = 2.0  # as in worker_kill_proc.py
DEADLINE = 120.0  # for the whole run, which takes seconds


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    started_file: Path
    err: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        if self.alive():
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(10)

    def started(self) -> list[str]:
        return self.started_file.read_text().split() if self.started_file.exists() else []

    def ready(self) -> bool:
        return "ready" in self.started_file.with_suffix(".out").read_text()

    def tail(self) -> str:
        return f"--- worker {self.name}, stderr ---\n{self.err.read_text()[-3000:]}"


@pytest.fixture
def pg_url(fresh_db_url: str) -> str:
    """A new PostgreSQL database of its own, dropped after the test."""
    return fresh_db_url


@pytest.fixture
async def store(pg_url: str) -> AsyncIterator[Store]:
    built = Store(make_engine(pg_url.replace("postgresql://", "postgresql+asyncpg://", 1)))
    await migrate.upgrade(built)
    async with built.transaction() as conn:
        await conn.execute(
            sa.text(
                "CREATE TABLE processed (job_id text NOT NULL, worker text NOT NULL,"
                " attempt int NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())"
            )
        )
    try:
        yield built
    finally:
        await built.close()


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    """The started workers; every one is killed at teardown, whatever the test did."""
    started: list[Proc] = []
    try:
        yield started
    finally:
        for proc in started:
            proc.kill()


def spawn(procs: list[Proc], pg_url: str, tmp_path: Path, name: str, work: float) -> Proc:
    out, err = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
    started = tmp_path / f"{name}.started"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        popen = subprocess.Popen(
            [sys.executable, str(PROC), pg_url, name, str(started), str(work)],
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,  # its own process group: killpg reaches it only
        )
    proc = Proc(name, popen, started, err)
    procs.append(proc)
    return proc


async def until(
    what: str, check: Callable[[], Awaitable[bool]], procs: list[Proc], deadline: float
) -> None:
    """Poll ``check`` until true; fail at ``deadline`` or when a worker not killed dies."""
    while not await check():
        for proc in procs:
            if proc.name != "a" and not proc.alive():
                pytest.fail(f"worker {proc.name} died waiting for {what}\n{proc.tail()}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}\n" + "\n".join(p.tail() for p in procs))
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("fresh_db_url", ["postgresql"], indirect=True)
async def test_sigkill_mid_run_loses_no_job(
    store: Store, pg_url: str, procs: list[Proc], tmp_path: Path
) -> None:
    began = time.monotonic()
    deadline = began + DEADLINE

    async def scalar(sql: str) -> int:
        async with store.read() as conn:
            return int((await conn.execute(sa.text(sql))).scalar_one())

    async def processed_by(worker: str) -> int:
        return await scalar(f"SELECT count(*) FROM processed WHERE worker = '{worker}'")

    # Worker a's jobs take longer, so that it always has jobs started and not completed
    # when it is killed; b's are quick.
    a = spawn(procs, pg_url, tmp_path, "a", work=0.2)
    b = spawn(procs, pg_url, tmp_path, "b", work=0.02)

    async def both_ready() -> bool:
        return a.ready() and b.ready()

    await until("both workers to start", both_ready, procs, deadline)

    async with store.transaction() as conn:
        ids = await queue.enqueue_many(conn, [NewJob(KIND, {"n": i}) for i in range(JOBS)])
    enqueued = time.monotonic()

    seen_started = [0]

    async def well_under_way() -> bool:
        # ...and a started a job since the last look (at most one poll, 50 ms, ago): that
        # job sleeps 0.2 s before it can complete, so a surely holds it when killed right
        # after. (A count of held jobs alone could be stale by the time of the kill: a
        # worker between claims holds nothing for a moment.)
        started = len(a.started())
        fresh = started > seen_started[0]
        seen_started[0] = started
        done_by_a = await processed_by("a")
        return fresh and done_by_a >= 100 and await processed_by("b") >= 500

    await until("both workers to be well under way", well_under_way, procs, deadline)
    a.kill()  # SIGKILL, while it holds up to 8 leased jobs
    killed = time.monotonic()
    async with store.read() as conn:
        killed_at = (await conn.execute(sa.text("SELECT clock_timestamp()"))).scalar_one()
    done_at_kill = await scalar("SELECT count(*) FROM jobs WHERE status = 'done'")

    async def all_done() -> bool:
        return await scalar("SELECT count(*) FROM jobs WHERE status = 'done'") == JOBS

    await until("every job to be done", all_done, procs, deadline)
    finished = time.monotonic()
    assert b.alive(), b.tail()

    # Every job done, nothing queued, running or failed.
    async with store.read() as conn:
        counts = await queue.count_by_status(conn)
        rows = (await conn.execute(sa.text("SELECT job_id, worker, at FROM processed"))).all()
        attempts = dict((await conn.execute(sa.text("SELECT id, attempts FROM jobs"))).all())
    assert counts[JobStatus.DONE] == JOBS
    assert sum(counts.values()) == JOBS

    # Each job's effect committed exactly once.
    per_job = Counter(job_id for job_id, _worker, _at in rows)
    assert set(per_job) == set(ids)
    assert max(per_job.values()) == 1
    by_worker = {job_id: worker for job_id, worker, _at in rows}
    finished_at = {job_id: at for job_id, _worker, at in rows}

    # The jobs the dead worker had started without completing: the other worker did them,
    # as a second attempt. (Worker a may also have claimed jobs it had not started yet: they
    # were rescued the same way.)
    orphans = set(a.started()) - {j for j, w in by_worker.items() if w == "a"}
    assert orphans, "worker a held no job when it was killed: the test proved nothing"
    assert all(by_worker[job_id] == "b" for job_id in orphans)
    retried = {job_id for job_id, n in attempts.items() if n > 1}
    assert orphans <= retried
    # ...within a bounded time: the lease (2 s), then the next claim.
    rescue = max((finished_at[job_id] - killed_at).total_seconds() for job_id in orphans)
    assert rescue < LEASE_SECONDS + 10

    print(
        f"\n{JOBS} jobs, 2 workers: enqueued {enqueued - began:.2f} s after start; "
        f"worker a killed {killed - enqueued:.2f} s after the enqueue with {done_at_kill} done "
        f"and {len(orphans)} jobs started in its hands ({len(retried)} jobs ran twice), done "
        f"by worker b at most {rescue:.2f} s after "
        f"the kill (lease {LEASE_SECONDS} s); all done {finished - killed:.2f} s after the "
        f"kill, {finished - enqueued:.2f} s after the enqueue"
    )
