"""What the benchmarks share: a local aiohttp server in a child process that never outlives
the bench, and scratch PostgreSQL databases created and dropped around a run.

The scripts import it as a sibling module (``python bench/<script>.py`` puts ``bench/`` on
the import path)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

#: The server the scratch databases are made on (the tests' database URL when set).
ADMIN_URL = os.environ.get("ISTHMUS_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


def serve_forever(app: web.Application, started: Callable[[int], None] | None = None) -> None:
    """Serve ``app`` on 127.0.0.1 (a free port, printed as ``PORT <n>`` for the parent; then
    ``started(port)``), until SIGTERM or SIGINT, until stdin closes (the bench ended, however
    it ended), or for an hour at most."""

    async def run() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0, backlog=1024).start()
        port = int(runner.addresses[0][1])
        if started is not None:
            started(port)
        print(f"PORT {port}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_reader(sys.stdin.fileno(), stop.set)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 3600)
        await runner.cleanup()

    asyncio.run(run())


class ServerProcess:
    """``python <script> <args>`` running ``serve_forever``: started, its port read."""

    def __init__(self, script: str, args: list[str], what: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, script, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            self.proc.kill()
            raise RuntimeError(f"{what} did not start: {line!r}")
        self.port = int(line.split()[1])
        self.base = f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()  # it stops when its stdin closes
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU of a process on this machine, or None if it is not here."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def create_database() -> tuple[str, str]:
    """A new empty database on the ADMIN_URL server: (its URL, its name), once what the
    server had still to do for earlier work is done: a contender must not pay for the
    dirty pages and the WAL of the one before it (a CHECKPOINT writes them out now)."""
    import asyncpg

    name = f"isthmus_bench_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        try:
            await conn.execute("CHECKPOINT")
        except asyncpg.InsufficientPrivilegeError:
            print("  (no CHECKPOINT before this contender: the role may not take one)")
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return ADMIN_URL.rsplit("/", 1)[0] + f"/{name}", name


async def drop_database(name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(ADMIN_URL)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
