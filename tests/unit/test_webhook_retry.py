"""The retry and auto-disable policy, by tables: a fixed clock, seeded randomness, no sleeping."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import pytest

from isthmus.errors import (
    ConnectionRefused,
    InvalidInput,
    NetworkError,
    OutboundError,
    OutboundTimeout,
    TLSFailure,
    UpstreamRateLimited,
    UpstreamRedirected,
    UpstreamRejected,
    UpstreamUnavailable,
)
from isthmus.webhooks.retry import (
    DEFAULT_SCHEDULE,
    PRESETS,
    SEED_SCHEDULE,
    Outcome,
    first_attempt_at,
    next_attempt,
    parse_schedule,
    should_disable,
)

NOW = datetime(2024, 12, 1, 12, 0, tzinfo=UTC)
SEEDS = range(500)

OK = Outcome.delivered(200)
HTTP_500 = Outcome(success=False, status=500, error_class="http_status")
HTTP_400 = Outcome(success=False, status=400, error_class="http_status")
HTTP_302 = Outcome(success=False, status=302, error_class="http_status")
GONE = Outcome(success=False, status=410, error_class="http_status", gone=True)
TIMEOUT = Outcome(success=False, error_class="timeout")
RESET = Outcome(success=False, error_class="network")
TLS = Outcome(success=False, error_class="tls")


def limited(status: int, retry_after: float | None) -> Outcome:
    return Outcome(success=False, status=status, error_class="http_status", retry_after=retry_after)


def delays(
    schedule: tuple[float, ...], attempt: int, outcome: Outcome, **kw: float
) -> list[float | None]:
    """The delay ``next_attempt`` picks for each rng seed, in seconds (None = give up)."""
    result: list[float | None] = []
    for seed in SEEDS:
        when = next_attempt(schedule, attempt, outcome, NOW, random.Random(seed), **kw)
        result.append(None if when is None else (when - NOW).total_seconds())
    return result


# -- attempt x outcome -> delay range or give up -------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "outcome", "low", "high"),
    [
        (1, HTTP_500, 4, 6),  # 5 s
        (2, TIMEOUT, 240, 360),  # 5 min
        (3, RESET, 1440, 2160),  # 30 min
        (4, HTTP_400, 5760, 8640),  # 2 h: a 4xx is retried too, the owner may fix it
        (5, HTTP_302, 14400, 21600),  # 5 h: a redirect is a failure, not followed
        (6, TLS, 28800, 43200),  # 10 h
        (7, HTTP_500, 28800, 43200),  # 10 h
    ],
)
def test_default_schedule_retries_within_jitter(
    attempt: int, outcome: Outcome, low: float, high: float
) -> None:
    for delay in delays(DEFAULT_SCHEDULE, attempt, outcome):
        assert delay is not None
        assert low <= delay <= high


@pytest.mark.parametrize(
    ("attempt", "outcome"),
    [
        (1, OK),  # delivered
        (7, OK),
        (1, GONE),  # 410: give up at once, the caller disables the subscription
        (4, GONE),
        (8, HTTP_500),  # the last of the eight scheduled attempts
        (8, limited(429, 5)),  # Retry-After does not buy an extra attempt
        (9, TIMEOUT),  # past the schedule (e.g. the schedule was shortened since)
    ],
)
def test_gives_up(attempt: int, outcome: Outcome) -> None:
    assert set(delays(DEFAULT_SCHEDULE, attempt, outcome)) == {None}


def test_attempt_numbers_start_at_one() -> None:
    with pytest.raises(ValueError):
        next_attempt(DEFAULT_SCHEDULE, 0, HTTP_500, NOW, random.Random(0))


# -- jitter --------------------------------------------------------------------------------


@pytest.mark.parametrize("attempt", range(1, len(DEFAULT_SCHEDULE)))
def test_jitter_stays_within_20_percent_and_spreads(attempt: int) -> None:
    scheduled = DEFAULT_SCHEDULE[attempt]
    seen = [d for d in delays(DEFAULT_SCHEDULE, attempt, HTTP_500) if d is not None]
    assert len(seen) == len(SEEDS)
    assert all(0.8 * scheduled <= d <= 1.2 * scheduled for d in seen)
    # Really jittered: both ends of the band are reached and the middle is the schedule.
    assert min(seen) < 0.85 * scheduled and max(seen) > 1.15 * scheduled
    assert math.isclose(sum(seen) / len(seen), scheduled, rel_tol=0.03)


def test_same_seed_same_time() -> None:
    one = next_attempt(DEFAULT_SCHEDULE, 3, HTTP_500, NOW, random.Random(42))
    two = next_attempt(DEFAULT_SCHEDULE, 3, HTTP_500, NOW, random.Random(42))
    assert one == two


# -- Retry-After ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schedule", "attempt", "outcome", "low", "high"),
    [
        # Longer than the schedule: exactly what the server asked, jitter never shortens it.
        (DEFAULT_SCHEDULE, 1, limited(429, 120), 120, 120),
        (DEFAULT_SCHEDULE, 1, limited(503, 120), 120, 120),
        # Shorter than the schedule: the (jittered) schedule wins.
        (DEFAULT_SCHEDULE, 4, limited(429, 60), 5760, 8640),
        # Equal to the schedule: jitter may lengthen it, not shorten it.
        (DEFAULT_SCHEDULE, 4, limited(429, 7200), 7200, 8640),
        # Only 429 and 503 carry a Retry-After worth honouring.
        (DEFAULT_SCHEDULE, 1, limited(500, 120), 4, 6),
        (DEFAULT_SCHEDULE, 1, limited(502, 120), 4, 6),
        # Absent: the schedule.
        (DEFAULT_SCHEDULE, 1, limited(429, None), 4, 6),
        # Clamped to at least 1 s: "Retry-After: 0" must not become a hot loop.
        ((0.0, 0.0), 1, limited(429, 0), 1, 1),
        ((0.0, 0.0), 1, limited(503, -5), 1, 1),
        ((0.0, 0.0), 1, limited(429, 0.2), 1, 1),
        # Clamped to at most 24 h.
        (DEFAULT_SCHEDULE, 1, limited(429, 7 * 86400), 86400, 86400),
        (DEFAULT_SCHEDULE, 1, limited(503, 86401), 86400, 86400),
        (DEFAULT_SCHEDULE, 1, limited(503, 86400), 86400, 86400),
    ],
)
def test_retry_after(
    schedule: tuple[float, ...], attempt: int, outcome: Outcome, low: float, high: float
) -> None:
    for delay in delays(schedule, attempt, outcome):
        assert delay is not None
        assert low <= delay <= high


def test_no_delay_exceeds_24_hours_even_with_jitter() -> None:
    for delay in delays((0.0, 86400.0), 1, HTTP_500):
        assert delay is not None
        assert 0.8 * 86400 <= delay <= 86400


def test_zero_delay_entries_retry_at_once() -> None:
    assert set(delays((0.0, 0.0, 0.0), 1, TIMEOUT)) == {0.0}


# -- presets -------------------------------------------------------------------------------


def test_default_preset() -> None:
    assert DEFAULT_SCHEDULE == (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
    assert PRESETS["default"] is DEFAULT_SCHEDULE


@pytest.mark.parametrize(("attempt", "seconds"), [(1, 2), (2, 4), (3, 8), (4, 16)])
def test_seed_preset_exact_timings(attempt: int, seconds: float) -> None:
    # Without jitter the seed's 2^n seconds exactly; with the default jitter, within 20 %.
    assert set(delays(SEED_SCHEDULE, attempt, HTTP_500, jitter=0.0)) == {seconds}
    assert all(
        d is not None and 0.8 * seconds <= d <= 1.2 * seconds
        for d in delays(SEED_SCHEDULE, attempt, HTTP_500)
    )


def test_seed_preset_walk_with_a_fake_clock() -> None:
    # Five attempts in all: immediately, then 2, 4, 8 and 16 s after the one before.
    assert PRESETS["seed"] is SEED_SCHEDULE
    clock = first_attempt_at(SEED_SCHEDULE, NOW)
    assert clock == NOW
    attempts = [clock]
    attempt = 1
    while (
        when := next_attempt(SEED_SCHEDULE, attempt, TIMEOUT, clock, random.Random(0), jitter=0)
    ) is not None:
        clock, attempt = when, attempt + 1
        attempts.append(clock)
    assert [(t - NOW).total_seconds() for t in attempts] == [0, 2, 6, 14, 30]


def test_default_walk_with_a_fake_clock() -> None:
    clock, attempt, rng = NOW, 1, random.Random(7)
    while (when := next_attempt(DEFAULT_SCHEDULE, attempt, HTTP_500, clock, rng)) is not None:
        clock, attempt = when, attempt + 1
    assert attempt == 8
    total = (clock - NOW).total_seconds()
    assert 0.8 * sum(DEFAULT_SCHEDULE) <= total <= 1.2 * sum(DEFAULT_SCHEDULE)


def test_custom_schedule_sets_the_attempt_count_and_the_delays() -> None:
    schedule = parse_schedule([0, 10, 60])
    assert set(delays(schedule, 1, HTTP_500, jitter=0)) == {10}
    assert set(delays(schedule, 2, HTTP_500, jitter=0)) == {60}
    assert set(delays(schedule, 3, HTTP_500)) == {None}
    assert set(delays(parse_schedule([0]), 1, HTTP_500)) == {None}  # one attempt, no retry


def test_first_attempt_honours_entry_zero() -> None:
    assert first_attempt_at(DEFAULT_SCHEDULE, NOW) == NOW
    assert first_attempt_at((30.0, 60.0), NOW) == NOW + timedelta(seconds=30)


# -- parsing a per-subscription schedule ---------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, DEFAULT_SCHEDULE),
        ("default", DEFAULT_SCHEDULE),
        ("seed", SEED_SCHEDULE),
        ([0], (0.0,)),
        ([0, 1.5, 60], (0.0, 1.5, 60.0)),
        ((5, 10), (5.0, 10.0)),
        ([86400], (86400.0,)),
        ([0] * 20, (0.0,) * 20),
    ],
)
def test_parse_schedule_accepts(value: object, expected: tuple[float, ...]) -> None:
    parsed = parse_schedule(value)
    assert parsed == expected
    assert all(isinstance(d, float) for d in parsed)


@pytest.mark.parametrize(
    ("value", "field", "message"),
    [
        ("fast", "retrySchedule", "unknown preset 'fast'; one of: default, seed"),
        ("", "retrySchedule", "unknown preset"),
        ([], "retrySchedule", "between 1 and 20 delays, got 0"),
        ([0] * 21, "retrySchedule", "between 1 and 20 delays, got 21"),
        ([0, -1], "retrySchedule.1", "non-negative"),
        ([0, 86401], "retrySchedule.1", "at most 24 h"),
        ([0, float("nan")], "retrySchedule.1", "non-negative"),
        ([float("inf")], "retrySchedule.0", "non-negative"),
        (["5"], "retrySchedule.0", "number of seconds"),
        ([True], "retrySchedule.0", "number of seconds"),
        ([None], "retrySchedule.0", "number of seconds"),
        ([[1]], "retrySchedule.0", "number of seconds"),
        (5, "retrySchedule", "a preset name or a list"),
        ({"a": 1}, "retrySchedule", "a preset name or a list"),
        (b"\x00\x05", "retrySchedule", "a preset name or a list"),
    ],
)
def test_parse_schedule_refuses(value: object, field: str, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_schedule(value)
    assert [e.field for e in caught.value.errors] == [field]
    assert message in caught.value.message


# -- outcomes from the HTTP layer's errors -------------------------------------------------


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            UpstreamRateLimited("slow down", status=429, retry_after=30.0),
            Outcome(success=False, status=429, error_class="rate_limited", retry_after=30.0),
        ),
        (
            UpstreamUnavailable("down", status=503, retry_after=None),
            Outcome(success=False, status=503, error_class="unavailable"),
        ),
        (
            UpstreamRejected("gone", status=410),
            Outcome(success=False, status=410, error_class="rejected", gone=True),
        ),
        (
            UpstreamRedirected("moved", status=302),
            Outcome(success=False, status=302, error_class="redirected"),
        ),
        (OutboundTimeout("slow"), Outcome(success=False, error_class="timeout")),
        (ConnectionRefused("no"), Outcome(success=False, error_class="refused")),
        (NetworkError("reset"), Outcome(success=False, error_class="network")),
        (TLSFailure("cert"), Outcome(success=False, error_class="tls")),
    ],
)
def test_outcome_from_error(error: OutboundError, expected: Outcome) -> None:
    assert Outcome.failed(error) == expected


def test_outcome_from_a_429_error_honours_its_retry_after() -> None:
    outcome = Outcome.failed(UpstreamRateLimited("x", status=429, retry_after=600.0))
    assert set(delays(DEFAULT_SCHEDULE, 1, outcome)) == {600.0}


# -- auto-disable --------------------------------------------------------------------------

DAY = timedelta(days=1)


@pytest.mark.parametrize(
    ("failures", "first_failure_at", "now", "kw", "expected"),
    [
        (0, None, NOW, {}, None),
        (0, NOW - 10 * DAY, NOW, {}, None),  # a success since reset the count
        (1, NOW, NOW, {}, None),
        (9, NOW - DAY, NOW, {}, None),
        (10, NOW - DAY, NOW, {}, "10 consecutive failed deliveries"),
        (11, NOW - DAY, NOW, {}, "11 consecutive failed deliveries"),
        (10, None, NOW, {}, "10 consecutive failed deliveries"),
        (3, NOW - DAY, NOW, {"max_failures": 3}, "3 consecutive failed deliveries"),
        (2, NOW - 5 * DAY + timedelta(seconds=1), NOW, {}, None),
        (
            2,
            NOW - 5 * DAY,
            NOW,
            {},
            "failing continuously since 2024-11-26T12:00:00Z (5 days)",
        ),
        (
            1,
            NOW - 9 * DAY,
            NOW,
            {},
            "failing continuously since 2024-11-22T12:00:00Z (5 days)",
        ),
        (
            1,
            NOW - timedelta(hours=36),
            NOW,
            {"max_window": timedelta(hours=36)},
            "failing continuously since 2024-11-30T00:00:00Z (36 hours)",
        ),
        (
            1,
            NOW - DAY,
            NOW,
            {"max_window": DAY},
            "failing continuously since 2024-11-30T12:00:00Z (1 day)",
        ),
        # Both limits hit: the count is the reason shown.
        (10, NOW - 6 * DAY, NOW, {}, "10 consecutive failed deliveries"),
    ],
)
def test_should_disable(
    failures: int,
    first_failure_at: datetime | None,
    now: datetime,
    kw: dict[str, object],
    expected: str | None,
) -> None:
    assert should_disable(failures, first_failure_at, now, **kw) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("kw", [{"max_failures": 0}, {"max_window": timedelta(0)}])
def test_should_disable_refuses_nonsense_limits(kw: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        should_disable(1, NOW, NOW, **kw)  # type: ignore[arg-type]
