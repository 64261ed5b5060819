"""What ``isthmus sync`` prints of a run as it moves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from isthmus.cli_sync import progress_line
from isthmus.store.sync_runs import RunCounts, RunStatus, SyncRun, Trigger

START = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)


def run(status: RunStatus, counts: RunCounts, *, started: bool, took: float | None) -> SyncRun:
    return SyncRun(
        id="run_1",
        tenant_id="ten_1",
        integration_id="int_1",
        trigger=Trigger.MANUAL,
        status=status,
        created_at=START,
        started_at=START if started else None,
        finished_at=START + timedelta(seconds=took) if took is not None else None,
        counts=counts,
        error=None,
        error_class=None,
        checkpoint=None,
        attempt=1,
    )


@pytest.mark.parametrize(
    ("shown", "expected"),
    [
        (
            run(RunStatus.QUEUED, RunCounts(), started=False, took=None),
            "queued: fetched 0, created 0, updated 0, unchanged 0, skipped 0",
        ),
        (
            run(RunStatus.RUNNING, RunCounts(24_000, 23_990), started=True, took=None),
            "running 12.0 s: fetched 24,000 (2,000/s), created 23,990, updated 0, unchanged 0, "
            "skipped 0",
        ),
        (
            run(
                RunStatus.SUCCEEDED,
                RunCounts(100_000, 99_000, 10, 988, 2, {"no email": 1, "invalid email": 1}),
                started=True,
                took=40,
            ),
            "succeeded in 40.0 s: fetched 100,000 (2,500/s), created 99,000, updated 10, "
            "unchanged 988, skipped 2 (invalid email: 1, no email: 1)",
        ),
        # Under a second: no rate, which would be mostly noise.
        (
            run(RunStatus.FAILED, RunCounts(), started=True, took=0.25),
            "failed in 0.2 s: fetched 0, created 0, updated 0, unchanged 0, skipped 0",
        ),
    ],
)
def test_progress_line(shown: SyncRun, expected: str) -> None:
    assert progress_line(shown, START + timedelta(seconds=12)) == expected
