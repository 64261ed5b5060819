"""Where a sync run starts and what state a complete one leaves, by cases: pure."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest

from isthmus.connectors.types import Request
from isthmus.store.sync_runs import RunCounts, RunStatus, SyncRun, Trigger
from isthmus.sync.walk import Incremental, MappedPage, Walk, listing_key, request_json

URL = "https://api.example.com/contacts"
BASE: dict[str, Any] = {
    "apiEndpoint": URL,
    "dataSelector": "results",
    "pagination": {"type": "cursor", "cursorPath": "next", "cursorParam": "after"},
    "fieldMapping": {"email": "properties.email"},
    "auth": {"type": "bearer"},
}
CURSOR = {**BASE, "incremental": {"type": "cursor"}}
SINCE = {**BASE, "incremental": {"param": "updatedSince", "recordField": "updatedAt"}}
SINCE_P_U = Incremental("updated_since", "p", "u")
PAGE_3 = Request("GET", URL, [("after", "200")], {}, None)


def run(checkpoint: dict[str, Any] | None = None) -> SyncRun:
    at = datetime(2026, 12, 5, tzinfo=UTC)
    return SyncRun(
        "run_1", "ten_1", "int_1", Trigger.SCHEDULE, RunStatus.RUNNING, at, at, None,
        RunCounts(), None, None, checkpoint, 1,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        (None, None),
        ({"type": "cursor"}, Incremental("cursor")),
        ({"param": "since", "recordField": "u"}, Incremental("updated_since", "since", "u")),
        ({"type": "updated_since", "param": "p", "recordField": "u"}, SINCE_P_U),
        ({"param": "since"}, None),  # not usable (the API refuses to save it)
    ],
)  # fmt: skip
def test_the_incremental_kind_is_read_from_the_config(
    block: dict[str, Any] | None, expected: Incremental | None
) -> None:
    config = {**BASE, "incremental": block} if block is not None else BASE
    assert Incremental.of(config) == expected


def test_a_cursor_sync_starts_where_the_last_complete_one_ended() -> None:
    first = Walk(run(), CURSOR, {})
    assert first.resume_from() is None  # nothing saved: the whole listing
    first.last_request = PAGE_3
    state = first.next_state()
    assert state == {"listing": listing_key(CURSOR), "cursor": request_json(PAGE_3)}

    second = Walk(run(), CURSOR, state)
    assert second.resume_from() == PAGE_3
    assert second.first_params() is None
    # An interrupted run resumes from its own checkpoint, not from the saved cursor.
    following = Request("GET", URL, [("after", "300")], {}, None)
    resumed = Walk(run(second.checkpoint(written(following), None)), CURSOR, state)
    assert (resumed.resume_from(), resumed.resume_skip) == (following, 0)


def written(following: Request | None, skip: int = 0) -> MappedPage:
    """The last page (or part of one) a write took, as the checkpoint reads it."""
    return MappedPage([], Counter(), 0, None, None, following, frozenset(), skip)


def test_a_part_of_a_page_checkpoints_its_own_page_and_the_records_written() -> None:
    walk = Walk(run(), CURSOR, {})
    assert walk.resume_skip == 0
    # A page too large for one write, written up to its record 2,000: the run resumes at
    # that page, from that record.
    saved = walk.checkpoint(written(PAGE_3, 2000), "w")
    assert saved == {"watermark": "w", "next": request_json(PAGE_3), "skip": 2000}
    resumed = Walk(run(saved), CURSOR, {})
    assert (resumed.resume_from(), resumed.resume_skip) == (PAGE_3, 2000)
    # Its last part: the page after it, from its first record; the last page: nothing next.
    following = Request("GET", URL, [("after", "300")], {}, None)
    assert walk.checkpoint(written(following), None) == {
        "watermark": None,
        "next": request_json(following),
    }
    assert walk.checkpoint(written(None), None) == {"watermark": None}
    # A saved cursor is where a run starts, not a checkpoint: nothing of it is skipped.
    cursor_state = {"listing": listing_key(CURSOR), "cursor": request_json(PAGE_3)}
    assert Walk(run(), CURSOR, cursor_state).resume_skip == 0


def test_an_updated_since_sync_asks_from_the_highest_value_seen() -> None:
    first = Walk(run(), SINCE, {})
    assert first.first_params() is None
    assert first.next_state() is None  # no record carried the field
    first.watermark = "2026-12-01T00:00:00Z"
    state = first.next_state()
    assert state == {"listing": listing_key(SINCE), "since": "2026-12-01T00:00:00Z"}

    second = Walk(run(), SINCE, state)
    assert second.first_params() == [("updatedSince", "2026-12-01T00:00:00Z")]
    assert second.resume_from() is None
    # A state saved before states named their listing still counts.
    assert Walk(run(), SINCE, {"since": "x"}).first_params() == [("updatedSince", "x")]


@pytest.mark.parametrize(
    "change",
    [
        {"apiEndpoint": "https://api.example.com/v2/contacts"},
        {"pagination": {"type": "page"}},
        {"dataSelector": "data"},
        {"fieldMapping": {"email": "email"}},
        {"headers": {"X-Api-Version": "2"}},
    ],
)
def test_a_changed_listing_or_mapping_starts_over(change: dict[str, Any]) -> None:
    for config, made in ((CURSOR, "last_request"), (SINCE, "watermark")):
        before = Walk(run(), config, {})
        setattr(before, made, PAGE_3 if made == "last_request" else "2026-12-01")
        state = before.next_state()
        assert state is not None

        after = Walk(run(), {**config, **change}, state)

        assert after.resume_from() is None and after.first_params() is None


def test_new_credentials_or_rate_limits_keep_the_state() -> None:
    before = Walk(run(), CURSOR, {})
    before.last_request = PAGE_3
    state = before.next_state()
    assert state is not None
    changed = {**CURSOR, "auth": {"type": "header"}, "rateLimit": {"requestsPerWindow": 5}}
    assert Walk(run(), changed, state).resume_from() == PAGE_3
