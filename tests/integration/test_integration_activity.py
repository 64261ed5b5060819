"""An integration's request log and metrics, on both stores: calls recorded through
``RequestLog`` (as the API client reports them) read back through the API, exactly; the log
filtered and paged; other tenants kept out; retention; and the Prometheus export showing the
same figures."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from api_support import (
    INTEGRATIONS,
    app_client,
    assert_problem,
    bearer,
    create_integration,
    key_for,
    walk,
)
from prometheus_client.parser import text_string_to_metric_families
from webhook_support import PUBLIC_URL, create_webhook

from isthmus.config import Settings
from isthmus.connectors import request_log_retention as retention
from isthmus.connectors.request_log import RequestLog
from isthmus.connectors.types import CallRecord, LogLevel
from isthmus.domain.jobs import JobStatus
from isthmus.hub import Hub
from isthmus.services.access import IssuedKey
from isthmus.store import queue
from isthmus.store.claim import claim
from isthmus.store.tables import jobs
from isthmus.store.types import utcnow
from isthmus.worker import Worker

DAY = timedelta(days=1)


def _call(
    at: datetime,
    status: int | None,
    duration_ms: float,
    *,
    url: str = "https://api.example.com/v1/contacts",
    level: LogLevel = "info",
    error_class: str | None = None,
    message: str | None = None,
    method: str = "GET",
) -> CallRecord:
    return CallRecord(
        at=at,
        method=method,
        url=url,
        status=status,
        duration_ms=duration_ms,
        bytes=100,
        error_class=error_class,
        message=message,
        level=level,
    )


@pytest.fixture
async def integration(api: httpx.AsyncClient) -> str:
    created = await create_integration(api)
    return str(created["id"])


@pytest.fixture
def tenant_id(admin_key: IssuedKey) -> str:
    return admin_key.key.tenant_id


def _recorder(hub: Hub, tenant_id: str, integration: str) -> RequestLog:
    return RequestLog(hub.store, tenant_id, integration)


#: 20 calls lasting 1..20 ms: 16 answered 2xx, then a 404, two 500s, one with no answer.
START = utcnow().replace(microsecond=0) - timedelta(hours=1)
KNOWN = [
    _call(START + timedelta(minutes=i), 200 if i < 15 else 201, i + 1.0) for i in range(16)
] + [
    _call(START + timedelta(minutes=16), 404, 17.0, level="warn", error_class="not_found"),
    _call(START + timedelta(minutes=17), 500, 18.0, level="error", error_class="unavailable"),
    _call(START + timedelta(minutes=18), 500, 19.0, level="error", error_class="unavailable"),
    _call(
        START + timedelta(minutes=19),
        None,
        20.0,
        level="error",
        error_class="timeout",
        message="no answer in 10 s",
    ),
]


async def test_metrics_are_exact_for_a_known_set_of_calls(
    api: httpx.AsyncClient, hub: Hub, tenant_id: str, integration: str
) -> None:
    path = f"{INTEGRATIONS}/{integration}/metrics"
    empty = await api.get(path)
    assert empty.status_code == 200, empty.text
    assert empty.json() == {
        "totalRequests": 0,
        "successfulRequests": 0,
        "failedRequests": 0,
        "successRate": None,
        "errorRate": None,
        "averageResponseTime": None,
        "p95ResponseTime": None,
        "lastActivity": None,
    }

    record = _recorder(hub, tenant_id, integration)
    # At once, as a busy client reports them: written together, none lost.
    await asyncio.gather(*(record(call) for call in KNOWN))

    got = (await api.get(path)).json()
    assert got["totalRequests"] == 20
    assert got["successfulRequests"] == 16
    assert got["failedRequests"] == 4
    assert got["successRate"] == 80.0
    assert got["errorRate"] == 20.0
    assert got["averageResponseTime"] == 10.5  # (1 + ... + 20) / 20
    assert got["p95ResponseTime"] == 19.0  # nearest rank: the 19th of 20
    last = datetime.fromisoformat(got["lastActivity"].replace("Z", "+00:00"))
    assert last == START + timedelta(minutes=19)

    # Counted from a moment on: the last four calls only, 17..20 ms, none a success.
    since = (START + timedelta(minutes=16)).isoformat()
    recent = (await api.get(path, params={"since": since})).json()
    assert recent["totalRequests"] == 4 and recent["successRate"] == 0.0
    assert recent["averageResponseTime"] == 18.5 and recent["p95ResponseTime"] == 20.0


async def test_p95_of_one_call_and_of_a_hundred(
    api: httpx.AsyncClient, hub: Hub, tenant_id: str
) -> None:
    one = (await create_integration(api, name="One"))["id"]
    hundred = (await create_integration(api, name="Hundred"))["id"]
    await _recorder(hub, tenant_id, one)(_call(START, 200, 42.0))
    record = _recorder(hub, tenant_id, hundred)
    # Recorded in no particular order of duration.
    await asyncio.gather(*(record(_call(START, 200, float(ms))) for ms in range(100, 0, -1)))

    assert (await api.get(f"{INTEGRATIONS}/{one}/metrics")).json()["p95ResponseTime"] == 42.0
    got = (await api.get(f"{INTEGRATIONS}/{hundred}/metrics")).json()
    assert got["p95ResponseTime"] == 95.0 and got["averageResponseTime"] == 50.5


async def test_logs_filter_by_level_text_and_time_and_page(
    api: httpx.AsyncClient, hub: Hub, tenant_id: str, integration: str
) -> None:
    record = _recorder(hub, tenant_id, integration)
    for call in KNOWN:
        await record(call)
    path = f"{INTEGRATIONS}/{integration}/logs"

    everything = await walk(api, path, limit=3)
    assert len(everything) == 20
    # Newest first, with every field of the call.
    assert [e["durationMs"] for e in everything] == [float(ms) for ms in range(20, 0, -1)]
    newest = everything[0]
    assert newest["level"] == "error" and newest["method"] == "GET"
    assert newest["statusCode"] is None and newest["errorClass"] == "timeout"
    assert newest["message"] == "no answer in 10 s" and newest["bytes"] == 100
    assert newest["url"] == "https://api.example.com/v1/contacts"

    async def durations(**params: Any) -> list[float]:
        return [e["durationMs"] for e in await walk(api, path, **params)]

    assert await durations(level="error") == [20.0, 19.0, 18.0]
    assert await durations(level="warn") == [20.0, 19.0, 18.0, 17.0]
    assert len(await durations(level="info")) == 20
    assert len(await durations(level="debug")) == 20
    assert await durations(q="NO ANSWER") == [20.0]  # the message, any case
    since = (START + timedelta(minutes=18)).isoformat()
    assert await durations(since=since) == [20.0, 19.0]
    assert await durations(since=since, level="error", limit=1) == [20.0, 19.0]


async def test_the_log_searches_urls_and_keeps_no_secret(
    api: httpx.AsyncClient, hub: Hub, tenant_id: str, integration: str
) -> None:
    record = _recorder(hub, tenant_id, integration)
    await record(_call(START, 200, 5.0, url="https://api.example.com/v1/deals?page=2"))
    await record(
        _call(START, 200, 6.0, url="https://api.example.com/v1/contacts?api_key=sk_live_1&page=3")
    )
    # A literal % in the search is text, not a wildcard.
    await record(_call(START, 200, 7.0, url="https://api.example.com/v1/100%25?x=1"))
    path = f"{INTEGRATIONS}/{integration}/logs"

    (deals,) = await walk(api, path, q="/DEALS")
    assert deals["url"] == "https://api.example.com/v1/deals?page=2"
    (contacts,) = await walk(api, path, q="contacts")
    assert "sk_live_1" not in contacts["url"] and "page=3" in contacts["url"]
    assert await walk(api, path, q="sk_live") == []
    assert [e["durationMs"] for e in await walk(api, path, q="%")] == [7.0]


async def test_awkward_calls_are_kept(
    api: httpx.AsyncClient, hub: Hub, tenant_id: str, integration: str
) -> None:
    record = _recorder(hub, tenant_id, integration)
    await record(
        _call(
            START,
            400,
            3.0,
            method="post",
            error_class="rejected",
            message="bad \x00 byte " + "x" * 5000,
        )
    )
    (entry,) = await walk(api, f"{INTEGRATIONS}/{integration}/logs")
    assert entry["method"] == "POST"
    assert entry["message"].startswith("bad  byte x") and len(entry["message"]) == 2000


async def test_a_call_of_a_deleted_integration_is_dropped_not_raised(
    api: httpx.AsyncClient, hub: Hub, tenant_id: str, integration: str
) -> None:
    record = _recorder(hub, tenant_id, integration)
    assert (await api.delete(f"{INTEGRATIONS}/{integration}")).status_code == 204
    await record(_call(START, 200, 1.0))  # no exception: the log never fails a call
    assert_problem(await api.get(f"{INTEGRATIONS}/{integration}/logs"), 404)


async def test_another_tenant_sees_nothing(
    api: httpx.AsyncClient, hub: Hub, settings: Settings, tenant_id: str, integration: str
) -> None:
    await _recorder(hub, tenant_id, integration)(_call(START, 200, 1.0))
    other = await hub.access.create_tenant("other")
    reader = bearer(await key_for(hub, other.id, "read"))
    for what in ("metrics", "logs"):
        assert_problem(await api.get(f"{INTEGRATIONS}/{integration}/{what}", headers=reader), 404)
        assert_problem(await api.get(f"{INTEGRATIONS}/int_missing/{what}"), 404)
    # A read key of the owner is enough.
    own_reader = bearer(await key_for(hub, tenant_id, "read"))
    ok = await api.get(f"{INTEGRATIONS}/{integration}/logs", headers=own_reader)
    assert ok.status_code == 200 and len(ok.json()["data"]) == 1
    async with app_client(settings, hub) as anonymous:
        assert_problem(await anonymous.get(f"{INTEGRATIONS}/{integration}/metrics"), 401)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"level": "warning"}, "level"),
        ({"level": "ERROR"}, "level"),
        ({"since": "yesterday"}, "since"),
        ({"since": "2026-01-31T12:00:00"}, "since"),  # no time zone
        ({"limit": "0"}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
    ],
)
async def test_bad_queries_are_422(
    api: httpx.AsyncClient, integration: str, params: dict[str, str], field: str
) -> None:
    response = await api.get(f"{INTEGRATIONS}/{integration}/logs", params=params)
    assert_problem(response, 422, {field})


async def test_metrics_since_needs_a_time_zone(api: httpx.AsyncClient, integration: str) -> None:
    response = await api.get(
        f"{INTEGRATIONS}/{integration}/metrics", params={"since": "2026-01-31T12:00:00"}
    )
    assert_problem(response, 422, {"since"})


# -- retention -------------------------------------------------------------------------------

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


async def test_retention_deletes_only_old_entries(
    api: httpx.AsyncClient, hub: Hub, tenant_id: str, integration: str
) -> None:
    assert hub.settings.integration_log_retention_days == 14
    record = _recorder(hub, tenant_id, integration)
    for at, ms in [
        (NOW - 40 * DAY, 1.0),
        (NOW - 15 * DAY, 2.0),
        (NOW - 14 * DAY - timedelta(milliseconds=1), 3.0),
    ]:
        await record(_call(at, 200, ms))
    for at, ms in [(NOW - 14 * DAY + timedelta(seconds=1), 4.0), (NOW - DAY, 5.0)]:
        await record(_call(at, 200, ms))

    assert await retention.purge(hub.store, 14, now=NOW, batch=2) == 3

    left = await walk(api, f"{INTEGRATIONS}/{integration}/logs")
    assert [e["durationMs"] for e in left] == [5.0, 4.0]
    assert await retention.purge(hub.store, 14, now=NOW) == 0


async def test_the_retention_job_purges_and_schedules_its_next_run(
    api: httpx.AsyncClient, hub: Hub, tenant_id: str, integration: str
) -> None:
    record = _recorder(hub, tenant_id, integration)
    await record(_call(NOW - 20 * DAY, 200, 1.0))
    await record(_call(NOW - DAY, 200, 2.0))

    assert await retention.ensure_scheduled(hub.store, now=NOW) is True
    assert await retention.ensure_scheduled(hub.store, now=NOW) is False  # one is queued
    worker = Worker(hub.store, clock=lambda: NOW)
    days = hub.settings.integration_log_retention_days, hub.settings.sync_run_retention_days
    worker.register(retention.KIND, retention.handler(*days))
    assert await worker.run_pending() == 1

    left = await walk(api, f"{INTEGRATIONS}/{integration}/logs")
    assert [e["durationMs"] for e in left] == [2.0]
    async with hub.store.read() as conn:
        ids = await conn.execute(
            sa.select(jobs.c.id).where(jobs.c.kind == retention.KIND).order_by(jobs.c.id)
        )
        found = [await queue.get(conn, i) for i in list(ids.scalars())]
    assert [(j.status, j.run_at) for j in found if j is not None] == [
        (JobStatus.DONE, NOW),
        (JobStatus.QUEUED, NOW + retention.INTERVAL),
    ]


# -- the Prometheus export ---------------------------------------------------------------------


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def test_prometheus_shows_the_same_figures_without_a_key(
    api: httpx.AsyncClient,
    hub: Hub,
    settings: Settings,
    tenant_id: str,
    integration: str,
) -> None:
    await asyncio.gather(*(_recorder(hub, tenant_id, integration)(c) for c in KNOWN))
    quiet = (await create_integration(api, name="Quiet"))["id"]
    await create_webhook(api, url=PUBLIC_URL, events=["*"])
    for _ in range(2):
        published = await api.post("/api/v1/events", json={"type": "contact.created", "data": {}})
        assert published.status_code == 202, published.text

    async with app_client(settings, hub) as anonymous:
        response = await anonymous.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = _samples(response.text)

    labels = (("integration", integration), ("provider", "api_endpoint"), ("tenant", tenant_id))

    def value(name: str, *extra: tuple[str, str]) -> float:
        return samples[(name, tuple(sorted(labels + extra)))]

    assert value("isthmus_integration_requests", ("outcome", "success")) == 16
    assert value("isthmus_integration_requests", ("outcome", "failure")) == 4
    assert value("isthmus_integration_response_seconds_average") == pytest.approx(0.0105)
    assert value("isthmus_integration_response_seconds_p95") == pytest.approx(0.019)
    last = START + timedelta(minutes=19)
    assert value("isthmus_integration_last_activity_timestamp_seconds") == last.timestamp()
    # An integration without calls has no call figures yet; its health is unknown.
    assert not any(
        ("integration", quiet) in key for name, key in samples if "_integration_re" in name
    )
    quiet_labels = (("integration", quiet), ("provider", "api_endpoint"), ("tenant", tenant_id))
    assert samples[("isthmus_integration_health", (("health", "unknown"), *quiet_labels))] == 1
    deliveries = (("status", "pending"), ("tenant", tenant_id))
    assert samples[("isthmus_webhook_deliveries", deliveries)] == 2

    # The same as the API says.
    api_figures = (await api.get(f"{INTEGRATIONS}/{integration}/metrics")).json()
    assert api_figures["p95ResponseTime"] / 1000 == pytest.approx(
        value("isthmus_integration_response_seconds_p95")
    )


async def test_prometheus_shows_what_waits_in_the_queue(
    api: httpx.AsyncClient, hub: Hub, settings: Settings
) -> None:
    # Two deliveries due now (no worker runs here), a job for later, one that has waited
    # a minute and a half, and one a worker holds.
    await create_webhook(api, url=PUBLIC_URL, events=["*"])
    for _ in range(2):
        published = await api.post("/api/v1/events", json={"type": "contact.created", "data": {}})
        assert published.status_code == 202, published.text
    now = utcnow()
    async with hub.store.transaction() as conn:
        await queue.enqueue(conn, kind="test.later", payload={}, run_at=now + timedelta(hours=1))
        await queue.enqueue(
            conn, kind="test.waiting", payload={}, run_at=now - timedelta(seconds=90)
        )
        await queue.enqueue(conn, kind="test.held", payload={})
    assert len(await claim(hub.store, limit=5, lease_seconds=30, kinds=["test.held"])) == 1

    async with app_client(settings, hub) as anonymous:
        samples = _samples((await anonymous.get("/metrics")).text)

    def jobs_of(kind: str) -> dict[str, float]:
        return {
            state: samples[("isthmus_jobs", (("kind", kind), ("state", state)))]
            for state in ("due", "scheduled", "running")
        }

    assert jobs_of("webhook.deliver") == {"due": 2, "scheduled": 0, "running": 0}
    assert jobs_of("test.later") == {"due": 0, "scheduled": 1, "running": 0}
    assert jobs_of("test.waiting") == {"due": 1, "scheduled": 0, "running": 0}
    assert jobs_of("test.held") == {"due": 0, "scheduled": 0, "running": 1}
    waited = {
        kind: samples[("isthmus_jobs_oldest_due_seconds", (("kind", kind),))]
        for kind in ("webhook.deliver", "test.later", "test.waiting", "test.held")
    }
    assert 90 <= waited["test.waiting"] < 90 + 60, waited
    assert 0 <= waited["webhook.deliver"] < 60, waited
    assert waited["test.later"] == waited["test.held"] == 0, waited
