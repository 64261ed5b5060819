"""``isthmus sync``: sync an integration's contacts now and follow the run to its end.

The run is queued like one the API asks for (trigger ``manual``), and a ``serve`` or
``worker`` process on the same store runs it; the command shows its counts as they move
and its outcome, and exits 1 if it failed. Stopping the command (Ctrl-C) stops following,
not the run.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated

import typer

from isthmus.cli_common import TenantOpt, cli_actor, command, fail, settings_of, with_hub
from isthmus.hub import Hub
from isthmus.store.sync_runs import ACTIVE, RunStatus, SyncRun, Trigger
from isthmus.store.types import utcnow

#: How often the command looks at the run.
PROGRESS_SECONDS = 1.0
#: A run still queued after this long: no process may be taking jobs; say so, once.
WORKER_HINT_SECONDS = 10.0


def sync(
    ctx: typer.Context,
    integration: Annotated[str, typer.Argument(help="The integration's id or name.")],
    tenant: TenantOpt = "default",
    detach: Annotated[
        bool, typer.Option("--detach", help="Queue the run and return without following it.")
    ] = False,
    full: Annotated[
        bool,
        typer.Option("--full", help="Walk the whole listing, whatever an incremental sync saved."),
    ] = False,
) -> None:
    """Sync an integration's contacts now and follow the run; exit 1 unless it succeeds.

    A serve or worker process on the same store runs it."""

    async def run() -> None:
        async def work(hub: Hub) -> SyncRun:
            actor = await cli_actor(hub, tenant)
            found = await hub.integrations.find(actor.tenant_id, integration)
            requested = await hub.sync_runs.request(actor, found.id, Trigger.MANUAL, full=full)
            how = "queued" if requested.created else "joined the run already under way:"
            typer.echo(f"{how} {requested.run.id} of {found.name!r} ({found.id})")
            return requested.run if detach else await _follow(hub, requested.run)

        finished = await with_hub(settings_of(ctx), work)
        if finished.status is RunStatus.FAILED:
            raise fail(f"run {finished.id} failed: {finished.error}")
        if finished.status is RunStatus.CANCELLED:
            raise fail(f"run {finished.id} was cancelled")

    try:
        command(run)()
    except KeyboardInterrupt:
        typer.echo("stopped following (a run already queued goes on)", err=True)
        raise typer.Exit(130) from None


async def _follow(hub: Hub, run: SyncRun) -> SyncRun:
    """Print the run's state each time it changes, until it ends; the run as it ended."""
    shown: str | None = None
    since = time.monotonic()
    hinted = False
    while True:
        line = progress_line(run, utcnow())
        if line != shown:
            typer.echo(line)
            shown = line
        if run.status not in ACTIVE:
            return run
        waited = time.monotonic() - since
        if run.status is RunStatus.QUEUED and not hinted and waited >= WORKER_HINT_SECONDS:
            typer.echo(
                "still queued: is `isthmus serve` or `isthmus worker` running on this store? "
                "(Ctrl-C stops following; the run stays queued)",
                err=True,
            )
            hinted = True
        # Back as soon as the run ends, else after a progress interval.
        run = await hub.sync_runs.wait(run.tenant_id, run.id, seconds=PROGRESS_SECONDS)


def progress_line(run: SyncRun, now: datetime) -> str:
    """``running 12.0 s: fetched 24,000 (2,000/s), created ...``; ``succeeded in 50.0 s: ...``
    at the end; a queued run's counts alone."""
    c = run.counts
    head, rate = run.status.value, ""
    if run.started_at is not None:
        took = max(((run.finished_at or now) - run.started_at).total_seconds(), 0.0)
        head += f" {'in ' if run.finished_at else ''}{took:.1f} s"
        if took >= 1:
            rate = f" ({c.fetched / took:,.0f}/s)"
    line = (
        f"{head}: fetched {c.fetched:,}{rate}, created {c.created:,}, "
        f"updated {c.updated:,}, unchanged {c.unchanged:,}, skipped {c.skipped:,}"
    )
    if c.skipped_reasons:
        reasons = ", ".join(f"{why}: {n:,}" for why, n in sorted(c.skipped_reasons.items()))
        line += f" ({reasons})"
    return line
