"""The retry and auto-disable policy of webhook deliveries, as pure functions.

A schedule is a tuple of delays in seconds, one per attempt: entry ``i`` is the delay before
attempt ``i + 1`` (so entry 0 is the delay before the first attempt, 0 = immediately) and its
length is the number of attempts. The clock and the random source are passed in, so the whole
policy is tested by tables without sleeping.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from isthmus.errors import InvalidInput, OutboundError, UpstreamStatusError

MINUTE = 60.0
HOUR = 60 * MINUTE
DAY = 24 * HOUR

# Immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h: eight attempts over about 27.5 h.
DEFAULT_SCHEDULE: tuple[float, ...] = (
    0.0,
    5.0,
    5 * MINUTE,
    30 * MINUTE,
    2 * HOUR,
    5 * HOUR,
    10 * HOUR,
    10 * HOUR,
)
# The seed's "Delivery & Retry Logic": attempt 1 immediate, then 2, 4, 8 and 16 s later
# (2^1..2^4, each counted from the attempt before), "after 5 failed attempts, stop retrying":
# five attempts in all, the last 30 s after the first (plus jitter).
SEED_SCHEDULE: tuple[float, ...] = (0.0, 2.0, 4.0, 8.0, 16.0)
PRESETS: dict[str, tuple[float, ...]] = {"default": DEFAULT_SCHEDULE, "seed": SEED_SCHEDULE}

MAX_ATTEMPTS = 20
MAX_DELAY = DAY
JITTER = 0.2
# A Retry-After is clamped to [1 s, 24 h]: a "0" from an overloaded server must not turn into a
# hot loop, and one asking for a week would park the delivery longer than any schedule entry
# may; the attempt still counts, so the schedule's attempt budget holds either way.
MIN_RETRY_AFTER = 1.0
MAX_RETRY_AFTER = DAY
RETRY_AFTER_STATUSES = frozenset({429, 503})
GONE = 410


def parse_schedule(value: object) -> tuple[float, ...]:
    """A validated schedule from a preset name or a list of delays in seconds.

    ``None`` means the default preset. A list holds 1..``MAX_ATTEMPTS`` finite, non-negative
    numbers, each at most 24 h; entry 0 is the delay before the first attempt. Anything else
    raises ``InvalidInput`` on the ``retrySchedule`` field.
    """
    if value is None:
        return DEFAULT_SCHEDULE
    if isinstance(value, str):
        if value in PRESETS:
            return PRESETS[value]
        names = ", ".join(sorted(PRESETS))
        raise InvalidInput.field("retrySchedule", f"unknown preset {value!r}; one of: {names}")
    if not isinstance(value, Sequence) or isinstance(value, bytes | bytearray):
        raise InvalidInput.field("retrySchedule", "a preset name or a list of delays in seconds")
    if not 1 <= len(value) <= MAX_ATTEMPTS:
        raise InvalidInput.field(
            "retrySchedule", f"between 1 and {MAX_ATTEMPTS} delays, got {len(value)}"
        )
    delays: list[float] = []
    for i, item in enumerate(value):
        # bool is an int in Python, but "true seconds" is a mistake, not a delay.
        if isinstance(item, bool) or not isinstance(item, int | float):
            raise InvalidInput.field(f"retrySchedule.{i}", "a delay is a number of seconds")
        if not math.isfinite(item) or item < 0:
            raise InvalidInput.field(f"retrySchedule.{i}", "a delay is a non-negative number")
        if item > MAX_DELAY:
            raise InvalidInput.field(f"retrySchedule.{i}", "a delay is at most 24 h (86400 s)")
        delays.append(float(item))
    return tuple(delays)


@dataclass(frozen=True)
class Outcome:
    """What one delivery attempt produced.

    ``status`` is the HTTP status when a response came back; ``error_class`` names the failure
    (``OutboundError.error_class``: timeout, refused, unavailable, ...); ``retry_after`` is the
    already parsed Retry-After in seconds; ``gone`` is a 410, which disables the subscription.
    """

    success: bool
    status: int | None = None
    error_class: str | None = None
    retry_after: float | None = None
    gone: bool = False

    @classmethod
    def delivered(cls, status: int) -> Outcome:
        return cls(success=True, status=status)

    @classmethod
    def failed(cls, error: OutboundError) -> Outcome:
        """The outcome of a failed attempt, from the error the HTTP layer raised."""
        if isinstance(error, UpstreamStatusError):
            return cls(
                success=False,
                status=error.status,
                error_class=error.error_class,
                retry_after=error.retry_after,
                gone=error.status == GONE,
            )
        return cls(success=False, error_class=error.error_class)


def first_attempt_at(schedule: Sequence[float], now: datetime) -> datetime:
    """When a new delivery's first attempt is due: ``now`` + entry 0, without jitter."""
    return now + timedelta(seconds=schedule[0])


