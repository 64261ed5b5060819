"""What a job handler gets and raises: the claimed ``Job`` with its fenced ways to settle,
``RetryLater`` and ``LeaseLost``. The worker (``isthmus.worker``) runs handlers; see its
docstring for what each outcome does."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from isthmus.domain.jobs import ClaimedJob
from isthmus.errors import IsthmusError
from isthmus.store import queue
from isthmus.store.db import Store

Clock = Callable[[], datetime]


class LeaseLost(IsthmusError):
    """The job's lease passed to another worker (it was rescued); this attempt must not
    change it any more."""


class RetryLater(Exception):
    """Raised by a handler: run this job again after ``delay`` seconds, or at ``at``."""

    def __init__(
        self, reason: str, *, delay: float | None = None, at: datetime | None = None
    ) -> None:
        super().__init__(reason)
        if (delay is None) == (at is None):
            raise ValueError("give RetryLater exactly one of delay or at")
        self.reason = reason
        self.delay = delay
        self.at = at

    def run_at(self, now: datetime) -> datetime:
        return self.at if self.at is not None else now + timedelta(seconds=self.delay or 0)


def retry_backoff(attempts: int) -> float:
    """Seconds before retrying after an unexpected error: 1, 2, 4, ... capped at 5 min."""
    return float(min(2 ** max(attempts - 1, 0), 300))


@dataclass
class Job:
    """What a handler gets: the claimed job, the store, and fenced ways to settle it."""

    claimed: ClaimedJob
    store: Store
    clock: Clock
    settled: bool = False
    #: What the kind's ``prepare`` left for this job (None when it did not run).
    prepared: Any = None
    #: The future of a settle under way elsewhere (``settle_later``).
    pending: asyncio.Future[bool] | None = None

    @property
    def id(self) -> str:
        return self.claimed.id

    @property
    def kind(self) -> str:
        return self.claimed.kind

    @property
    def tenant_id(self) -> str | None:
        return self.claimed.tenant_id

    @property
    def payload(self) -> dict[str, Any]:
        return self.claimed.payload

    @property
    def group(self) -> str | None:
        return self.claimed.group

    @property
    def attempts(self) -> int:
        """This attempt's number: 1 the first time."""
        return self.claimed.attempts

    async def complete_in(self, conn: AsyncConnection) -> None:
        """Mark the job done in the caller's transaction; raises ``LeaseLost``."""
        self._check(await queue.complete_in(conn, self.id, self._token, now=self.clock()))

    async def retry_in(self, conn: AsyncConnection, *, run_at: datetime, error: str) -> None:
        """Queue the job again for ``run_at`` in the caller's transaction."""
        ok = await queue.retry_in(
            conn, self.id, self._token, run_at=run_at, error=error, now=self.clock()
        )
        self._check(ok)

    async def fail_in(self, conn: AsyncConnection, *, error: str) -> None:
        """Give the job up in the caller's transaction."""
        self._check(await queue.fail_in(conn, self.id, self._token, error=error, now=self.clock()))

    @property
    def lease_token(self) -> str:
        """The lease this attempt holds, for a handler that completes its job in a statement
        of its own (fenced by it, as ``queue.complete_many`` is) and reports with
        ``completed``."""
        return self.claimed.lease_token

    def settle_later(self, settle: asyncio.Future[bool]) -> None:
        """The job is being settled elsewhere, fenced by its lease: ``settle`` gives True
        when it was, False when the lease was lost. The worker frees the job's slot when the
        handler returns and waits for ``settle`` in the background."""
        self.pending = settle

    def completed(self, held: bool) -> None:
        """After the handler's own fenced completion ran: raises ``LeaseLost`` if the lease
        was gone."""
        self._check(held)

    @property
    def _token(self) -> str:
        return self.claimed.lease_token

    def _check(self, held: bool) -> None:
        if not held:
            raise LeaseLost(f"job {self.id} was taken over by another worker")
        self.settled = True


Handler = Callable[[Job], Awaitable[None]]
