"""Outbound webhook benchmark: isthmus against a bare aiohttp sender, in the same run.

    .venv/bin/python bench/webhooks.py [--events N] [--subscriptions M]
                                       [--database sqlite|postgresql|both]
                                       [--workers inprocess|process]
                                       [--worker-processes K]

What runs, all on 127.0.0.1:

- a receiver (aiohttp, its own process, so it never shares a core's GIL with the sender it
  measures) that verifies every delivery's Standard Webhooks signature (HMAC-SHA256 of
  ``"{webhook-id}.{webhook-timestamp}." + body`` keyed with the subscription's secret; the
  fast path, the same computation as the official ``standardwebhooks`` library) and records
  each receipt's time (CLOCK_MONOTONIC, which is system-wide on Linux);
- the hub: ``Hub.build(Settings(...))`` on a scratch database (a temporary SQLite file, or a
  scratch PostgreSQL database created and dropped by the run), M subscriptions (filter ``*``)
  on the receiver, events published with ``isthmus.webhooks.publish.publish_many()`` inside
  transactions (the internal way in that the REST API, sync and inbound webhooks all use,
  ``publish()`` being its one-event case; the HTTP layer in front of it is not what this
  measures). Workers run in the bench's process
  on SQLite (``runtime.run_workers``, as ``isthmus serve`` runs them: SQLite is one process by
  design, so publisher and workers share it, which is the product's own cost); on PostgreSQL
  ``isthmus worker`` processes (one, or ``--worker-processes K``, as deployed beside
  ``serve --no-workers``; each with ``worker_concurrency`` slots), the publisher staying in
  the bench's process (``--workers inprocess`` forces in-process there too);
- the raw limit: a bare aiohttp sender in the bench's process posting the same signed
  requests (same body bytes and size, same headers, made by the same signing functions) to
  the same receiver with the same concurrency as the workers (``worker_concurrency``).

Measured:

1. deliveries/s end to end: first publish to last verified receipt, N events x M
   subscriptions, per database; the raw sender's deliveries/s (first send to last receipt);
2. p50/p99 publish-to-receipt latency at a fixed offered load (500 events/s, open loop on a
   timer, each event its own transaction, latency measured from the event's scheduled time,
   so a lagging publisher counts against the product, not for it).

Everything is bounded by timeouts and stops by itself; the scratch databases are dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from benchsupport import ServerProcess, create_database, drop_database, serve_forever

TARGET_RATIO = 0.5
TARGET_P99_MS = 50.0
EVENT_TYPE = "lead.created"
STOP_TIMEOUT = 20.0
PUBLISHERS = 8


# -- receiver (its own process) ---------------------------------------------------------------


class Receiver:
    """Verifies and timestamps every POST /hook; /_ctl/* is the bench's control channel."""

    def __init__(self) -> None:
        self.keys: dict[str, bytes] = {}  # subscription id (X-Webhook-Id) -> HMAC key
        self.reset()

    def reset(self) -> None:
        self.received = 0
        self.bad = 0
        self.ids: set[str] = set()
        self.first: float | None = None
        self.last: float | None = None
        self.latencies: list[float] = []  # ms, receipt - data.t

    async def hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        now = time.monotonic()
        h = request.headers
        ok = False
        key = self.keys.get(h.get("X-Webhook-Id", ""))
        msg_id, ts, sigs = (
            h.get("webhook-id"),
            h.get("webhook-timestamp"),
            h.get("webhook-signature"),
        )
        if key is not None and msg_id and ts and sigs and abs(time.time() - int(ts)) < 300:
            expected = base64.b64encode(
                hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
            ).decode()
            ok = any(
                hmac.compare_digest(s.partition(",")[2], expected)
                for s in sigs.split(" ")
                if s.startswith("v1,")
            )
        self.received += 1
        if not ok:
            self.bad += 1
            return web.Response(status=401)
        if msg_id not in self.ids:
            self.ids.add(msg_id)
            if self.first is None:
                self.first = now
            self.last = now
            sent = json.loads(body)["data"].get("t")
            if sent is not None:
                self.latencies.append((now - sent) * 1000)
        return web.Response(status=204)

    async def ctl_keys(self, request: web.Request) -> web.Response:
        for sub_id, secret in (await request.json()).items():
            encoded = secret.removeprefix("whsec_")
            self.keys[sub_id] = base64.b64decode(encoded + "=" * (-len(encoded) % 4))
        return web.json_response({"keys": len(self.keys)})

    async def ctl_reset(self, _request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({})

    async def ctl_stats(self, request: web.Request) -> web.Response:
        out: dict[str, Any] = {"received": self.received, "bad": self.bad, "unique": len(self.ids)}
        if request.query.get("full"):
            out.update(first=self.first, last=self.last, latencies=self.latencies)
        return web.json_response(out)


def receiver_main() -> None:
    r = Receiver()
    app = web.Application(client_max_size=1024 * 1024)
    app.router.add_post("/hook", r.hook)
    app.router.add_post("/_ctl/keys", r.ctl_keys)
    app.router.add_post("/_ctl/reset", r.ctl_reset)
    app.router.add_get("/_ctl/stats", r.ctl_stats)
    serve_forever(app)


class ReceiverProcess(ServerProcess):
    def __init__(self) -> None:
        super().__init__(__file__, ["--_receiver"], "the receiver")
        self.url = f"{self.base}/hook"
        self.ctl = aiohttp.ClientSession(self.base, timeout=aiohttp.ClientTimeout(total=30))

    async def keys(self, keys: dict[str, str]) -> None:
        async with self.ctl.post("/_ctl/keys", json=keys) as r:
            r.raise_for_status()

    async def reset(self) -> None:
        async with self.ctl.post("/_ctl/reset") as r:
            r.raise_for_status()

    async def stats(self, full: bool = False) -> dict[str, Any]:
        async with self.ctl.get("/_ctl/stats", params={"full": "1"} if full else {}) as r:
            r.raise_for_status()
            return dict(await r.json())

    async def wait_for(self, n: int, timeout: float) -> dict[str, Any]:
        """Poll until ``n`` distinct deliveries were verified (or the timeout); full stats."""
        deadline = time.monotonic() + timeout
        while (await self.stats())["unique"] < n and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return await self.stats(full=True)

    async def stop(self) -> None:
        await self.ctl.close()
        self.close()


# -- results ----------------------------------------------------------------------------------


@dataclass
class Throughput:
    label: str
    deliveries: int
    expected: int
    seconds: float
    bad: int
    publish_seconds: float | None = None

    @property
    def rate(self) -> float:
        return self.deliveries / self.seconds if self.seconds > 0 else 0.0


@dataclass
class Latency:
    label: str
    offered: float
    achieved: float
    events: int
    deliveries: int
    expected: int
    latencies: list[float] = field(default_factory=list)

    def pct(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


# -- raw sender -------------------------------------------------------------------------------


async def raw_sender(
    receiver: ReceiverProcess, total: int, subscriptions: int, concurrency: int, timeout: float
) -> Throughput:
    """``total`` POSTs, signed exactly as the worker signs them, ``concurrency`` at a time."""
    from isthmus.domain.ids import new_id
    from isthmus.http import USER_AGENT
    from isthmus.store.types import utcnow
    from isthmus.webhooks.signing import delivery_headers, generate_secret, payload

    subs = [(f"sub_raw{i}", generate_secret()) for i in range(subscriptions)]
    await receiver.keys(dict(subs))
    await receiver.reset()
    tenant = new_id("ten")
    created = utcnow()
    counter = iter(range(total))
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    client_timeout = aiohttp.ClientTimeout(total=10, connect=5)
    errors = 0

    async def one_sender(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        for n in counter:
            sub_id, secret = subs[n % subscriptions]
            # The same data shape as the published events (so the same body size).
            body = payload(EVENT_TYPE, created, tenant, {"seq": n, "t": time.monotonic()})
            msg_id = new_id("dlv")
            headers = delivery_headers(
                secrets=[secret],
                msg_id=msg_id,
                timestamp=int(time.time()),
                body=body,
                subscription_id=sub_id,
                event_type=EVENT_TYPE,
                user_agent=USER_AGENT,
            )
            try:
                async with session.post(
                    receiver.url, data=body, headers=headers, allow_redirects=False
                ) as r:
                    await r.read()
                    if r.status >= 300:
                        errors += 1
            except (aiohttp.ClientError, TimeoutError):
                errors += 1

    async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as session:
        started = time.monotonic()
        await asyncio.wait_for(
            asyncio.gather(*(one_sender(session) for _ in range(concurrency))), timeout
        )
    stats = await receiver.wait_for(total, 10)
    last = stats["last"] or time.monotonic()
    return Throughput("raw aiohttp", stats["unique"], total, last - started, stats["bad"] + errors)


# -- the hub ----------------------------------------------------------------------------------


class HubUnderTest:
    """A hub on a scratch database with M subscriptions on the receiver, and its workers."""

    def __init__(
        self, database: str, workdir: Path, concurrency: int, workers: str, processes: int = 1
    ) -> None:
        self.database = database
        self.processes = processes
        self.home = workdir / f"home-{database}"
        self.concurrency = concurrency
        self.worker_mode = workers
        self.pg_name: str | None = None
        self.url: str | None = None
        self.hub: Any = None
        self.tenant_id = ""
        self._stop: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._procs: list[subprocess.Popen[bytes]] = []

    async def start(self, receiver: ReceiverProcess, subscriptions: int) -> None:
        from isthmus.config import load_settings
        from isthmus.domain.auth import Actor
        from isthmus.hub import Hub
        from isthmus.store import migrate

        if self.database == "postgresql":
            self.url, self.pg_name = await create_database()
        else:
            self.home.mkdir(parents=True, exist_ok=True)
            self.url = f"sqlite:///{(self.home / 'bench.db').resolve()}"
        settings = load_settings(
            home=self.home,
            database_url=self.url,
            outbound_allowlist=["127.0.0.0/8"],
            worker_concurrency=self.concurrency,
            log_level="warning",
        )
        self.hub = Hub.build(settings)
        await migrate.upgrade(self.hub.store)
        tenant = await self.hub.access.create_tenant("bench")
        self.tenant_id = tenant.id
        actor = Actor(tenant.id, "bench")
        keys = {}
        for i in range(subscriptions):
            issued = await self.hub.webhooks.create(
                actor, url=receiver.url, events=["*"], name=f"bench {i}"
            )
            keys[issued.subscription.id] = issued.secret
        await receiver.keys(keys)

    async def start_workers(self) -> None:
        if self.worker_mode in ("process", "auto") and self.database == "postgresql":
            env = {
                k: v
                for k, v in os.environ.items()
                if not k.startswith("ISTHMUS_") and k not in ("PYTHONPATH", "PYTHONHOME")
            }
            env.update(
                ISTHMUS_HOME=str(self.home),
                ISTHMUS_DATABASE_URL=str(self.url),
                ISTHMUS_OUTBOUND_ALLOWLIST="127.0.0.0/8",
                ISTHMUS_LOG_LEVEL="warning",
            )
            exe = Path(sys.executable).with_name("isthmus")
            for _ in range(self.processes):
                proc = subprocess.Popen(
                    [str(exe), "worker", "--concurrency", str(self.concurrency)],
                    env=env,
                    stdout=subprocess.PIPE,
                    stdin=subprocess.DEVNULL,
                )
                self._procs.append(proc)
                assert proc.stdout is not None
                line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)
                if b"worker, concurrency" not in line:
                    raise RuntimeError(f"isthmus worker did not start: {line!r}")
            return
        from isthmus.runtime import run_workers

        self._stop = asyncio.Event()
        self._task = asyncio.create_task(run_workers(self.hub, self._stop), name="workers")

    async def stop_workers(self) -> None:
        for proc in self._procs:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self._procs.clear()
        if self._task is not None and self._stop is not None:
            self._stop.set()
            try:
                await asyncio.wait_for(self._task, STOP_TIMEOUT)
            except TimeoutError:
                print("  (workers did not drain in time; cancelled)", file=sys.stderr)
            self._task = None

    async def publish_batch(self, first: int, count: int, stamp: float | None = None) -> None:
        from isthmus.webhooks.publish import NewEvent, publish_many

        t = stamp if stamp is not None else time.monotonic()
        batch = [NewEvent(EVENT_TYPE, {"seq": n, "t": t}) for n in range(first, first + count)]
        async with self.hub.store.transaction() as conn:
            await publish_many(conn, self.tenant_id, batch)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.stop_workers()
        if self.hub is not None:
            await self.hub.close()
        if self.pg_name is not None:
            await drop_database(self.pg_name)


async def hub_throughput(
    hut: HubUnderTest,
    receiver: ReceiverProcess,
    events: int,
    subscriptions: int,
    batch: int,
    timeout: float,
) -> Throughput:
    expected = events * subscriptions
    await receiver.reset()
    started = time.monotonic()
    for first in range(0, events, batch):
        await hut.publish_batch(first, min(batch, events - first))
    published = time.monotonic() - started
    stats = await receiver.wait_for(expected, timeout)
    last = stats["last"] or time.monotonic()
    return Throughput(
        f"isthmus, {hut.database}",
        stats["unique"],
        expected,
        last - started,
        stats["bad"],
        published,
    )


async def hub_latency(
    hut: HubUnderTest,
    receiver: ReceiverProcess,
    rate: float,
    seconds: float,
    subscriptions: int,
    timeout: float,
) -> Latency:
    """Open loop: event i is due at start + i/rate and stamped with that time; each is its own
    transaction, started as a task so a slow publish does not hold back the next, at most
    ``PUBLISHERS`` at once."""
    events = int(rate * seconds)
    expected = events * subscriptions
    await receiver.reset()
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task[None]] = []
    start = time.monotonic() + 0.05
    # At most this many publish transactions at once (an API server's connection pool): a
    # backlog waits here, and its wait counts, since each event is stamped with its due time.
    gate = asyncio.Semaphore(PUBLISHERS)

    async def one(i: int, due: float) -> None:
        async with gate:
            await hut.publish_batch(i, 1, stamp=due)

    for i in range(events):
        due = start + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(loop.create_task(one(i, due)))
    await asyncio.wait_for(asyncio.gather(*tasks), timeout)
    achieved = events / (time.monotonic() - start)
    stats = await receiver.wait_for(expected, timeout)
    return Latency(
        f"isthmus, {hut.database}",
        rate,
        achieved,
        events,
        stats["unique"],
        expected,
        stats["latencies"],
    )


async def warm_up(hut: HubUnderTest, receiver: ReceiverProcess, subscriptions: int) -> None:
    """A few events first: pools, connections and caches open before anything is timed,
    published as the phases publish (batches, and single events ``PUBLISHERS`` at a time, so
    the connections the latency phase uses at once are open too)."""
    await receiver.reset()
    for first in range(0, 50, 10):
        await hut.publish_batch(first, 10)
    gate = asyncio.Semaphore(PUBLISHERS)

    async def one(n: int) -> None:
        async with gate:
            await hut.publish_batch(n, 1)

    singles = 4 * PUBLISHERS
    await asyncio.wait_for(asyncio.gather(*(one(50 + i) for i in range(singles))), 30)
    await receiver.wait_for((50 + singles) * subscriptions, 30)


# -- main -------------------------------------------------------------------------------------


async def bench(args: argparse.Namespace) -> int:
    from isthmus.runtime import tune_process

    databases = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    receiver = ReceiverProcess()
    total = args.events * args.subscriptions
    throughputs: list[Throughput] = []
    latencies: list[Latency] = []
    raws: list[Throughput] = []
    overall = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="isthmus-bench-") as tmp:
            print(
                f"isthmus webhook benchmark: {args.events} events x {args.subscriptions} "
                f"subscriptions = {total} deliveries; concurrency {args.concurrency}; "
                f"workers {args.workers}; latency at {args.rate:g} events/s for "
                f"{args.seconds:g} s x {args.latency_subscriptions} subscription(s)",
                flush=True,
            )
            raws.append(
                await raw_sender(receiver, total, args.subscriptions, args.concurrency, 120)
            )
            print(f"  raw sender: {raws[-1].rate:,.0f} deliveries/s", flush=True)
            for database in databases:
                for phase in ("throughput", "latency"):
                    subs = (
                        args.subscriptions if phase == "throughput" else args.latency_subscriptions
                    )
                    hut = HubUnderTest(
                        database,
                        Path(tmp) / phase,
                        args.concurrency,
                        args.workers,
                        args.worker_processes,
                    )
                    try:
                        await hut.start(receiver, subs)
                        await hut.start_workers()
                        await warm_up(hut, receiver, subs)
                        # The publisher here plays the API server, which runs with the
                        # collector tuned as `isthmus serve` tunes it once started.
                        tune_process(hut.hub.store)
                        if phase == "throughput":
                            t = await hub_throughput(
                                hut, receiver, args.events, subs, args.batch, args.timeout
                            )
                            throughputs.append(t)
                            print(
                                f"  {t.label}: {t.rate:,.0f} deliveries/s "
                                f"({t.deliveries}/{t.expected} in {t.seconds:.2f} s)",
                                flush=True,
                            )
                        else:
                            lat = await hub_latency(
                                hut, receiver, args.rate, args.seconds, subs, args.timeout
                            )
                            latencies.append(lat)
                            print(
                                f"  {lat.label}: p50 {lat.pct(50):.1f} ms, "
                                f"p99 {lat.pct(99):.1f} ms",
                                flush=True,
                            )
                    finally:
                        await hut.close()
            raws.append(
                await raw_sender(receiver, total, args.subscriptions, args.concurrency, 120)
            )
            print(f"  raw sender again: {raws[-1].rate:,.0f} deliveries/s", flush=True)
    finally:
        await receiver.stop()

    raw = max(raws, key=lambda r: r.rate)  # the better raw run: the stricter ratio
    print()
    print(
        f"Deliveries per second, end to end (first publish/send to last verified receipt), "
        f"{total} deliveries, concurrency {args.concurrency}:"
    )
    print(
        f"  {'sender':<24} {'deliveries':>11} {'seconds':>8} {'per s':>9} {'x raw':>7} "
        f"{'bad':>4}  publishing took"
    )
    for t in [*raws, *throughputs]:
        print(
            f"  {t.label:<24} {t.deliveries:>5}/{t.expected:<5} {t.seconds:>8.2f} "
            f"{t.rate:>9,.0f} {t.rate / raw.rate:>6.2f}x {t.bad:>4}  "
            + (f"{t.publish_seconds:.2f} s" if t.publish_seconds is not None else "-")
        )
    print()
    print(
        f"Publish-to-receipt latency at {args.rate:g} events/s offered "
        f"({args.latency_subscriptions} subscription(s), {args.seconds:g} s):"
    )
    print(
        f"  {'hub':<24} {'offered/s':>9} {'achieved/s':>10} {'delivered':>11}"
        f" {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"
    )
    for lat in latencies:
        mx = max(lat.latencies) if lat.latencies else float("nan")
        print(
            f"  {lat.label:<24} {lat.offered:>9.0f} {lat.achieved:>10.0f} "
            f"{lat.deliveries:>5}/{lat.expected:<5} {lat.pct(50):>8.1f} {lat.pct(99):>8.1f} "
            f"{mx:>8.1f}"
        )
    print()
    failed = False
    for t in throughputs:
        if t.deliveries < t.expected or t.bad:
            failed = True
            print(f"INCOMPLETE: {t.label}: {t.deliveries}/{t.expected} delivered, {t.bad} bad")
    for lat in latencies:
        if lat.deliveries < lat.expected:
            failed = True
            print(f"INCOMPLETE: {lat.label} latency run: {lat.deliveries}/{lat.expected}")
    pg = [t for t in throughputs if t.label.endswith("postgresql")]
    pg_lat = [lat for lat in latencies if lat.label.endswith("postgresql")]
    for t in pg:
        ratio = t.rate / raw.rate
        verdict = "met" if ratio >= TARGET_RATIO and t.deliveries == t.expected else "NOT met"
        print(
            f"Target isthmus/raw on PostgreSQL >= {TARGET_RATIO}x: {ratio:.2f}x "
            f"({t.rate:,.0f} / {raw.rate:,.0f} deliveries/s): {verdict}"
        )
    for lat in pg_lat:
        p99 = lat.pct(99)
        verdict = "met" if p99 <= TARGET_P99_MS and lat.deliveries == lat.expected else "NOT met"
        print(f"Target p99 on PostgreSQL <= {TARGET_P99_MS:g} ms: {p99:.1f} ms: {verdict}")
    for lat in latencies:
        if not lat.label.endswith("postgresql"):
            p99 = lat.pct(99)
            verdict = (
                "met" if p99 <= TARGET_P99_MS and lat.deliveries == lat.expected else "NOT met"
            )
            print(
                f"(p99 on {lat.label.split(', ')[1]}: {p99:.1f} ms,"
                f" {verdict} against the same target)"
            )
    print(f"\ntotal {time.monotonic() - overall:.0f} s")
    return 1 if failed else 0


def main() -> int:
    if "--_receiver" in sys.argv:
        receiver_main()
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--events",
        type=int,
        default=5000,
        help="events published (default 5000: a window of seconds, not one ramp-up)",
    )
    p.add_argument("--subscriptions", type=int, default=5, help="subscriptions, all on '*' (5)")
    p.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    p.add_argument(
        "--workers",
        choices=["auto", "inprocess", "process"],
        default="auto",
        help="auto (default): in-process runtime.run_workers on SQLite (one process by "
        "design, as `isthmus serve` runs it) and one `isthmus worker` process on PostgreSQL "
        "(as deployed beside `serve --no-workers`); inprocess / process force one "
        "(SQLite is always in-process)",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=32,
        help="worker_concurrency and the raw sender's concurrency (32, the product default)",
    )
    p.add_argument(
        "--worker-processes",
        type=int,
        default=1,
        help="`isthmus worker` processes on PostgreSQL (1)",
    )
    p.add_argument("--rate", type=float, default=500.0, help="offered events/s for latency (500)")
    p.add_argument("--seconds", type=float, default=5.0, help="latency run length (5)")
    p.add_argument(
        "--latency-subscriptions",
        type=int,
        default=1,
        help="subscriptions during the latency run (1: 500 deliveries/s)",
    )
    p.add_argument("--batch", type=int, default=100, help="events per publish transaction (100)")
    p.add_argument("--timeout", type=float, default=120.0, help="per phase, seconds (120)")
    args = p.parse_args()
    return asyncio.run(bench(args))


if __name__ == "__main__":
    sys.exit(main())