def next_attempt(
    schedule: Sequence[float],
    attempt_number: int,
    outcome: Outcome,
    now: datetime,
    rng: random.Random,
    *,
    jitter: float = JITTER,
) -> datetime | None:
    """When to try again after attempt ``attempt_number`` (1-based) ended with ``outcome``.

    ``None`` means stop: the attempt succeeded, the endpoint answered 410 (the caller then
    disables the subscription), or it was the schedule's last attempt (the delivery is failed,
    kept and replayable). Every other failure is retried, including those ``errors.py`` calls
    non-retryable (4xx, TLS, blocked address): an endpoint's owner often fixes it within the
    schedule's hours, which is what the schedule is for.

    The delay is the schedule's next entry times a factor drawn from ``rng`` in
    ``[1 - jitter, 1 + jitter]``, so failed deliveries do not come back in lockstep. On a 429 or
    503 with a Retry-After, the delay is ``max(jittered delay, retry_after)``, with retry_after
    clamped to ``[MIN_RETRY_AFTER, MAX_RETRY_AFTER]``: jitter may lengthen the wait the server
    asked for, never shorten it. No delay exceeds 24 h.
    """
    if attempt_number < 1:
        raise ValueError("attempt numbers start at 1")
    if outcome.success or outcome.gone or attempt_number >= len(schedule):
        return None
    delay = schedule[attempt_number] * (1 + rng.uniform(-jitter, jitter))
    if outcome.status in RETRY_AFTER_STATUSES and outcome.retry_after is not None:
        asked = min(max(outcome.retry_after, MIN_RETRY_AFTER), MAX_RETRY_AFTER)
        delay = max(delay, asked)
    return now + timedelta(seconds=min(delay, MAX_DELAY))


def should_disable(
    consecutive_failures: int,
    first_failure_at: datetime | None,
    now: datetime,
    *,
    max_failures: int = 10,
    max_window: timedelta = timedelta(days=5),
) -> str | None:
    """Why a subscription should be disabled now, or ``None`` to keep it.

    ``consecutive_failures`` counts deliveries (not attempts) that ended failed since the last
    success, and ``first_failure_at`` is when the first of them failed. Both limits are
    inclusive: the 10th failure, or a failure exactly 5 days after the first, disables. The text
    is what the subscription's status shows.
    """
    if max_failures < 1 or max_window <= timedelta(0):
        raise ValueError("max_failures and max_window must be positive")
    if consecutive_failures <= 0:
        return None
    if consecutive_failures >= max_failures:
        return f"{consecutive_failures} consecutive failed deliveries"
    if first_failure_at is not None and now - first_failure_at >= max_window:
        since = first_failure_at.astimezone(UTC).isoformat(timespec="seconds")
        since = since.replace("+00:00", "Z")
        return f"failing continuously since {since} ({_duration(max_window)})"
    return None


def _duration(span: timedelta) -> str:
    """``5 days``, ``1 day``, ``36 hours``, ``90 minutes``: the largest whole unit."""
    seconds = int(span.total_seconds())
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute"), (1, "second")):
        if seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'' if count == 1 else 's'}"
    raise AssertionError("unreachable: every whole number of seconds divides by 1")
