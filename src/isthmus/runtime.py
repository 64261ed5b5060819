"""What the worker processes run: every job handler of the hub, in one registry.

``isthmus worker`` runs ``run_workers``; ``isthmus serve`` runs it beside the API unless
``--no-workers``. A package with jobs of its own adds its handler to ``job_handlers``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI

from isthmus.hub import Hub
from isthmus.webhooks import retention
from isthmus.webhooks.publish import DELIVER
from isthmus.worker import Handler, run_worker

log = logging.getLogger("isthmus.worker")


def job_handlers(hub: Hub) -> dict[str, Handler]:
    """Job kind -> handler, for every kind this hub runs."""
    return {
        DELIVER: hub.deliver,
        retention.KIND: retention.handler(hub.settings.webhook_retention_days),
    }


async def run_workers(hub: Hub, stop: asyncio.Event) -> None:
    """Run the hub's handlers until ``stop`` is set, then drain (see ``isthmus.worker``)."""
    # The hourly cleanup keeps itself going once queued; every worker makes sure it is.
    await retention.ensure_scheduled(hub.store)
    await run_worker(
        hub.store,
        job_handlers(hub),
        stop,
        concurrency=hub.settings.worker_concurrency,
        lease_seconds=hub.settings.worker_lease_seconds,
    )


def with_workers(app: FastAPI, hub: Hub) -> FastAPI:
    """Run the workers for as long as the app's lifespan: started before it serves, drained
    in its shutdown (before the server's process exits, unlike a task beside the server)."""
    inner: Callable[[Any], AbstractAsyncContextManager[Any]] = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(the_app: Any) -> AsyncIterator[Any]:
        stop = asyncio.Event()
        workers = asyncio.create_task(run_workers(hub, stop), name="workers")
        workers.add_done_callback(_report)
        try:
            async with inner(the_app) as state:
                yield state
        finally:
            stop.set()
            await asyncio.gather(workers, return_exceptions=True)

    app.router.lifespan_context = lifespan
    return app


def _report(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("the workers stopped: %r", exc, exc_info=exc)
