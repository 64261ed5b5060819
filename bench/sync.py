"""Contact sync benchmark: isthmus against dlt's ``rest_api`` source and a bare fetch loop.

    .venv/bin/python bench/sync.py [--contacts N] [--database sqlite|postgresql|both]
                                   [--skip-dlt]

What runs, all on 127.0.0.1, each contender in a process of its own (so its peak memory is
its own and no two share a GIL):

- a contacts API (aiohttp, its own process) in the shape of HubSpot's CRM v3 list
  ``GET /crm/v3/objects/contacts?limit=100&after=...``: ``{"results": [{"id", "properties":
  {"email", "firstname", "lastname", "phone", "company", "jobtitle", "createdate",
  "lastmodifieddate", "hs_object_id"}, "createdAt", "updatedAt", "archived"}], "paging":
  {"next": {"after", "link"}}}``, 100 per page, bearer token required, N contacts generated
  deterministically (pages rendered before any timing starts, so the API is never what
  is measured); ``POST /_ctl/change`` changes 1 % of the contacts (every 100th: job title
  and modification times), ``POST /_ctl/reset`` restores the first version; ``POST /hook``
  accepts webhook deliveries should anything send one;
- the raw limit: a bare aiohttp loop that fetches each page, ``json.loads`` it and follows
  the cursor, nothing else (run before and after the others; the faster run counts);
- dlt: ``dlt.sources.rest_api.rest_api_source`` (bearer auth, cursor paginator on
  ``paging.next.after``, ``data_selector: results``, write disposition merge, primary key
  ``id``) run by a pipeline into a scratch PostgreSQL database on the same server: the
  first load, then the load after 1 % changed;
- isthmus, per database (a scratch PostgreSQL database created and dropped by the run, or
  a temporary SQLite file): ``Hub.build(Settings(...))`` migrated, a tenant, a webhook
  subscription on ``contact.*`` (so every created or updated contact really fans out into a
  delivery row; no worker sends them), an ``api_endpoint`` integration with the HubSpot
  field mapping; runs requested with ``hub.sync_runs.request`` and executed by a
  ``Worker`` running the ``integration.sync`` job (the product's path, in the same process);
  the first full sync, then the sync after 1 % changed.

Measured: rows/s = records fetched / wall time (from the request to the run's end as the
store shows it, or the pipeline's ``run``); for isthmus each run's counts and the number of
deliveries written are checked against what the API served; peak memory is the maximum
RSS (``getrusage``) of each contender's process. Targets: the first sync at least 4x dlt
and at least 0.5x the bare loop, on PostgreSQL and SQLite alike; the syncing process at
most 300 MB. Beside them, where each contender's first run spent CPU per record (its own
process, the PostgreSQL server's processes on this machine, the contacts API: ``CpuMeter``)
and how many of the machine's cores that kept busy over the run (for isthmus the meter
stops when the bench sees the run ended, up to ``POLL_SECONDS`` later: a little of the
statistics refresh that follows a run may count).

After isthmus's PostgreSQL run, the database floor (``dbfloor``): the server's own CPU to
write the rows that first sync left (contacts, events, deliveries, jobs: copied aside and
written back with one ``INSERT ... SELECT`` each), and from it and the bare loop's CPU per
record the ceiling no sync of this shape passes on this machine's cores.

Each PostgreSQL contender starts on a settled server: the database of the one before it
dropped (its autovacuum work with it) and a CHECKPOINT taken (its dirty pages written).
Every child process is bounded by a timeout; the scratch databases are dropped and the
temporary files removed at the end, whatever happened.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import dbfloor
from aiohttp import web
from benchsupport import (
    API_PID_VARIABLE,
    CpuMeter,
    ServerProcess,
    create_database,
    drop_database,
    serve_forever,
)

TOKEN = "pat-na1-bench-0000-1111-2222-333344445555"
PAGE_SIZE = 100
CHANGE_EVERY = 100  # 1 %
PATH = "/crm/v3/objects/contacts"
#: How often the bench looks at a run's status. A run's time is its end as the store
#: records it, less the moment it was asked for, so this only says how soon the bench
#: notices; each look takes a little CPU from the run it measures (at 0.05 s, 2-4 % of the
#: syncing process's samples in a profile; no difference in the rates in three paired runs).
POLL_SECONDS = 0.1
TARGET_X_DLT = 4.0
TARGET_X_BARE = 0.5
TARGET_RSS_MB = 300.0
FIELD_MAPPING = {
    "email": "properties.email",
    "firstName": "properties.firstname",
    "lastName": "properties.lastname",
    "phone": "properties.phone",
    "company": "properties.company",
    "jobTitle": "properties.jobtitle",
    "externalId": "id",
}

_FIRST = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Margaret", "Ken", "Radia")
_LAST = ("Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Hamilton", "Thompson")
_TITLES = ("Engineer", "Head of Sales", "CTO", "Buyer", "Office Manager", "Analyst", "Founder")


# -- the contacts API (its own process) -------------------------------------------------------


def contact(i: int, version: int) -> dict[str, Any]:
    """Contact ``i`` as the API shows it in data ``version`` (0: first; each later version
    changes every ``CHANGE_EVERY``-th contact)."""
    changed = version > 0 and i % CHANGE_EVERY == 0
    created = f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:00.000Z"
    modified = f"2025-06-{1 + version:02d}T12:00:00.000Z" if changed else created
    title = _TITLES[i % len(_TITLES)] + (f" (v{version})" if changed else "")
    object_id = str(10_001 + i)
    return {
        "id": object_id,
        "properties": {
            "email": f"{_FIRST[i % 9].lower()}.{_LAST[i % 8].lower()}.{i}@example{i % 50}.com",
            "firstname": _FIRST[i % len(_FIRST)],
            "lastname": _LAST[i % len(_LAST)],
            "phone": f"+1 555 {i:07d}",
            "company": f"Company {i % 5000}",
            "jobtitle": title,
            "createdate": created,
            "lastmodifieddate": modified,
            "hs_object_id": object_id,
        },
        "createdAt": created,
        "updatedAt": modified,
        "archived": False,
    }


class ContactsAPI:
    def __init__(self, total: int) -> None:
        self.total = total
        self.base = ""
        self.pages: list[bytes] = []
        self.version = -1
        self.hooks = 0

    def render(self, version: int) -> None:
        if version == self.version:
            return
        pages = []
        for start in range(0, self.total, PAGE_SIZE):
            body: dict[str, Any] = {
                "results": [
                    contact(i, version) for i in range(start, min(start + PAGE_SIZE, self.total))
                ]
            }
            if start + PAGE_SIZE < self.total:
                after = str(start + PAGE_SIZE)
                link = f"{self.base}{PATH}?after={after}&limit={PAGE_SIZE}"
                body["paging"] = {"next": {"after": after, "link": link}}
            pages.append(json.dumps(body, separators=(",", ":")).encode())
        self.pages, self.version = pages, version

    async def list(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response(
                {"status": "error", "message": "Authentication credentials not found."},
                status=401,
            )
        after = request.query.get("after", "0")
        if not after.isdigit() or int(after) % PAGE_SIZE or request.query.get("limit") != "100":
            return web.json_response({"status": "error", "message": "bad paging"}, status=400)
        index = int(after) // PAGE_SIZE
        body = self.pages[index] if index < len(self.pages) else b'{"results":[]}'
        return web.Response(body=body, content_type="application/json")

    async def change(self, _request: web.Request) -> web.Response:
        self.render(self.version + 1)
        return web.json_response({"version": self.version})

    async def reset(self, _request: web.Request) -> web.Response:
        self.render(0)
        return web.json_response({"version": self.version})

    async def hook(self, request: web.Request) -> web.Response:
        await request.read()
        self.hooks += 1
        return web.Response(status=204)


def serve_main(total: int) -> None:
    api = ContactsAPI(total)
    app = web.Application()
    app.router.add_get(PATH, api.list)
    app.router.add_post("/_ctl/change", api.change)
    app.router.add_post("/_ctl/reset", api.reset)
    app.router.add_post("/hook", api.hook)

    def started(port: int) -> None:
        api.base = f"http://127.0.0.1:{port}"
        api.render(0)

    serve_forever(app, started)


async def control(base: str, action: str) -> None:
    timeout = aiohttp.ClientTimeout(120)
    async with aiohttp.ClientSession(timeout=timeout) as s, s.post(f"{base}/_ctl/{action}") as r:
        r.raise_for_status()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def report(result: dict[str, Any]) -> None:
    print("RESULT " + json.dumps({**result, "peak_rss_mb": peak_rss_mb()}), flush=True)


# -- the bare loop ----------------------------------------------------------------------------


async def bare_main(base: str) -> None:
    rows = 0
    headers = {"Authorization": f"Bearer {TOKEN}"}
    meter = CpuMeter()
    async with aiohttp.ClientSession(headers=headers) as session:
        meter.start()
        started = time.perf_counter()
        after: str | None = "0"
        while after is not None:
            params = {"limit": str(PAGE_SIZE), "after": after}
            async with session.get(base + PATH, params=params) as r:
                r.raise_for_status()
                body = json.loads(await r.read())
            rows += len(body["results"])
            after = body.get("paging", {}).get("next", {}).get("after")
        seconds = time.perf_counter() - started
        cpu = meter.stop()
    report({"rows": rows, "seconds": seconds, "cpu": cpu})


# -- dlt --------------------------------------------------------------------------------------


def dlt_main(base: str, database_url: str, workdir: str) -> None:
    os.environ["RUNTIME__DLTHUB_TELEMETRY"] = "false"
    os.environ["RUNTIME__LOG_LEVEL"] = "WARNING"
    import dlt
    from dlt.sources.rest_api import rest_api_source

    def source() -> Any:
        return rest_api_source(
            {
                "client": {
                    "base_url": base,
                    "auth": {"type": "bearer", "token": TOKEN},
                    "paginator": {
                        "type": "cursor",
                        "cursor_path": "paging.next.after",
                        "cursor_param": "after",
                    },
                },
                "resource_defaults": {"primary_key": "id", "write_disposition": "merge"},
                "resources": [
                    {
                        "name": "contacts",
                        "endpoint": {
                            "path": PATH.lstrip("/"),
                            "params": {"limit": PAGE_SIZE},
                            "data_selector": "results",
                        },
                    }
                ],
            }
        )

    from yarl import URL

    target = URL(database_url)
    if target.password is None:  # dlt insists on one; a trust-auth server ignores it
        target = target.with_password("unused")
    pipeline = dlt.pipeline(
        pipeline_name="bench_sync",
        destination=dlt.destinations.postgres(credentials=str(target)),
        dataset_name="crm",
        pipelines_dir=workdir,
        progress=None,
    )
    runs = []
    meter = CpuMeter()
    for phase in ("first", "changed"):
        if phase == "changed":
            asyncio.run(control(base, "change"))
        meter.start()
        started = time.perf_counter()
        pipeline.run(source())
        seconds = time.perf_counter() - started
        cpu = meter.stop()
        with pipeline.sql_client() as client:
            [(rows,)] = client.execute_sql("SELECT count(*) FROM contacts")
        runs.append({"phase": phase, "rows": int(rows), "seconds": seconds, "cpu": cpu})
    report({"runs": runs})


# -- isthmus ----------------------------------------------------------------------------------


async def isthmus_main(base: str, database_url: str, home: str, total: int) -> None:
    import sqlalchemy as sa

    from isthmus.config import load_settings
    from isthmus.domain.auth import Actor
    from isthmus.hub import Hub
    from isthmus.runtime import tune_process
    from isthmus.store import migrate
    from isthmus.store.sync_runs import ACTIVE, SYNC_KIND
    from isthmus.store.tables import deliveries
    from isthmus.worker import Worker

    settings = load_settings(
        home=Path(home),
        database_url=database_url,
        outbound_allowlist=["127.0.0.0/8"],
        log_level="warning",
    )
    hub = Hub.build(settings)
    tune_process(hub.store)  # as `isthmus worker` and `isthmus serve` do once started
    stop = asyncio.Event()
    running: asyncio.Task[None] | None = None
    try:
        await migrate.upgrade(hub.store)
        tenant = await hub.access.create_tenant("bench")
        actor = Actor(tenant.id, "bench")
        await hub.webhooks.create(actor, url=f"{base}/hook", events=["contact.*"], name="bench")
        view = await hub.integrations.create(
            actor,
            name="CRM contacts",
            provider="api_endpoint",
            config={
                "apiEndpoint": f"{base}{PATH}?limit={PAGE_SIZE}",
                "dataSelector": "results",
                "pagination": {
                    "type": "cursor",
                    "cursorPath": "paging.next.after",
                    "cursorParam": "after",
                },
                "fieldMapping": FIELD_MAPPING,
            },
            credentials={"apiKey": TOKEN},
        )
        worker = Worker(
            hub.store,
            concurrency=settings.worker_concurrency,
            lease_seconds=settings.worker_lease_seconds,
        )
        worker.register(SYNC_KIND, hub.sync)
        running = asyncio.create_task(worker.run(stop), name="worker")

        async def delivered() -> int:
            async with hub.store.read() as conn:
                found = await conn.execute(sa.select(sa.func.count()).select_from(deliveries))
                return int(found.scalar_one())

        runs = []
        meter = CpuMeter()
        changed = len(range(0, total, CHANGE_EVERY))
        for phase, expected in (("first", (total, total, 0)), ("changed", (total, 0, changed))):
            if phase == "changed":
                await control(base, "change")
            before = await delivered()
            meter.start()
            asked = datetime.now(UTC)
            requested = await hub.sync_runs.request(actor, view.integration.id)
            run = requested.run
            while run.status in ACTIVE:
                if running.done():
                    running.result()
                    raise RuntimeError("the worker stopped")
                await asyncio.sleep(POLL_SECONDS)
                run = await hub.sync_runs.get(tenant.id, run.id)
            spent = meter.stop()
            seconds = ((run.finished_at or datetime.now(UTC)) - asked).total_seconds()
            c = run.counts
            got = (c.fetched, c.created, c.updated)
            made = await delivered() - before
            problems = []
            if run.status.value != "succeeded":
                problems.append(f"run {run.status.value}: {run.error}")
            if got != expected:
                problems.append(f"fetched/created/updated {got}, expected {expected}")
            if made != c.created + c.updated:
                problems.append(f"{made} deliveries for {c.created + c.updated} changes")
            runs.append(
                {
                    "phase": phase,
                    "rows": c.fetched,
                    "seconds": seconds,
                    "cpu": spent,
                    "created": c.created,
                    "updated": c.updated,
                    "unchanged": c.unchanged,
                    "deliveries": made,
                    "problems": problems,
                }
            )
        report({"runs": runs})
    finally:
        stop.set()
        if running is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(running, 30)
        await hub.close()


# -- the orchestra ----------------------------------------------------------------------------


def child(args: list[str], timeout: float, api_pid: int | None = None) -> dict[str, Any]:
    """Run ``bench/sync.py <args>`` in a fresh process and return its RESULT (``api_pid``:
    the contacts API's, for the child's ``CpuMeter``)."""
    env = dict(os.environ)
    if api_pid is not None:
        env[API_PID_VARIABLE] = str(api_pid)
    proc = subprocess.run(
        [sys.executable, __file__, *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            found: dict[str, Any] = json.loads(line[len("RESULT ") :])
            return found
    raise RuntimeError(f"{args[0]} gave no result (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


def done_with(name: str, scratch: list[str]) -> None:
    """Drop a contender's database once its figures are in: left, the server's autovacuum
    would analyse and vacuum its tables during the next contender's run."""
    asyncio.run(drop_database(name))
    scratch.remove(name)


