"""Which deliveries the throttle lets go: slow endpoints share half the slots in all."""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from isthmus.domain.records import SubscriptionStatus, WebhookSubscription
from isthmus.ratelimit_storage import make_storage
from isthmus.store.db import Store, make_engine
from isthmus.webhooks.throttle import (
    AT_CAPACITY,
    MAX_WAIT_SECONDS,
    SLOW,
    SLOW_CALL_SECONDS,
    NotNow,
    Throttle,
)

NOW = datetime(2026, 12, 5, tzinfo=UTC)


def sub(sub_id: str, max_concurrency: int | None = None) -> WebhookSubscription:
    return WebhookSubscription(
        id=sub_id,
        tenant_id="ten_a",
        name=sub_id,
        url="https://hooks.example.com/in",
        events=("contact.created",),
        is_active=True,
        description="",
        headers={},
        timeout_seconds=10,
        retry_schedule=(0.0,),
        status=SubscriptionStatus.ACTIVE,
        created_at=NOW,
        updated_at=NOW,
        max_concurrency=max_concurrency,
    )


@pytest.fixture
async def throttle() -> AsyncIterator[Throttle]:
    store = Store(make_engine("sqlite+aiosqlite:///:memory:"))
    try:
        yield Throttle(store, make_storage(None), slow_share=2)
    finally:
        await store.close()


async def hold(stack: AsyncExitStack, throttle: Throttle, s: WebhookSubscription) -> str | None:
    """Enter the subscription's slot for the rest of ``stack``: None, or the refusal's reason."""
    refused = await stack.enter_async_context(throttle.slot(s))
    return None if refused is None else refused.reason


async def refusal(throttle: Throttle, s: WebhookSubscription) -> NotNow:
    async with throttle.slot(s) as refused:
        assert refused is not None
        return refused


async def test_a_quick_endpoint_is_never_held_back(throttle: Throttle) -> None:
    quick = sub("wh_quick")
    throttle.observe(quick, SLOW_CALL_SECONDS / 10)
    async with AsyncExitStack() as stack:
        assert [await hold(stack, throttle, quick) for _ in range(10)] == [None] * 10


async def test_slow_endpoints_share_the_slow_slots_until_a_quick_call(
    throttle: Throttle,
) -> None:
    a, b, quick = sub("wh_a"), sub("wh_b"), sub("wh_quick")
    throttle.observe(a, SLOW_CALL_SECONDS)
    throttle.observe(b, SLOW_CALL_SECONDS * 10)  # a timeout, say
    assert throttle.is_slow(a) and throttle.is_slow(b) and not throttle.is_slow(quick)
    async with AsyncExitStack() as stack:
        assert await hold(stack, throttle, a) is None
        assert await hold(stack, throttle, b) is None
        # Two slow calls hold the share: neither endpoint gets a third, the quick one does.
        assert await hold(stack, throttle, a) == SLOW
        assert await hold(stack, throttle, b) == SLOW
        assert await hold(stack, throttle, quick) is None
    # Their slots are free again once the calls end.
    async with throttle.slot(a) as free:
        assert free is None
    # One quick answer and the endpoint is no longer slow.
    throttle.observe(a, SLOW_CALL_SECONDS / 2)
    assert not throttle.is_slow(a)
    async with AsyncExitStack() as stack:
        assert [await hold(stack, throttle, a) for _ in range(4)] == [None] * 4


async def test_its_own_maximum_still_holds_for_a_slow_endpoint(throttle: Throttle) -> None:
    capped = sub("wh_capped", max_concurrency=1)
    throttle.observe(capped, SLOW_CALL_SECONDS)
    async with AsyncExitStack() as stack:
        assert await hold(stack, throttle, capped) is None
        assert await hold(stack, throttle, capped) == AT_CAPACITY


async def test_deliveries_over_a_maximum_queue_in_line_at_the_pace_of_its_calls(
    throttle: Throttle,
) -> None:
    capped = sub("wh_capped", max_concurrency=3)
    throttle.observe(capped, 0.6)  # quick enough not to count as slow
    async with AsyncExitStack() as stack:
        assert [await hold(stack, throttle, capped) for _ in range(3)] == [None] * 3
        refused = [await refusal(throttle, capped) for _ in range(3)]
    assert {r.reason for r in refused} == {AT_CAPACITY}
    # A moment, then one 0.6 s call over its 3 slots apart.
    assert [round(r.delay, 1) for r in refused] == [0.4, 0.6, 0.8], refused


async def test_a_slow_endpoint_s_turned_away_deliveries_queue_one_behind_another(
    throttle: Throttle,
) -> None:
    # Sent back for a fixed moment, a large backlog would come round again and again; each
    # gets its place instead: a moment, then one 4 s call divided by the share of 2 after
    # the one before.
    slow, other = sub("wh_slow"), sub("wh_other")
    throttle.observe(slow, 4.0)
    throttle.observe(other, 1.0)
    async with AsyncExitStack() as stack:
        await hold(stack, throttle, slow)
        await hold(stack, throttle, slow)
        delays = [(await refusal(throttle, slow)).delay for _ in range(4)]
        assert [round(d) for d in delays] == [2, 4, 6, 8], delays
        # Another slow endpoint has its own line, at its own pace (and a moment first).
        assert round((await refusal(throttle, other)).delay, 1) == 0.7
        # Never further ahead than the cap, however long the line.
        far = [(await refusal(throttle, slow)).delay for _ in range(500)]
        assert max(far) <= MAX_WAIT_SECONDS
        assert far[-1] > MAX_WAIT_SECONDS - 1
    # Quick again: its line is gone, and the next turned-away one waits one place only.
    throttle.observe(slow, 0.1)
    throttle.observe(slow, 4.0)
    async with AsyncExitStack() as stack:
        await hold(stack, throttle, slow)
        await hold(stack, throttle, slow)
        assert round((await refusal(throttle, slow)).delay) == 2


async def test_deliveries_over_the_rate_queue_one_interval_apart(throttle: Throttle) -> None:
    limited = replace(sub("wh_limited"), rate_limit_per_second=4)
    assert [await throttle.rate_delay(limited) for _ in range(4)] == [None] * 4
    delays: list[float] = []
    places: list[float] = []
    for _ in range(4):
        asked = time.monotonic()
        delay = await throttle.rate_delay(limited)
        assert delay is not None
        delays.append(delay)
        places.append(asked + delay)
    # After the window has moved (at most a second), a quarter of a second apart.
    assert 0.25 < delays[0] <= 1.25, delays
    gaps = [b - a for a, b in itertools.pairwise(places)]
    assert all(abs(gap - 0.25) < 0.02 for gap in gaps), gaps


def test_the_log_says_when_an_endpoint_turns_slow_and_quick_again(
    throttle: Throttle, caplog: pytest.LogCaptureFixture
) -> None:
    slow = sub("wh_slowish")
    caplog.set_level(logging.INFO, logger="isthmus.webhooks")
    throttle.observe(slow, 0.2)
    throttle.observe(slow, 2.5)
    throttle.observe(slow, 3.0)  # still slow: said once
    throttle.observe(slow, 0.1)
    said = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert said == [
        (
            "WARNING",
            "webhook wh_slowish is slow (a call took 2.5 s): its deliveries share 2 of this "
            "process's job slots with other slow endpoints until it answers quickly",
        ),
        ("INFO", "webhook wh_slowish answers quickly again (0.10 s)"),
    ]
