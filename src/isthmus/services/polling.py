"""Polling: an integration's schedule settings, sync requests, and what the end of a run
does to polling, to the integration's status and to its health.

The contract with the sync run handler (job kind ``integration.sync``, payload
``{"runId", "integrationId"}``; the scheduler and ``request_sync`` queue it)::

    async with job.store.transaction() as conn:
        await sync_runs.start(conn, run_id, now=now)          # queued -> running
    ...                                                       # fetch, map, upsert, publish
    async with job.store.transaction() as conn:
        await record_outcome_in(conn, tenant_id, run_id, Outcome(counts, error), now=now)
        await job.complete_in(conn)

``record_outcome_in`` settles the run and applies ``isthmus.domain.schedule.after_run``:
success clears the retries and sets health healthy (warning if records were skipped); a
failure while polling is on schedules retry n after 5, 10, 20, 40 ... minutes (health
warning) and, past ``maxRetries``, switches polling off, sets the integration's status and
health to error and publishes ``integration.disabled``; refused credentials
(``UpstreamAuthError``, ``ReauthorizationNeeded``) go straight there with "reauthorization
needed". The run, the disabling and every settings change are audited.

**A rate limit is not a failure.** A handler that meets one keeps its run as it is
(running, checkpoint saved) and raises ``isthmus.worker.RetryLater(at=...)``: the job comes
back then and resumes. It calls ``record_outcome_in`` only when the run ends, so the wait
counts no retry and leaves health alone; the run, still running, keeps any other from
starting meanwhile.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from isthmus.domain.auth import Actor
from isthmus.domain.integrations import Health, IntegrationStatus
from isthmus.domain.records import Integration
from isthmus.domain.schedule import (
    DEFAULT_FREQUENCY,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEZONE,
    MAX_RETRIES_LIMIT,
    Schedule,
    after_run,
    next_poll_at,
    parse_schedule,
)
from isthmus.errors import (
    Conflict,
    FieldError,
    InvalidInput,
    NotFound,
    OutboundError,
    UpstreamAuthError,
)
from isthmus.services.audit import record
from isthmus.store import integrations as integrations_repo
from isthmus.store import polling as repo
from isthmus.store import queue, sync_runs, sync_state
from isthmus.store.db import Store
from isthmus.store.polling import PollingRow
from isthmus.store.sync_runs import SYNC_KIND, NewRun, RunCounts, RunStatus, SyncRun, Trigger
from isthmus.store.types import utcnow
from isthmus.webhooks.publish import publish

log = logging.getLogger("isthmus.polling")

RESOURCE = "integration"
DISABLED_EVENT = "integration.disabled"
REAUTHORIZE = "reauthorization needed"
#: Who the audit trail names for what the scheduler and the runs do on their own.
SYSTEM = "system"


@dataclass(frozen=True)
class PollingSettings:
    """What a client sets; ``frequency`` may be a cron expression itself (see
    ``parse_schedule``). ``PUT`` semantics: what is left out takes these defaults."""

    enabled: bool = True
    frequency: str = DEFAULT_FREQUENCY
    cron: str | None = None
    time_of_day: str | None = None
    day_of_week: int | None = None
    day_of_month: int | None = None
    timezone: str = DEFAULT_TIMEZONE
    max_retries: int = DEFAULT_MAX_RETRIES


@dataclass(frozen=True)
class PollingView:
    """An integration's polling as the API shows it. Before any settings are saved:
    polling off, the default schedule."""

    integration_id: str
    enabled: bool
    schedule: Schedule
    max_retries: int
    retry_count: int
    next_poll_at: datetime | None
    last_poll_at: datetime | None
    last_run_status: RunStatus | None
    health: Health


@dataclass(frozen=True)
class RequestedSync:
    """The run a sync request got: a new one (``created``), or the one already queued or
    running, which it joins."""

    run: SyncRun
    created: bool


@dataclass(frozen=True)
class Outcome:
    """How a run ended: its counts, and the error that ended it (None: it succeeded)."""

    counts: RunCounts = field(default_factory=RunCounts)
    error: BaseException | None = None

    @property
    def succeeded(self) -> bool:
        return self.error is None

    @property
    def needs_reauthorization(self) -> bool:
        return isinstance(self.error, UpstreamAuthError)

    @property
    def error_class(self) -> str | None:
        if self.error is None:
            return None
        if isinstance(self.error, OutboundError):
            return self.error.error_class
        return type(self.error).__name__[:40]

    @property
    def message(self) -> str | None:
        if self.error is None:
            return None
        return str(self.error) or type(self.error).__name__


# -- settings ------------------------------------------------------------------------------

_SHOWN = {
    "enabled": "enabled",
    "frequency": "frequency",
    "cron": "cron",
    "time_of_day": "timeOfDay",
    "day_of_week": "dayOfWeek",
    "day_of_month": "dayOfMonth",
    "timezone": "timezone",
    "max_retries": "maxRetries",
}


def _shown(row: PollingRow | None) -> dict[str, Any]:
    """The settings of ``row`` under their API names (None: all None)."""
    if row is None:
        return dict.fromkeys(_SHOWN.values())
    values = {**asdict(row.schedule), "enabled": row.enabled, "max_retries": row.max_retries}
    values["frequency"] = str(values["frequency"])
    return {api: values[name] for name, api in _SHOWN.items()}


def _checked(settings: PollingSettings) -> Schedule:
    errors: list[FieldError] = []
    if not 0 <= settings.max_retries <= MAX_RETRIES_LIMIT:
        errors.append(FieldError("maxRetries", f"must be 0 to {MAX_RETRIES_LIMIT}"))
    try:
        schedule = parse_schedule(
            frequency=settings.frequency,
            timezone=settings.timezone,
            time_of_day=settings.time_of_day,
            day_of_week=settings.day_of_week,
            day_of_month=settings.day_of_month,
            cron=settings.cron,
        )
    except InvalidInput as exc:
        errors = exc.errors + errors
    if errors:
        raise InvalidInput("; ".join(f"{e.field}: {e.message}" for e in errors), errors)
    return schedule


class PollingService:
    """Settings and sync requests for the API; ``clock`` is the time everything here uses."""

    def __init__(self, store: Store, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.store = store
        self.clock = clock

    async def get(self, tenant_id: str, integration_id: str) -> PollingView:
        async with self.store.read() as conn:
            integration = await _integration(conn, tenant_id, integration_id)
            return await _view(conn, integration)

    async def put(
        self, actor: Actor, integration_id: str, settings: PollingSettings
    ) -> PollingView:
        """Replace the settings. A change starts the schedule afresh: the next poll is
        computed from now and pending retries are dropped; the same settings again change
        nothing (no write, no audit entry)."""
        schedule = _checked(settings)
        async with self.store.transaction() as conn:
            integration = await _integration(conn, actor.tenant_id, integration_id, lock=True)
            current = await repo.get(conn, actor.tenant_id, integration_id, for_update=True)
            if current is not None and (
                (current.enabled, current.schedule, current.max_retries)
                == (settings.enabled, schedule, settings.max_retries)
            ):
                return await _view(conn, integration)
            now = self.clock()
            row = PollingRow(
                integration_id=integration_id,
                tenant_id=actor.tenant_id,
                enabled=settings.enabled,
                schedule=schedule,
                max_retries=settings.max_retries,
                retry_count=0,
                next_poll_at=next_poll_at(schedule, now) if settings.enabled else None,
                last_poll_at=current.last_poll_at if current else None,
                updated_at=now,
            )
            await repo.put(conn, row)
            before, after = _shown(current), _shown(row)
            diff = {
                name: {"from": before[name], "to": after[name]}
                for name in after
                if before[name] != after[name]
            }
            await record(conn, actor, "integration.polling.update", RESOURCE, integration_id, diff)
            return await _view(conn, integration)

    # -- runs ----------------------------------------------------------------------------

    async def request_sync(
        self,
        actor: Actor,
        integration_id: str,
        trigger: Trigger = Trigger.MANUAL,
        *,
        full: bool = False,
    ) -> RequestedSync:
        """Queue a run of the integration now, or join the one already queued or running.
        ``full``: the run walks the whole listing, whatever an incremental sync saved.
        ``Conflict`` if the integration is disabled, or for ``full`` if a run is running
        (it read the incremental state when it started)."""
        async with self.store.transaction() as conn:
            integration = await _integration(conn, actor.tenant_id, integration_id, lock=True)
            if not integration.enabled:
                raise Conflict(f"integration {integration_id!r} is disabled; enable it first")
            if full:
                await sync_state.forget(conn, integration_id)
            now = self.clock()
            # Bounded: a run that ends between the refused insert and the read lets the
            # next insert through.
            for _ in range(3):
                run = await sync_runs.insert_queued(
                    conn, NewRun(actor.tenant_id, integration_id, trigger), now=now
                )
                if run is not None:
                    await queue.enqueue(
                        conn,
                        kind=SYNC_KIND,
                        payload={"runId": run.id, "integrationId": integration_id},
                        tenant_id=actor.tenant_id,
                        group=integration_id,
                        now=now,
                    )
                    diff: dict[str, Any] = {"runId": run.id, "trigger": str(trigger)}
                    if full:
                        diff["full"] = True
                    await record(
                        conn, actor, "integration.sync.request", RESOURCE, integration_id, diff
                    )
                    return RequestedSync(run, created=True)
                running = await sync_runs.active(conn, actor.tenant_id, integration_id)
                if running is not None and full and running.status is RunStatus.RUNNING:
                    raise Conflict(
                        f"run {running.id} of integration {integration_id!r} is running; "
                        "ask for a full sync once it has ended"
                    )
                if running is not None:
                    return RequestedSync(running, created=False)
        raise Conflict(f"integration {integration_id!r}: its runs keep changing; try again")

    async def record_outcome(self, tenant_id: str, run_id: str, outcome: Outcome) -> SyncRun | None:
        """``record_outcome_in`` in a transaction of its own, at the service's clock."""
        async with self.store.transaction() as conn:
            return await record_outcome_in(conn, tenant_id, run_id, outcome, now=self.clock())


