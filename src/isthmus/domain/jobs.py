"""Jobs of the durable queue as values: their states and the records the queue hands out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED = (JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED)


@dataclass(frozen=True)
class NewJob:
    """One job for ``enqueue_many``; ``run_at`` None means now."""

    kind: str
    payload: Mapping[str, Any]
    tenant_id: str | None = None
    run_at: datetime | None = None
    group: str | None = None


@dataclass(frozen=True)
class ClaimedJob:
    """A job this claimer holds until ``lease_expires_at``; ``attempts`` counts this one."""

    id: str
    tenant_id: str | None
    kind: str
    payload: dict[str, Any]
    group: str | None
    attempts: int
    lease_token: str = field(repr=False)
    lease_expires_at: datetime
    created_at: datetime


@dataclass(frozen=True)
class JobRow:
    """A job as stored (for inspection, logs and tests)."""

    id: str
    tenant_id: str | None
    kind: str
    payload: dict[str, Any]
    group: str | None
    status: JobStatus
    run_at: datetime
    attempts: int
    lease_token: str | None = field(repr=False)
    last_error: str | None
    created_at: datetime
    updated_at: datetime