def bench(args: argparse.Namespace) -> int:
    databases = ["postgresql", "sqlite"] if args.database == "both" else [args.database]
    server = ServerProcess(__file__, ["--_serve", str(args.contacts)], "the contacts API")
    scratch: list[str] = []
    floor: dict[str, Any] | None = None
    bare: list[dict[str, Any]] = []
    rows: list[tuple[str, dict[str, Any], dict[str, Any]]] = []  # label, first, changed
    rss: dict[str, float] = {}
    overall = time.monotonic()
    print(f"isthmus contact sync benchmark: {args.contacts:,} contacts, {PAGE_SIZE} per page")
    try:
        with tempfile.TemporaryDirectory(prefix="isthmus-sync-bench-") as tmp:
            bare.append(child(["--_bare", server.base], args.timeout, server.proc.pid))
            print(f"  bare aiohttp loop: {bare[-1]['rows'] / bare[-1]['seconds']:,.0f} rows/s")
            if not args.skip_dlt:
                url, name = asyncio.run(create_database())
                scratch.append(name)
                asyncio.run(control(server.base, "reset"))
                found = child(
                    ["--_dlt", server.base, url, str(Path(tmp) / "dlt")],
                    args.timeout,
                    server.proc.pid,
                )
                first, changed = found["runs"]
                done_with(name, scratch)
                rows.append(("dlt rest_api, postgresql", first, changed))
                rss["dlt rest_api, postgresql"] = found["peak_rss_mb"]
                print(f"  dlt: {first['rows'] / first['seconds']:,.0f} rows/s first load")
            for database in databases:
                if database == "postgresql":
                    url, name = asyncio.run(create_database())
                    scratch.append(name)
                else:
                    url = f"sqlite:///{Path(tmp) / 'isthmus.db'}"
                home = Path(tmp) / f"home-{database}"
                home.mkdir()
                asyncio.run(control(server.base, "reset"))
                found = child(
                    ["--_isthmus", server.base, url, str(home), str(args.contacts)],
                    args.timeout,
                    server.proc.pid,
                )
                first, changed = found["runs"]
                label = f"isthmus, {database}"
                rows.append((label, first, changed))
                rss[label] = found["peak_rss_mb"]
                print(f"  {label}: {first['rows'] / first['seconds']:,.0f} rows/s first sync")
                if database == "postgresql":
                    floor = child(["--_floor", url], args.timeout)
                    done_with(name, scratch)
            bare.append(child(["--_bare", server.base], args.timeout, server.proc.pid))
            again = bare[-1]["rows"] / bare[-1]["seconds"]
            print(f"  bare aiohttp loop again: {again:,.0f} rows/s")
    finally:
        server.close()
        for name in scratch:
            asyncio.run(drop_database(name))

    def rate(run: dict[str, Any]) -> float:
        return float(run["rows"]) / run["seconds"] if run["seconds"] > 0 else 0.0

    best_bare = max(rate(b) for b in bare)
    dlt_rate = next((rate(first) for label, first, _ in rows if label.startswith("dlt")), None)
    print()
    print(f"Rows per second ({args.contacts:,} contacts; second sync: 1 % changed):")
    print(
        f"  {'':<28} {'first s':>8} {'first/s':>9} {'x bare':>7} {'x dlt':>7} "
        f"{'1% s':>7} {'1%/s':>9} {'peak RSS':>9}"
    )
    for i, b in enumerate(bare):
        print(
            f"  {'bare aiohttp loop' + (' (again)' if i else ''):<28} {b['seconds']:>8.2f} "
            f"{rate(b):>9,.0f} {rate(b) / best_bare:>6.2f}x {'':>7} {'':>7} {'':>9} "
            f"{b['peak_rss_mb']:>6.0f} MB"
        )
    for label, first, changed in rows:
        x_dlt = f"{rate(first) / dlt_rate:>6.2f}x" if dlt_rate else f"{'-':>7}"
        print(
            f"  {label:<28} {first['seconds']:>8.2f} {rate(first):>9,.0f} "
            f"{rate(first) / best_bare:>6.2f}x {x_dlt} {changed['seconds']:>7.2f} "
            f"{rate(changed):>9,.0f} {rss[label]:>6.0f} MB"
        )
    print()
    failed = False
    for label, first, changed in rows:
        for run in (first, changed):
            for problem in run.get("problems", []):
                failed = True
                print(f"INCORRECT: {label}, {run['phase']} sync: {problem}")
    for label, first, _ in rows:
        if not label.startswith("isthmus"):
            continue
        ok = not first.get("problems")
        x_bare = rate(first) / best_bare
        verdict = "met" if x_bare >= TARGET_X_BARE and ok else "NOT met"
        print(f"Target {label} first sync >= {TARGET_X_BARE}x bare loop: {x_bare:.2f}x: {verdict}")
        if dlt_rate:
            x = rate(first) / dlt_rate
            verdict = "met" if x >= TARGET_X_DLT and ok else "NOT met"
            print(f"Target {label} first sync >= {TARGET_X_DLT:g}x dlt: {x:.2f}x: {verdict}")
        verdict = "met" if rss[label] <= TARGET_RSS_MB else "NOT met"
        print(f"Target {label} peak RSS <= {TARGET_RSS_MB:.0f} MB: {rss[label]:.0f} MB: {verdict}")
    show_cpu(rows)
    if floor is not None:
        show_floor(floor, bare, best_bare)
    print(f"\ntotal {time.monotonic() - overall:.0f} s")
    return 1 if failed else 0