# -- the end of a run ----------------------------------------------------------------------


async def record_outcome_in(
    conn: AsyncConnection,
    tenant_id: str,
    run_id: str,
    outcome: Outcome,
    *,
    now: datetime | None = None,
) -> SyncRun | None:
    """Settle the run with ``outcome`` in the caller's transaction and apply the polling
    rules (module docstring). Returns the settled run; None if the run is gone (its
    integration was deleted) or was already settled, and then changes nothing."""
    now = now or utcnow()
    run = await sync_runs.get(conn, tenant_id, run_id)
    if run is None:
        return None
    # Locks in the order every writer takes them: integration, polling row, run.
    integration = await integrations_repo.get(conn, tenant_id, run.integration_id, for_update=True)
    if integration is None:  # deleted meanwhile, and its runs with it
        return None
    polling = await repo.get(conn, tenant_id, run.integration_id, for_update=True)
    settled = await sync_runs.finish(
        conn,
        run_id,
        status=RunStatus.SUCCEEDED if outcome.succeeded else RunStatus.FAILED,
        counts=outcome.counts,
        error=outcome.message,
        error_class=outcome.error_class,
        now=now,
    )
    if not settled:
        return None
    polling_on = polling is not None and polling.enabled
    decision = after_run(
        polling.schedule if polling is not None else Schedule(),
        polling=polling_on,
        retry_count=polling.retry_count if polling is not None else 0,
        max_retries=polling.max_retries if polling is not None else DEFAULT_MAX_RETRIES,
        succeeded=outcome.succeeded,
        skipped=outcome.counts.skipped,
        needs_reauthorization=outcome.needs_reauthorization,
        now=now,
    )
    if polling is not None and polling_on:
        await repo.set_state(
            conn,
            polling.integration_id,
            enabled=not decision.disable,
            retry_count=decision.retry_count,
            next_poll_at=decision.next_poll_at,
            now=now,
        )

    reason: str | None = None
    if outcome.needs_reauthorization:
        reason = f"{REAUTHORIZE}: {outcome.message}"
    elif decision.disable:
        assert polling is not None
        retries = polling.retry_count
        reason = f"polling disabled after {retries + 1} failed runs in a row: {outcome.message}"
    updated = _with_health(integration, decision.health, reason, now, outcome.succeeded)
    if updated != integration:
        await integrations_repo.update(conn, updated)

    actor = Actor(tenant_id, SYSTEM)
    counts = outcome.counts
    await record(
        conn,
        actor,
        "integration.sync.finish",
        RESOURCE,
        run.integration_id,
        {
            "runId": run.id,
            "trigger": str(run.trigger),
            "status": "succeeded" if outcome.succeeded else "failed",
            "fetched": counts.fetched,
            "created": counts.created,
            "updated": counts.updated,
            "unchanged": counts.unchanged,
            "skipped": counts.skipped,
            "error": outcome.message,
        },
    )
    took = (now - run.started_at).total_seconds() if run.started_at else 0.0
    log.info(
        "sync run %s of %s (%s) %s in %.2f s: fetched %d, created %d, updated %d, "
        "unchanged %d, skipped %d",
        run.id,
        integration.name,
        integration.id,
        "succeeded" if outcome.succeeded else "failed",
        took,
        counts.fetched,
        counts.created,
        counts.updated,
        counts.unchanged,
        counts.skipped,
    )
    if decision.disable:
        assert reason is not None
        await _announce_disabled(conn, actor, integration, updated, reason, now)
    return await sync_runs.get(conn, tenant_id, run_id)


