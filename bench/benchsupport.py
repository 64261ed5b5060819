"""What the benchmarks share: a local aiohttp server in a child process that never outlives
the bench, and scratch PostgreSQL databases created and dropped around a run.

The scripts import it as a sibling module (``python bench/<script>.py`` puts ``bench/`` on
the import path)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
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


class CpuMeter:
    """The CPU spent between ``start`` and ``stop`` by this process (threads and waited-for
    children included), by the PostgreSQL server on this machine, and by another process of
    the bench (``BENCH_API_PID``: the contacts API), in seconds; None where there is nothing
    to read (a server elsewhere, no API pid given).

    The server's CPU is its live processes' plus what its postmaster collected from those
    that ended (a client's backend ends with its connection, often before ``stop``)."""

    def __init__(self) -> None:
        pid = os.environ.get(API_PID_VARIABLE)
        self.api_pid = int(pid) if pid else None
        self._self = 0.0
        self._server: float | None = None
        self._api: float | None = None

    def start(self) -> None:
        self._self, self._server = _own_cpu(), server_cpu()
        self._api = cpu_seconds(self.api_pid) if self.api_pid is not None else None

    def stop(self) -> dict[str, float | None]:
        server = server_cpu()
        api = cpu_seconds(self.api_pid) if self.api_pid is not None else None
        return {
            "process": _own_cpu() - self._self,
            "postgres": server - self._server
            if server is not None and self._server is not None
            else None,
            "api": api - self._api if api is not None and self._api is not None else None,
        }


#: How a bench hands its children the contacts API's pid, for ``CpuMeter``.
API_PID_VARIABLE = "BENCH_API_PID"


def _own_cpu() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def server_cpu() -> float | None:
    """CPU seconds of the PostgreSQL server on this machine so far: its live processes', and
    its postmaster's ended children's; None if there is none here."""
    total, found = 0.0, False
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "postgres":
                continue
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            parent = Path(f"/proc/{fields[1]}/comm").read_text().strip()
        except OSError:
            continue  # ended meanwhile: the postmaster has or will have counted it
        found = True
        total += (int(fields[11]) + int(fields[12])) / tick
        if parent != "postgres":  # the postmaster: add what it reaped
            total += (int(fields[13]) + int(fields[14])) / tick
    return total if found else None


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