def show_cpu(rows: list[tuple[str, dict[str, Any], dict[str, Any]]]) -> None:
    """Where each contender's first run spent CPU, per record, and how many cores that kept
    busy over its wall time: what bounds it on this machine; and for each isthmus run, the
    CPU a record the 4x dlt target leaves it here."""
    print("\nCPU per record in each first run (us), and the cores it kept busy:")
    budget: float | None = None
    for label, first, _changed in rows:
        cpu = first.get("cpu")
        if not cpu or not first["rows"]:
            continue
        n = first["rows"]
        parts = [f"its process {cpu['process'] / n * 1e6:.1f}"]
        if label.endswith("sqlite"):
            parts[0] += " (SQLite inside it)"
        elif cpu["postgres"] is not None:
            parts.append(f"PostgreSQL {cpu['postgres'] / n * 1e6:.1f}")
        if cpu["api"] is not None:
            parts.append(f"the contacts API {cpu['api'] / n * 1e6:.1f}")
        # SQLite contenders leave the server idle: its background work is not theirs.
        shares = ("process", "api") if label.endswith("sqlite") else ("process", "postgres", "api")
        spent = sum(cpu[k] or 0.0 for k in shares)
        busy = spent / first["seconds"]
        print(f"  {label}: {', '.join(parts)}: {busy:.2f} of {os.cpu_count()} cores")
        if label.startswith("dlt"):
            budget = first["seconds"] / n / TARGET_X_DLT  # wall time a record at 4x dlt
        elif budget is not None:
            print(
                f"    {TARGET_X_DLT:g}x dlt allows {budget * 1e6:.1f} us of wall time a record: "
                f"at most {budget * (os.cpu_count() or 1) * 1e6:.0f} us of CPU with every core "
                f"busy, {budget * busy * 1e6:.0f} at the {busy:.2f} this run kept busy; it "
                f"spent {spent / n * 1e6:.0f}"
            )


