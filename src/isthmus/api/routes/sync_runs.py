"""Sync runs: start one, read them; thin over ``SyncRunService``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import Field

from isthmus.api.deps import CursorQ, HubDep, LimitQ, Reader, Writer
from isthmus.api.schemas import Out, PageOut
from isthmus.domain.pagination import DEFAULT_LIMIT
from isthmus.store.sync_runs import ACTIVE, SyncRun

router = APIRouter(prefix="/api/v1", tags=["sync"])

MAX_WAIT_SECONDS = 600.0


class RunOut(Out):
    id: str
    integration_id: str
    trigger: str = Field(description="schedule, manual or api")
    status: str = Field(description="queued, running, succeeded, failed or cancelled")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    fetched: int = Field(description="Records fetched from the API.")
    created: int = Field(description="Contacts created.")
    updated: int = Field(description="Contacts changed.")
    unchanged: int = Field(description="Records that changed nothing.")
    skipped: int = Field(description="Records skipped (no usable email, ...).")
    skipped_reasons: dict[str, int] = Field(
        description="Why records were skipped: reason -> count."
    )
    error: str | None
    error_class: str | None
    attempt: int = Field(description="1, or the retry's number plus one.")

    @classmethod
    def of(cls, run: SyncRun) -> RunOut:
        c = run.counts
        return cls(
            id=run.id,
            integration_id=run.integration_id,
            trigger=str(run.trigger),
            status=str(run.status),
            created_at=run.created_at,
            started_at=run.started_at,
            finished_at=run.finished_at,
            fetched=c.fetched,
            created=c.created,
            updated=c.updated,
            unchanged=c.unchanged,
            skipped=c.skipped,
            skipped_reasons=dict(c.skipped_reasons),
            error=run.error,
            error_class=run.error_class,
            attempt=run.attempt,
        )


@router.post(
    "/integrations/{integration_id}/sync",
    summary="Sync an integration now",
    description="Queues a run (or joins the one already queued or running) and answers 202 "
    "with it. With `wait=true` it answers 200 once the run has finished, or 202 with the run "
    "as it stands when `timeout` seconds are up.",
    status_code=202,
    responses={200: {"description": "The run finished (`wait=true`)."}},
)
async def sync(
    integration_id: str,
    hub: HubDep,
    actor: Writer,
    response: Response,
    wait: Annotated[bool, Query(description="Answer once the run has finished.")] = False,
    full: Annotated[
        bool,
        Query(
            description="Walk the whole listing, whatever an incremental sync saved (409 "
            "while a run is running)."
        ),
    ] = False,
    timeout: Annotated[  # noqa: ASYNC109
        float,
        Query(gt=0, le=MAX_WAIT_SECONDS, description="Seconds `wait=true` waits at most."),
    ] = 60.0,
) -> RunOut:
    requested = await hub.sync_runs.request(actor, integration_id, full=full)
    run = requested.run
    if wait:
        run = await hub.sync_runs.wait(actor.tenant_id, run.id, seconds=timeout)
        if run.status not in ACTIVE:
            response.status_code = 200
    return RunOut.of(run)


@router.get("/integrations/{integration_id}/runs", summary="An integration's sync runs")
async def list_runs(
    integration_id: str,
    hub: HubDep,
    actor: Reader,
    cursor: CursorQ = None,
    limit: LimitQ = DEFAULT_LIMIT,
) -> PageOut[RunOut]:
    page = await hub.sync_runs.list(actor.tenant_id, integration_id, cursor=cursor, limit=limit)
    return PageOut(data=[RunOut.of(r) for r in page.items], next_cursor=page.next_cursor)


@router.post(
    "/runs/{run_id}/cancel",
    summary="Cancel a queued or running sync run",
    description="The run ends as `cancelled` with the counts it reached; a running one stops "
    "at its next write, what it wrote before stays. 409 if the run has ended.",
)
async def cancel_run(run_id: str, hub: HubDep, actor: Writer) -> RunOut:
    return RunOut.of(await hub.sync_runs.cancel(actor, run_id))


@router.get("/runs/{run_id}", summary="One sync run")
async def get_run(run_id: str, hub: HubDep, actor: Reader) -> RunOut:
    return RunOut.of(await hub.sync_runs.get(actor.tenant_id, run_id))
