"""Polling settings (``/api/v1/integrations/{id}/polling``), the scheduler's hand-out of due
syncs, and what the end of a run does: backoff, auto-disable, health, events, audit.

Time is a fake clock the test moves. The sync run handler is played by a scripted stand-in
that ends each run with the next outcome of its script through ``record_outcome_in``, as
the real handler does.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from api_support import assert_problem, audit_rows, create_integration, key_for
from webhook_support import create_webhook

from isthmus.config import load_settings
from isthmus.domain.auth import Actor
from isthmus.domain.ids import new_id
from isthmus.domain.integrations import Health, IntegrationStatus, IntegrationType
from isthmus.domain.records import Integration
from isthmus.domain.schedule import parse_schedule
from isthmus.errors import (
    Conflict,
    ReauthorizationNeeded,
    UpstreamAuthError,
    UpstreamUnavailable,
)
from isthmus.hub import Hub
from isthmus.scheduler import run_scheduler, tick
from isthmus.services.access import IssuedKey
from isthmus.services.polling import Outcome, record_outcome_in
from isthmus.store import integrations as integrations_repo
from isthmus.store import migrate, sync_runs
from isthmus.store import polling as polling_repo
from isthmus.store.polling import PollingRow
from isthmus.store.sync_runs import SYNC_KIND, RunCounts, Trigger
from isthmus.store.tables import deliveries, events, jobs, polling_settings
from isthmus.store.types import utcnow
from isthmus.worker import Job, Worker
from pg_support import create_postgres_database, drop_postgres_database


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None


def due(answer: dict[str, Any]) -> datetime:
    """The next poll time a polling answer shows (there must be one)."""
    found = when(answer["nextPollAt"])
    assert found is not None, answer
    return found


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock(hub: Hub) -> Clock:
    fake = Clock(at("2026-01-15 09:30"))
    hub.polling.clock = fake
    return fake


def polling(integration_id: str) -> str:
    return f"/api/v1/integrations/{integration_id}/polling"


async def get_polling(api: httpx.AsyncClient, integration_id: str) -> dict[str, Any]:
    response = await api.get(polling(integration_id))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def put_polling(api: httpx.AsyncClient, integration_id: str, **body: Any) -> dict[str, Any]:
    response = await api.put(polling(integration_id), json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def get_integration(api: httpx.AsyncClient, integration_id: str) -> dict[str, Any]:
    response = await api.get(f"/api/v1/integrations/{integration_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


class ScriptedSync:
    """Stands in for the sync run handler: starts the run, then ends it with the next
    outcome of ``script`` in the transaction that completes the job."""

    def __init__(self, hub: Hub, clock: Clock) -> None:
        self.script: list[Outcome] = []
        self.ran: list[str] = []
        self.worker = Worker(hub.store, clock=clock)
        self.worker.register(SYNC_KIND, self.handle)

    async def handle(self, job: Job) -> None:
        run_id = job.payload["runId"]
        self.ran.append(run_id)
        async with job.store.transaction() as conn:
            assert await sync_runs.start(conn, run_id, now=job.clock())
        outcome = self.script.pop(0)
        async with job.store.transaction() as conn:
            await record_outcome_in(conn, str(job.tenant_id), run_id, outcome, now=job.clock())
            await job.complete_in(conn)

    async def run(self, *outcomes: Outcome) -> int:
        self.script = list(outcomes)
        ran = await self.worker.run_pending()
        assert self.script == [], "runs expected but not queued"
        return ran


@pytest.fixture
def sync(hub: Hub, clock: Clock) -> ScriptedSync:
    return ScriptedSync(hub, clock)


async def poll_when_due(hub: Hub, clock: Clock, answer: dict[str, Any]) -> None:
    """Move the clock to the poll time ``answer`` shows; the scheduler hands out that poll,
    and not a moment before."""
    assert await tick(hub.store, now=due(answer) - timedelta(seconds=1)) == []
    clock.now = due(answer)
    [handed] = await tick(hub.store, now=clock.now)
    assert handed.run_id is not None


def unavailable(text: str = "503 from the contacts API") -> UpstreamUnavailable:
    return UpstreamUnavailable(text, status=503)


async def table_rows(hub: Hub, table: sa.Table) -> list[dict[str, Any]]:
    async with hub.store.read() as conn:
        return [dict(r._mapping) for r in await conn.execute(sa.select(table))]


# -- settings ------------------------------------------------------------------------------


async def test_before_any_settings_polling_is_off_with_the_defaults(
    api: httpx.AsyncClient,
) -> None:
    integration = await create_integration(api)

    assert await get_polling(api, integration["id"]) == {
        "enabled": False,
        "frequency": "daily",
        "cron": None,
        "timeOfDay": "02:00",
        "dayOfWeek": None,
        "dayOfMonth": None,
        "timezone": "UTC",
        "maxRetries": 3,
        "nextPollAt": None,
        "lastPollAt": None,
        "lastRunStatus": None,
        "health": "unknown",
        "retryCount": 0,
    }


async def test_put_sets_the_schedule_and_answers_the_next_poll(
    api: httpx.AsyncClient, clock: Clock
) -> None:
    integration = await create_integration(api)
    clock.now = at("2026-03-28 12:00")

    # Left out: the defaults, polling on.
    default = await put_polling(api, integration["id"])
    assert (default["enabled"], default["frequency"], default["timeOfDay"]) == (
        True,
        "daily",
        "02:00",
    )
    assert when(default["nextPollAt"]) == at("2026-03-29 02:00")

    # 02:30 in Berlin does not exist on 29 March: the first instant after the gap.
    berlin = await put_polling(
        api, integration["id"], frequency="daily", timeOfDay="02:30", timezone="Europe/Berlin"
    )
    assert when(berlin["nextPollAt"]) == at("2026-03-29 01:00")
    assert berlin["timezone"] == "Europe/Berlin"

    weekly = await put_polling(
        api, integration["id"], frequency="weekly", dayOfWeek=0, timeOfDay="09:00"
    )
    assert (weekly["dayOfWeek"], weekly["dayOfMonth"]) == (0, None)
    assert when(weekly["nextPollAt"]) == at("2026-03-30 09:00")
    # The same day by name: the same settings, answered with its number.
    named = await put_polling(
        api, integration["id"], frequency="weekly", dayOfWeek="Monday", timeOfDay="09:00"
    )
    assert (named["dayOfWeek"], named["nextPollAt"]) == (0, weekly["nextPollAt"])
    sunday = await put_polling(
        api, integration["id"], frequency="weekly", dayOfWeek="sun", timeOfDay="09:00"
    )
    assert (sunday["dayOfWeek"], when(sunday["nextPollAt"])) == (6, at("2026-03-29 09:00"))

    monthly = await put_polling(api, integration["id"], frequency="monthly", dayOfMonth=31)
    assert when(monthly["nextPollAt"]) == at("2026-03-31 02:00")

    cron = await put_polling(api, integration["id"], frequency="0 */6 * * *", maxRetries=5)
    assert (cron["frequency"], cron["cron"], cron["timeOfDay"]) == ("cron", "0 */6 * * *", None)
    assert (cron["maxRetries"], when(cron["nextPollAt"])) == (5, at("2026-03-28 18:00"))

    off = await put_polling(api, integration["id"], enabled=False, frequency="hourly")
    assert (off["enabled"], off["nextPollAt"], off["timeOfDay"]) == (False, None, "00:00")
    assert await get_polling(api, integration["id"]) == off


async def test_every_settings_change_is_audited_once(api: httpx.AsyncClient, clock: Clock) -> None:
    integration = await create_integration(api)
    await put_polling(api, integration["id"], frequency="hourly")
    clock.now += timedelta(hours=3)
    again = await put_polling(api, integration["id"], frequency="hourly")
    await put_polling(api, integration["id"], frequency="hourly", timezone="Asia/Tokyo")

    # The same settings again change nothing, the next poll time included.
    assert when(again["nextPollAt"]) == at("2026-01-15 10:00")
    rows = await audit_rows(api, action="integration.polling.update")
    assert [r["resourceId"] for r in rows] == [integration["id"]] * 2
    newest, first = rows
    assert newest["diff"] == {"timezone": {"from": "UTC", "to": "Asia/Tokyo"}}
    assert first["diff"]["frequency"] == {"from": None, "to": "hourly"}
    assert first["diff"]["enabled"] == {"from": None, "to": True}
    assert first["actor"].startswith("key_")


BAD_SETTINGS: list[tuple[dict[str, Any], set[str]]] = [
    ({"timezone": "Mars/Olympus_Mons"}, {"timezone"}),
    ({"timeOfDay": "7pm"}, {"timeOfDay"}),
    ({"frequency": "weekly"}, {"dayOfWeek"}),
    ({"frequency": "weekly", "dayOfWeek": "funday"}, {"dayOfWeek"}),
    ({"frequency": "weekly", "dayOfWeek": 1.5}, {"dayOfWeek"}),
    ({"frequency": "monthly", "dayOfMonth": 32}, {"dayOfMonth"}),
    ({"frequency": "fortnightly"}, {"frequency"}),
    ({"frequency": "cron"}, {"cron"}),
    ({"frequency": "cron", "cron": "*/5 * * * *"}, {"cron"}),
    ({"frequency": "*/5 * * * *"}, {"frequency"}),
    ({"maxRetries": 11}, {"maxRetries"}),
    ({"maxRetries": -1}, {"maxRetries"}),
    ({"enabled": "yes"}, {"enabled"}),
    ({"every": "day"}, {"every"}),
    (
        {"frequency": "weekly", "timezone": "Nowhere", "timeOfDay": "25:00"},
        {"timezone", "timeOfDay", "dayOfWeek"},
    ),
]


async def test_bad_settings_are_refused_naming_the_fields(api: httpx.AsyncClient) -> None:
    integration = await create_integration(api)
    for body, fields in BAD_SETTINGS:
        response = await api.put(polling(integration["id"]), json=body)

        problem = assert_problem(response, 422, fields)
        if "*/5" in str(body):
            assert "more often than every 10 minutes" in problem["detail"], problem
    # Nothing was written.
    assert (await get_polling(api, integration["id"]))["enabled"] is False
    assert await audit_rows(api, action="integration.polling.update") == []


async def test_unknown_integrations_and_missing_scopes(
    api: httpx.AsyncClient, hub: Hub, admin_key: IssuedKey
) -> None:
    integration = await create_integration(api)
    missing = "int_01jzzzzzzzzzzzzzzzzzzzzzzz"
    assert_problem(await api.get(polling(missing)), 404)
    assert_problem(await api.put(polling(missing), json={}), 404)

    reader = await key_for(hub, admin_key.key.tenant_id, "read")
    as_reader = {"Authorization": f"Bearer {reader}"}
    assert (await api.get(polling(integration["id"]), headers=as_reader)).status_code == 200
    refused = await api.put(polling(integration["id"]), json={}, headers=as_reader)
    assert_problem(refused, 403)


# -- the scheduler -------------------------------------------------------------------------


async def test_a_due_poll_is_handed_out_once_with_its_run_and_job(
    api: httpx.AsyncClient, hub: Hub, clock: Clock
) -> None:
    integration = await create_integration(api)
    answer = await put_polling(api, integration["id"], frequency="hourly", timeOfDay="00:15")
    assert when(answer["nextPollAt"]) == at("2026-01-15 10:15")

    await poll_when_due(hub, clock, answer)
    # Due again only at the next slot, although the run has not even started.
    assert await tick(hub.store, now=clock.now + timedelta(minutes=30)) == []

    [run] = await table_rows(hub, sync_runs.sync_runs)
    [job] = await table_rows(hub, jobs)
    assert (run["status"], run["trigger"], run["attempt"]) == ("queued", "schedule", 1)
    assert (job["kind"], job["group_key"]) == (SYNC_KIND, integration["id"])
    assert job["payload"] == {"runId": run["id"], "integrationId": integration["id"]}
    shown = await get_polling(api, integration["id"])
    assert when(shown["lastPollAt"]) == at("2026-01-15 10:15")
    assert when(shown["nextPollAt"]) == at("2026-01-15 11:15")
    assert shown["lastRunStatus"] == "queued"


async def test_one_integration_never_has_two_runs_at_a_time(
    api: httpx.AsyncClient, hub: Hub, clock: Clock, admin_key: IssuedKey
) -> None:
    integration = await create_integration(api)
    answer = await put_polling(api, integration["id"], frequency="hourly")
    actor = Actor(admin_key.key.tenant_id, "test")

    manual = await hub.polling.request_sync(actor, integration["id"])
    joined = await hub.polling.request_sync(actor, integration["id"], Trigger.API)
    assert manual.created and not joined.created
    assert joined.run.id == manual.run.id

    # The scheduled poll finds the manual run queued: no second run, the schedule goes on.
    clock.now = due(answer)
    [handed] = await tick(hub.store, now=clock.now)
    assert handed.run_id is None
    assert handed.next_poll_at == at("2026-01-15 11:00")
    assert len(await table_rows(hub, sync_runs.sync_runs)) == 1
    assert len(await table_rows(hub, jobs)) == 1
    requests = await audit_rows(api, action="integration.sync.request")
    assert [r["diff"] for r in requests] == [{"runId": manual.run.id, "trigger": "manual"}]

    disabled = await create_integration(api, name="switched off", enabled=False)
    with pytest.raises(Conflict):
        await hub.polling.request_sync(actor, disabled["id"])


async def test_a_disabled_integration_is_not_polled(
    api: httpx.AsyncClient, hub: Hub, clock: Clock
) -> None:
    integration = await create_integration(api)
    answer = await put_polling(api, integration["id"], frequency="hourly")
    assert (await api.post(f"/api/v1/integrations/{integration['id']}/disable")).is_success
    shown = await get_polling(api, integration["id"])
    assert (shown["enabled"], shown["nextPollAt"]) == (True, None)  # no poll is coming

    clock.now = due(answer)
    assert await tick(hub.store, now=clock.now) == []
    # Enabled again, the missed poll runs once, and the schedule goes on from then.
    assert (await api.post(f"/api/v1/integrations/{integration['id']}/enable")).is_success
    assert (await get_polling(api, integration["id"]))["nextPollAt"] == answer["nextPollAt"]
    clock.now += timedelta(hours=5, minutes=7)
    [handed] = await tick(hub.store, now=clock.now)
    assert handed.run_id is not None
    assert handed.next_poll_at == at("2026-01-15 16:00")


async def test_the_scheduler_loop_hands_out_due_polls_until_stopped(
    api: httpx.AsyncClient, hub: Hub, clock: Clock
) -> None:
    integration = await create_integration(api)
    answer = await put_polling(api, integration["id"], frequency="hourly")
    clock.now = due(answer)
    stop = asyncio.Event()
    loop = asyncio.create_task(run_scheduler(hub, stop, tick_seconds=0.02, clock=clock))
    try:
        for _ in range(250):
            if await table_rows(hub, sync_runs.sync_runs):
                break
            await asyncio.sleep(0.02)
    finally:
        stop.set()
        await asyncio.wait_for(loop, timeout=5)
    [run] = await table_rows(hub, sync_runs.sync_runs)
    assert (run["integration_id"], run["trigger"]) == (integration["id"], "schedule")


# -- failures: backoff, auto-disable, reauthorization --------------------------------------


@pytest.mark.parametrize(
    ("max_retries", "delays"), [(3, [5, 10, 20]), (4, [5, 10, 20, 40]), (0, [])]
)
async def test_failed_runs_back_off_then_polling_is_disabled_and_announced(
    api: httpx.AsyncClient,
    hub: Hub,
    clock: Clock,
    sync: ScriptedSync,
    max_retries: int,
    delays: list[int],
) -> None:
    watcher = await create_webhook(api, name="watcher", events=["integration.disabled"])
    integration = await create_integration(api, name="Flaky API")
    answer = await put_polling(api, integration["id"], frequency="hourly", maxRetries=max_retries)

    for retry, minutes in enumerate(delays, start=1):
        await poll_when_due(hub, clock, answer)
        assert await sync.run(Outcome(error=unavailable())) == 1
        answer = await get_polling(api, integration["id"])
        assert when(answer["nextPollAt"]) == clock.now + timedelta(minutes=minutes)
        assert (answer["retryCount"], answer["enabled"]) == (retry, True)
        assert (answer["health"], answer["lastRunStatus"]) == ("warning", "failed")
        shown = await get_integration(api, integration["id"])
        assert (shown["status"], shown["health"]) == ("configuring", "warning")

    # One failure more than maxRetries allows.
    await poll_when_due(hub, clock, answer)
    assert await sync.run(Outcome(error=unavailable("503 again"))) == 1

    answer = await get_polling(api, integration["id"])
    assert (answer["enabled"], answer["nextPollAt"], answer["health"]) == (False, None, "error")
    shown = await get_integration(api, integration["id"])
    assert (shown["status"], shown["health"]) == ("error", "error")
    reason = f"polling disabled after {max_retries + 1} failed runs in a row: 503 again"
    assert shown["statusMessage"] == reason
    # Nothing more is handed out, however late it gets.
    assert await tick(hub.store, now=clock.now + timedelta(days=30)) == []

    [event] = [e for e in await table_rows(hub, events) if e["type"] == "integration.disabled"]
    assert event["data"] == {
        "integrationId": integration["id"],
        "name": "Flaky API",
        "reason": reason,
    }
    [delivery] = [d for d in await table_rows(hub, deliveries) if d["event_id"] == event["id"]]
    assert delivery["subscription_id"] == watcher["id"]

    runs = await audit_rows(api, action="integration.sync.finish")
    assert [r["diff"]["status"] for r in runs] == ["failed"] * (max_retries + 1)
    assert {r["actor"] for r in runs} == {"system"}
    [disabled] = await audit_rows(api, action="integration.polling.disable")
    assert disabled["resourceId"] == integration["id"]
    assert disabled["diff"]["enabled"] == {"from": True, "to": False}
    assert disabled["diff"]["status"] == {"from": "configuring", "to": "error"}


async def test_a_success_clears_the_retries_and_skipped_records_warn(
    api: httpx.AsyncClient, hub: Hub, clock: Clock, sync: ScriptedSync
) -> None:
    integration = await create_integration(api)
    answer = await put_polling(api, integration["id"], frequency="hourly")

    await poll_when_due(hub, clock, answer)  # 10:00
    await sync.run(Outcome(error=unavailable()))
    answer = await get_polling(api, integration["id"])
    assert answer["retryCount"] == 1

    await poll_when_due(hub, clock, answer)  # the retry, 10:05
    skipped = RunCounts(fetched=10, created=8, skipped=2, skipped_reasons={"no email": 2})
    await sync.run(Outcome(skipped))
    answer = await get_polling(api, integration["id"])
    assert (answer["retryCount"], answer["health"]) == (0, "warning")
    assert (answer["lastRunStatus"], when(answer["nextPollAt"])) == (
        "succeeded",
        at("2026-01-15 11:00"),
    )
    [run] = [r for r in await table_rows(hub, sync_runs.sync_runs) if r["status"] == "succeeded"]
    assert (run["attempt"], run["fetched"], run["skipped"]) == (2, 10, 2)
    assert run["skipped_reasons"] == {"no email": 2}

    await poll_when_due(hub, clock, answer)  # 11:00
    await sync.run(Outcome(RunCounts(fetched=10, unchanged=10)))
    answer = await get_polling(api, integration["id"])
    assert answer["health"] == "healthy"
    assert (await get_integration(api, integration["id"]))["health"] == "healthy"


@pytest.mark.parametrize(
    "error",
    [
        ReauthorizationNeeded("the refresh token was revoked (invalid_grant)", status=400),
        UpstreamAuthError("401 from the contacts API", status=401),
    ],
)
async def test_an_auth_failure_goes_straight_to_error_until_fixed(
    api: httpx.AsyncClient,
    hub: Hub,
    clock: Clock,
    sync: ScriptedSync,
    error: Exception,
) -> None:
    await create_webhook(api, name="watcher", events=["integration.disabled"])
    integration = await create_integration(api)
    answer = await put_polling(api, integration["id"], frequency="hourly", maxRetries=3)

    await poll_when_due(hub, clock, answer)
    await sync.run(Outcome(error=error))

    answer = await get_polling(api, integration["id"])
    assert (answer["enabled"], answer["nextPollAt"], answer["retryCount"]) == (False, None, 0)
    shown = await get_integration(api, integration["id"])
    assert (shown["status"], shown["health"]) == ("error", "error")
    assert shown["statusMessage"] == f"reauthorization needed: {error}"
    disabled = [e for e in await table_rows(hub, events) if e["type"] == "integration.disabled"]
    assert [e["data"]["reason"] for e in disabled] == [shown["statusMessage"]]

    # Switched on again: a run that fails (a retry pending) leaves the error as it is ...
    answer = await put_polling(api, integration["id"], frequency="hourly", maxRetries=4)
    await poll_when_due(hub, clock, answer)
    await sync.run(Outcome(error=unavailable()))
    shown = await get_integration(api, integration["id"])
    assert (shown["status"], shown["health"]) == ("error", "warning")
    assert shown["statusMessage"] == f"reauthorization needed: {error}"
    # ... and the next good run lifts it.
    await poll_when_due(hub, clock, await get_polling(api, integration["id"]))
    await sync.run(Outcome(RunCounts(fetched=1, created=1)))
    shown = await get_integration(api, integration["id"])
    assert (shown["status"], shown["health"], shown["statusMessage"]) == (
        "active",
        "healthy",
        None,
    )


async def test_a_first_successful_run_makes_a_configured_integration_active(
    api: httpx.AsyncClient, hub: Hub, clock: Clock, sync: ScriptedSync, admin_key: IssuedKey
) -> None:
    integration = await create_integration(api)
    assert (integration["status"], integration["verifiedAt"]) == ("configuring", None)

    await hub.polling.request_sync(Actor(admin_key.key.tenant_id, "test"), integration["id"])
    await sync.run(Outcome(RunCounts(fetched=3, created=3)))

    shown = await get_integration(api, integration["id"])
    assert (shown["status"], shown["health"], shown["statusMessage"]) == (
        "active",
        "healthy",
        None,
    )
    assert when(shown["verifiedAt"]) == clock.now


async def test_a_failed_manual_run_without_polling_only_sets_health(
    api: httpx.AsyncClient, hub: Hub, clock: Clock, sync: ScriptedSync, admin_key: IssuedKey
) -> None:
    integration = await create_integration(api)
    actor = Actor(admin_key.key.tenant_id, "test")
    await hub.polling.request_sync(actor, integration["id"])
    await sync.run(Outcome(error=unavailable()))

    answer = await get_polling(api, integration["id"])
    assert (answer["enabled"], answer["retryCount"], answer["health"]) == (False, 0, "error")
    assert (await get_integration(api, integration["id"]))["status"] == "configuring"
    assert [e for e in await table_rows(hub, events) if e["type"] == "integration.disabled"] == []


async def test_an_outcome_is_recorded_once(
    api: httpx.AsyncClient, hub: Hub, clock: Clock, admin_key: IssuedKey
) -> None:
    integration = await create_integration(api)
    tenant = admin_key.key.tenant_id
    requested = await hub.polling.request_sync(Actor(tenant, "test"), integration["id"])

    first = await hub.polling.record_outcome(tenant, requested.run.id, Outcome(RunCounts(3, 3)))
    again = await hub.polling.record_outcome(tenant, requested.run.id, Outcome(error=unavailable()))

    assert first is not None and first.status is sync_runs.RunStatus.SUCCEEDED
    assert first.counts.fetched == 3 and first.finished_at == clock.now
    assert again is None
    assert len(await audit_rows(api, action="integration.sync.finish")) == 1
    assert await hub.polling.record_outcome("another tenant", requested.run.id, Outcome()) is None


async def test_runs_are_listed_newest_first_page_by_page(
    api: httpx.AsyncClient, hub: Hub, clock: Clock, admin_key: IssuedKey
) -> None:
    integration = await create_integration(api)
    tenant = admin_key.key.tenant_id
    made: list[str] = []
    for _ in range(5):
        requested = await hub.polling.request_sync(Actor(tenant, "test"), integration["id"])
        made.append(requested.run.id)
        await hub.polling.record_outcome(tenant, requested.run.id, Outcome())

    seen: list[str] = []
    before: str | None = None
    for _ in range(5):
        async with hub.store.read() as conn:
            page = await sync_runs.list_for(conn, tenant, integration["id"], before=before, limit=2)
        seen += [run.id for run in page.items]
        if page.next_cursor is None:
            break
        before = page.items[-1].id
    assert seen == made[::-1]
    async with hub.store.read() as conn:
        latest = await sync_runs.latest(conn, tenant, integration["id"])
        other = await sync_runs.get(conn, "another tenant", made[0])
    assert latest is not None and latest.id == made[-1]
    assert other is None


# -- two scheduler processes on PostgreSQL -------------------------------------------------

PROC = Path(__file__).with_name("scheduler_proc.py")
DUE = 400
WITH_MANUAL_RUN = 40
DEADLINE = 60.0


async def _due_integrations(hub: Hub, tenant_id: str, count: int) -> list[str]:
    """``count`` enabled integrations, polled hourly, each due since an hour ago."""
    now = utcnow()
    ids: list[str] = []
    async with hub.store.transaction() as conn:
        for n in range(count):
            integration = Integration(
                id=new_id("int"),
                tenant_id=tenant_id,
                name=f"source {n}",
                provider="api_endpoint",
                type=IntegrationType.REST_API,
                description="",
                config={"apiEndpoint": f"https://api.example.com/{n}"},
                enabled=True,
                status=IntegrationStatus.ACTIVE,
                health=Health.UNKNOWN,
                created_at=now,
                updated_at=now,
            )
            await integrations_repo.insert(conn, integration)
            row = PollingRow(
                integration_id=integration.id,
                tenant_id=tenant_id,
                enabled=True,
                schedule=parse_schedule(frequency="hourly"),
                max_retries=3,
                retry_count=0,
                next_poll_at=now - timedelta(hours=1),
                last_poll_at=None,
                updated_at=now,
            )
            await polling_repo.put(conn, row)
            ids.append(integration.id)
    return ids


@pytest.mark.postgres
async def test_two_scheduler_processes_hand_out_each_due_sync_exactly_once(
    tmp_path: Path,
) -> None:
    url, name = await create_postgres_database()
    hub = Hub.build(load_settings(home=tmp_path / "home", database_url=url))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        await migrate.upgrade(hub.store)
        issued = await hub.access.bootstrap()
        assert issued is not None
        tenant = issued.key.tenant_id
        integration_ids = await _due_integrations(hub, tenant, DUE)
        # Some already have a manual run queued: they must get no second one.
        manual = integration_ids[:WITH_MANUAL_RUN]
        for integration_id in manual:
            await hub.polling.request_sync(Actor(tenant, "test"), integration_id)
        started = utcnow()

        go = tmp_path / "go"
        logs = [tmp_path / f"scheduler{n}.log" for n in range(2)]
        outs = [tmp_path / f"handed{n}.json" for n in range(2)]
        for log, out in zip(logs, outs, strict=True):
            with log.open("wb") as sink:
                command = [sys.executable, str(PROC), url, str(go), str(out), "10"]
                procs.append(subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + DEADLINE
        while not all("ready" in log.read_text() for log in logs):
            assert time.monotonic() < deadline, [log.read_text()[-2000:] for log in logs]
            assert all(p.poll() is None for p in procs), [log.read_text() for log in logs]
            await asyncio.sleep(0.05)
        go.touch()  # both start ticking at once
        for proc, log in zip(procs, logs, strict=True):
            code = await asyncio.to_thread(proc.wait, DEADLINE)
            assert code == 0, log.read_text()[-3000:]

        handed = [json.loads(out.read_text()) for out in outs]
        # Both processes took part, and every due integration was handed out once in all.
        assert all(handed), [len(h) for h in handed]
        given = Counter(integration_id for h in handed for integration_id, _run in h)
        assert given == Counter(integration_ids)
        runs_handed = {integration_id: run for h in handed for integration_id, run in h}
        assert {i for i, run in runs_handed.items() if run is None} == set(manual)

        async with hub.store.read() as conn:
            runs = (await conn.execute(sa.select(sync_runs.sync_runs))).all()
            queued_jobs = (
                await conn.execute(sa.select(jobs).where(jobs.c.kind == SYNC_KIND))
            ).all()
            rows = (await conn.execute(sa.select(polling_settings))).all()
        # Exactly one run per integration (the manual one where there was one) and one job
        # per run, naming it.
        assert Counter(r.integration_id for r in runs) == Counter(integration_ids)
        by_integration = {r.integration_id: r for r in runs}
        assert {i for i, r in by_integration.items() if r.trigger == "manual"} == set(manual)
        for integration_id, run_id in runs_handed.items():
            if run_id is not None:
                assert by_integration[integration_id].id == run_id
        assert sorted((j.payload["runId"], j.payload["integrationId"]) for j in queued_jobs) == (
            sorted((r.id, r.integration_id) for r in runs)
        )
        assert all(j.group_key == j.payload["integrationId"] for j in queued_jobs)
        # Every schedule moved on past the moment the processes started.
        assert all(r.next_poll_at > started for r in rows)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        await hub.close()
        await drop_postgres_database(name)