def show_floor(floor: dict[str, Any], bare: list[dict[str, Any]], best_bare: float) -> None:
    """What the database alone needs, and the rate no sync passes on this machine."""
    n = floor["contacts"]
    parts = ", ".join(f"{t} {v / n * 1e6:.1f}" for t, v in floor["tables"].items())
    fastest = max(bare, key=lambda b: b["rows"] / b["seconds"])
    bare_cpu = fastest["cpu"]["process"] / fastest["rows"]
    api_cpu = (fastest["cpu"]["api"] or 0.0) / fastest["rows"]
    top = dbfloor.ceiling(floor, bare_cpu + api_cpu)
    print(
        f"\nDatabase floor: PostgreSQL writing the first sync's rows alone ({floor['measured']}"
        f" of the server process): {floor['seconds'] / n * 1e6:.1f} us per contact ({parts})"
    )
    print(
        f"Ceiling here: {os.cpu_count()} cores / (floor + the bare loop's CPU {bare_cpu * 1e6:.1f}"
        f" + the API's {api_cpu * 1e6:.1f} us per record) = {top:,.0f} rows/s = "
        f"{top / best_bare:.2f}x the bare loop (the {TARGET_X_BARE}x target: "
        f"{TARGET_X_BARE * best_bare:,.0f} rows/s)"
    )


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1].startswith("--_"):
        mode, rest = sys.argv[1], sys.argv[2:]
        if mode == "--_serve":
            serve_main(int(rest[0]))
        elif mode == "--_bare":
            asyncio.run(bare_main(rest[0]))
        elif mode == "--_dlt":
            dlt_main(*rest)
        elif mode == "--_isthmus":
            asyncio.run(isthmus_main(rest[0], rest[1], rest[2], int(rest[3])))
        elif mode == "--_floor":
            report(asyncio.run(dbfloor.floor_main(rest[0])))
        else:
            raise SystemExit(f"unknown mode {mode}")
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--contacts", type=int, default=100_000, help="contacts served (100000)")
    p.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    p.add_argument("--skip-dlt", action="store_true", help="leave dlt out (it is optional)")
    p.add_argument("--timeout", type=float, default=900.0, help="per contender, seconds (900)")
    return bench(p.parse_args())


if __name__ == "__main__":
    sys.exit(main())