def _with_health(
    integration: Integration, health: Health, error: str | None, now: datetime, succeeded: bool
) -> Integration:
    """The integration after a run: its health, and status error with ``error`` as the
    message when the run disabled polling or needs reauthorization. A success lifts an
    earlier error status, and verifies the connection of one still being configured (a
    whole sync proves more than a connection test): both become active."""
    if error is not None:
        changed = replace(
            integration, status=IntegrationStatus.ERROR, health=Health.ERROR, status_message=error
        )
    elif succeeded and integration.status in (
        IntegrationStatus.ERROR,
        IntegrationStatus.CONFIGURING,
    ):
        changed = replace(
            integration,
            status=IntegrationStatus.ACTIVE,
            health=health,
            status_message=None,
            verified_at=integration.verified_at or now,
        )
    else:
        changed = replace(integration, health=health)
    return changed if changed == integration else replace(changed, updated_at=now)


async def _announce_disabled(
    conn: AsyncConnection,
    actor: Actor,
    before: Integration,
    after: Integration,
    reason: str,
    now: datetime,
) -> None:
    log.warning("integration %s: polling disabled: %s", before.id, reason)
    diff = {
        "enabled": {"from": True, "to": False},
        "status": {"from": str(before.status), "to": str(after.status)},
        "reason": reason,
    }
    await record(conn, actor, "integration.polling.disable", RESOURCE, before.id, diff)
    data = {"integrationId": before.id, "name": before.name, "reason": reason}
    try:
        async with conn.begin_nested():
            await publish(
                conn, tenant_id=before.tenant_id, event_type=DISABLED_EVENT, data=data, now=now
            )
    except InvalidInput as exc:  # the tenant archived the event type: no event then
        log.info("%s for %s not published: %s", DISABLED_EVENT, before.id, exc.message)


# -- helpers -------------------------------------------------------------------------------


async def _integration(
    conn: AsyncConnection, tenant_id: str, integration_id: str, *, lock: bool = False
) -> Integration:
    found = await integrations_repo.get(conn, tenant_id, integration_id, for_update=lock)
    if found is None:
        raise NotFound.of(RESOURCE, integration_id)
    return found


async def _view(conn: AsyncConnection, integration: Integration) -> PollingView:
    row = await repo.get(conn, integration.tenant_id, integration.id)
    latest = await sync_runs.latest(conn, integration.tenant_id, integration.id)
    status = latest.status if latest is not None else None
    if row is None:
        return PollingView(
            integration.id,
            False,
            parse_schedule(),
            DEFAULT_MAX_RETRIES,
            0,
            None,
            None,
            status,
            integration.health,
        )
    return PollingView(
        integration.id,
        row.enabled,
        row.schedule,
        row.max_retries,
        row.retry_count,
        # A disabled integration is not polled: its poll stays due for when it is enabled.
        row.next_poll_at if integration.enabled else None,
        row.last_poll_at,
        status,
        integration.health,
    )
