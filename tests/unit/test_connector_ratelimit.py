"""Rate-limit budgets: the pacing rules by tables, the config block, and the in-memory
budget on a fake clock (no real waiting)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from limits.aio.storage import MemoryStorage

from isthmus.connectors.pacing import (
    MAX_HOLD,
    Allowance,
    Reaction,
    Slowdown,
    react,
    read_allowances,
    reset_seconds,
    slowdown,
)
from isthmus.connectors.ratelimit import (
    POLL_SECONDS,
    Budget,
    BudgetRules,
    MemoryState,
    budget_for,
    rules_from_config,
)
from isthmus.connectors.types import RateLimiter
from isthmus.errors import BudgetExhausted, ConfigError, InvalidInput

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
EPOCH = NOW.timestamp()


# -- reading the providers' headers ------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, []),
        ({"Content-Type": "application/json"}, []),
        # GitHub style: reset is an epoch time in seconds.
        (
            {
                "X-RateLimit-Limit": "5000",
                "X-RateLimit-Remaining": "4999",
                "X-RateLimit-Reset": str(int(EPOCH) + 3600),
            },
            [Allowance(4999, 3600.0, 5000)],
        ),
        # Seconds from now, any case of the names, no limit given.
        ({"x-ratelimit-remaining": "7", "x-ratelimit-reset": "30"}, [Allowance(7, 30.0, None)]),
        # Epoch in milliseconds.
        (
            {"X-RateLimit-Remaining": "1", "X-RateLimit-Reset": str(int(EPOCH * 1000) + 1500)},
            [Allowance(1, 1.5, None)],
        ),
        # A reset in the past means now.
        (
            {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(EPOCH) - 10)},
            [Allowance(0, 0.0, None)],
        ),
        # Remaining without a reset says nothing about time: ignored.
        ({"X-RateLimit-Remaining": "3"}, []),
        ({"X-RateLimit-Remaining": "lots", "X-RateLimit-Reset": "10"}, []),
        # The IETF draft's names, with a policy after the figure.
        (
            {
                "RateLimit-Limit": "100, 100;w=60",
                "RateLimit-Remaining": "50",
                "RateLimit-Reset": "9",
            },
            [Allowance(50, 9.0, 100)],
        ),
        # HubSpot: 100 per 10 s window, per second, and the daily figures are not read.
        (
            {
                "X-HubSpot-RateLimit-Max": "100",
                "X-HubSpot-RateLimit-Remaining": "97",
                "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
                "X-HubSpot-RateLimit-Secondly": "10",
                "X-HubSpot-RateLimit-Secondly-Remaining": "9",
                "X-HubSpot-RateLimit-Daily": "250000",
                "X-HubSpot-RateLimit-Daily-Remaining": "249900",
            },
            [Allowance(97, 10.0, 100), Allowance(9, 1.0, 10)],
        ),
        # Salesforce: used/limit of a rolling day.
        (
            {"Sforce-Limit-Info": "api-usage=10018/100000"},
            [Allowance(100000 - 10018, MAX_HOLD, 100000)],
        ),
        ({"Sforce-Limit-Info": "api-usage=5100/5000"}, [Allowance(0, MAX_HOLD, 5000)]),
        ({"Sforce-Limit-Info": "per-app-api-usage"}, []),
    ],
)
def test_read_allowances(headers: dict[str, str], expected: list[Allowance]) -> None:
    assert read_allowances(headers, NOW) == expected


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (0, 0.0),
        (12, 12.0),
        (-5, 0.0),
        (EPOCH + 42, 42.0),
        ((EPOCH + 2.5) * 1000, 2.5),
        (EPOCH + 10 * MAX_HOLD, MAX_HOLD),
    ],
)
def test_reset_seconds(value: float, seconds: float) -> None:
    assert reset_seconds(value, NOW) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("allowance", "expected"),
    [
        # Plenty left: no slowdown.
        (Allowance(500, 60.0, 1000), None),
        (Allowance(101, 60.0, 1000), None),
        # At or under a tenth of the limit: what is left spread over the time left.
        (Allowance(100, 60.0, 1000), Slowdown(spacing=0.6, lasts=60.0)),
        (Allowance(4, 2.0, 100), Slowdown(spacing=0.5, lasts=2.0)),
        # Nothing left: everyone waits for the refill.
        (Allowance(0, 7.0, 100), Slowdown(pause=7.0, lasts=7.0)),
        (Allowance(-3, 7.0, None), Slowdown(pause=7.0, lasts=7.0)),
        # No limit given: low means ten or fewer.
        (Allowance(11, 10.0, None), None),
        (Allowance(10, 10.0, None), Slowdown(spacing=1.0, lasts=10.0)),
        # Low, but refilled now: nothing to spread.
        (Allowance(3, 0.0, 100), None),
    ],
)
def test_slowdown(allowance: Allowance, expected: Slowdown | None) -> None:
    assert slowdown(allowance) == expected


def _http_date(moment: datetime) -> str:
    return format_datetime(moment, usegmt=True)


@pytest.mark.parametrize(
    ("status", "headers", "expected"),
    [
        (200, {}, Reaction()),
        (429, {}, Reaction()),
        (429, {"Retry-After": "30"}, Reaction(pause=30.0)),
        (503, {"retry-after": "5"}, Reaction(pause=5.0)),
        (429, {"Retry-After": _http_date(NOW + timedelta(seconds=90))}, Reaction(pause=90.0)),
        (429, {"Retry-After": _http_date(NOW - timedelta(seconds=90))}, Reaction()),
        (429, {"Retry-After": "soon"}, Reaction()),
        # Retry-After means nothing to the budget on other statuses.
        (200, {"Retry-After": "30"}, Reaction()),
        (500, {"Retry-After": "30"}, Reaction()),
        # Plenty left: informed, so an earlier pace can end.
        (
            200,
            {"X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "90", "X-RateLimit-Reset": "5"},
            Reaction(informed=True),
        ),
        (
            200,
            {"X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "5", "X-RateLimit-Reset": "10"},
            Reaction(spacing=2.0, lasts=10.0, informed=True),
        ),
        # The longer of Retry-After and an exhausted allowance.
        (
            429,
            {"Retry-After": "3", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "8"},
            Reaction(pause=8.0, lasts=0.0, informed=True),
        ),
        # The tightest of several limits: HubSpot's window is fine, its second is not.
        (
            200,
            {
                "X-HubSpot-RateLimit-Max": "100",
                "X-HubSpot-RateLimit-Remaining": "80",
                "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
                "X-HubSpot-RateLimit-Secondly": "10",
                "X-HubSpot-RateLimit-Secondly-Remaining": "1",
            },
            Reaction(spacing=1.0, lasts=1.0, informed=True),
        ),
        # Salesforce with under a tenth of the day's calls left: spread over the day.
        (
            200,
            {"Sforce-Limit-Info": "api-usage=4136/5000"},
            Reaction(informed=True),
        ),
        (
            200,
            {"Sforce-Limit-Info": "api-usage=4568/5000"},
            Reaction(spacing=MAX_HOLD / 432, lasts=MAX_HOLD, informed=True),
        ),
    ],
)
def test_react(status: int, headers: dict[str, str], expected: Reaction) -> None:
    got = react(status, headers, NOW)
    assert got.informed == expected.informed
    assert (got.pause, got.spacing, got.lasts) == pytest.approx(
        (expected.pause, expected.spacing, expected.lasts)
    )


# -- the config block ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "rules"),
    [
        (None, BudgetRules()),
        ({}, BudgetRules()),
        (
            {"requestsPerWindow": 100, "windowSeconds": 10, "maxConcurrency": 4},
            BudgetRules(requests=100, window_seconds=10.0, max_concurrency=4),
        ),
        ({"requestsPerWindow": 5}, BudgetRules(requests=5, window_seconds=1.0)),
        ({"windowSeconds": 0.5, "maxWaitSeconds": 2}, BudgetRules(window_seconds=0.5, max_wait=2)),
    ],
)
def test_rules_from_config(config: dict[str, Any] | None, rules: BudgetRules) -> None:
    assert rules_from_config(config) == rules


@pytest.mark.parametrize(
    ("config", "fields"),
    [
        ({"requestsPerWindow": 0}, ["rateLimit.requestsPerWindow"]),
        ({"requestsPerWindow": 2.5}, ["rateLimit.requestsPerWindow"]),
        ({"maxConcurrency": True}, ["rateLimit.maxConcurrency"]),
        ({"windowSeconds": "10"}, ["rateLimit.windowSeconds"]),
        ({"maxWaitSeconds": -1, "perDay": 3}, ["rateLimit.perDay", "rateLimit.maxWaitSeconds"]),
    ],
)
def test_rules_from_config_refuses(config: dict[str, Any], fields: list[str]) -> None:
    with pytest.raises(InvalidInput) as caught:
        rules_from_config(config)
    assert [e.field for e in caught.value.errors] == fields


def test_budget_for_refuses_a_storage_it_cannot_share() -> None:
    with pytest.raises(ConfigError):
        budget_for("int_a", {}, object())  # type: ignore[arg-type]


# -- the in-memory budget on a fake clock ------------------------------------------------------


class FakeClock:
    """Epoch seconds that move only when someone sleeps."""

    def __init__(self) -> None:
        self.now = EPOCH
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)  # let the others run, as a real wait would


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _budget(clock: FakeClock, **rules: Any) -> Budget:
    return Budget("int_test", BudgetRules(**rules), MemoryState(), clock=clock, sleep=clock.sleep)


async def _starts(budget: RateLimiter, clock: FakeClock, n: int) -> list[float]:
    """When each of ``n`` calls in a row got its slot, in seconds from the start."""
    got = []
    for _ in range(n):
        async with budget.slot():
            got.append(round(clock.now - EPOCH, 6))
    return got


async def test_a_window_lets_its_requests_through_then_waits_for_the_oldest(
    clock: FakeClock,
) -> None:
    budget = _budget(clock, requests=3, window_seconds=10)
    assert await _starts(budget, clock, 7) == [0, 0, 0, 10, 10, 10, 20]


async def test_the_window_moves(clock: FakeClock) -> None:
    budget = _budget(clock, requests=2, window_seconds=10)
    assert await _starts(budget, clock, 1) == [0]
    clock.now += 6
    assert await _starts(budget, clock, 3) == [6, 10, 16]


async def test_retry_after_pauses_every_caller(clock: FakeClock) -> None:
    budget = _budget(clock)
    await budget.observe(429, {"Retry-After": "12"})
    assert await _starts(budget, clock, 2) == [12, 12]
    # A shorter pause does not cut a longer one short.
    await budget.observe(503, {"Retry-After": "30"})
    await budget.observe(429, {"Retry-After": "1"})
    assert await _starts(budget, clock, 1) == [42]


async def test_low_allowance_spreads_the_calls_left_over_the_time_left(clock: FakeClock) -> None:
    budget = _budget(clock)
    headers = {"X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "4", "X-RateLimit-Reset": "8"}
    await budget.observe(200, headers)
    assert await _starts(budget, clock, 4) == [0, 2, 4, 6]
    # The pace ends with the provider's window.
    clock.now = EPOCH + 8
    assert await _starts(budget, clock, 3) == [8, 8, 8]


async def test_plenty_left_ends_the_pace(clock: FakeClock) -> None:
    budget = _budget(clock)
    await budget.observe(200, {"X-RateLimit-Remaining": "2", "X-RateLimit-Reset": "20"})
    assert await _starts(budget, clock, 2) == [0, 10]
    await budget.observe(200, {"X-RateLimit-Remaining": "60", "X-RateLimit-Reset": "20"})
    assert await _starts(budget, clock, 3) == [10, 10, 10]


async def test_nothing_left_pauses_until_the_reset(clock: FakeClock) -> None:
    budget = _budget(clock)
    reset = str(int(EPOCH) + 25)
    await budget.observe(200, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset})
    assert await _starts(budget, clock, 1) == [25]


async def test_concurrency_cap_holds_the_next_call_until_one_ends(clock: FakeClock) -> None:
    budget = _budget(clock, max_concurrency=2)
    inside = 0
    most = 0
    release = asyncio.Event()

    async def call() -> None:
        nonlocal inside, most
        async with budget.slot():
            inside += 1
            most = max(most, inside)
            await release.wait()
            inside -= 1

    tasks = [asyncio.create_task(call()) for _ in range(5)]
    for _ in range(20):
        await asyncio.sleep(0)
    assert inside == 2
    assert clock.slept and set(clock.slept) == {POLL_SECONDS}  # the others are waiting
    release.set()
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=5)
    assert most == 2 and inside == 0


async def test_a_slot_comes_back_when_the_call_fails(clock: FakeClock) -> None:
    budget = _budget(clock, max_concurrency=1, max_wait=1)
    with pytest.raises(ValueError):
        async with budget.slot():
            raise ValueError("upstream broke")
    assert await _starts(budget, clock, 1) == [0]


async def test_a_wait_beyond_the_maximum_is_refused_at_once(clock: FakeClock) -> None:
    budget = _budget(clock, requests=1, window_seconds=60, max_wait=5)
    await _starts(budget, clock, 1)
    with pytest.raises(BudgetExhausted) as caught:
        async with budget.slot():
            pass
    assert caught.value.retry_after == 60
    assert "int_test" in caught.value.message and "1 calls per 60 s" in caught.value.message
    assert clock.slept == []  # it did not wait for nothing


async def test_waiting_for_concurrency_gives_up_after_the_maximum(clock: FakeClock) -> None:
    budget = _budget(clock, max_concurrency=1, max_wait=2)
    async with budget.slot():
        with pytest.raises(BudgetExhausted):
            async with budget.slot():
                pass
    assert sum(clock.slept) == pytest.approx(2, abs=POLL_SECONDS)


async def test_budgets_of_one_integration_share_a_storage_and_others_do_not(
    clock: FakeClock,
) -> None:
    storage = MemoryStorage()
    config: Mapping[str, Any] = {"requestsPerWindow": 2, "windowSeconds": 10}

    def make(integration_id: str) -> Budget:
        return budget_for(integration_id, config, storage, clock=clock, sleep=clock.sleep)

    first, again, other = make("int_a"), make("int_a"), make("int_b")
    assert await _starts(first, clock, 2) == [0, 0]
    assert await _starts(other, clock, 2) == [0, 0]
    assert await _starts(again, clock, 1) == [10]
    # Another storage (another process) has its own.
    elsewhere = budget_for("int_a", config, MemoryStorage(), clock=clock, sleep=clock.sleep)
    assert await _starts(elsewhere, clock, 1) == [10]
