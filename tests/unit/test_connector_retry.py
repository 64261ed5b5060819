"""The connector retry policy, by tables: no sleeping, jitter from a seeded random source."""

from __future__ import annotations

import random

import pytest

from isthmus.connectors.retry import RetryPolicy
from isthmus.errors import (
    BadResponse,
    BlockedAddress,
    ConfigError,
    ConnectionRefused,
    DNSFailure,
    NetworkError,
    OutboundError,
    OutboundTimeout,
    TLSFailure,
    UpstreamAuthError,
    UpstreamNotFound,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamUnavailable,
)


def status(code: int, retry_after: float | None = None) -> OutboundError:
    kind = {401: UpstreamAuthError, 404: UpstreamNotFound, 429: UpstreamRateLimited}.get(code)
    if kind is None:
        kind = UpstreamUnavailable if code >= 500 else UpstreamRejected
    return kind(f"answered {code}", status=code, retry_after=retry_after)


def schedule(policy: RetryPolicy, error: OutboundError, may_repeat: bool = True) -> list[float]:
    """The waits the policy asks for until it gives up (bounded by max_attempts)."""
    waits: list[float] = []
    for attempt in range(1, policy.max_attempts + 2):
        wait = policy.delay(attempt, error, may_repeat)
        if wait is None:
            return waits
        waits.append(wait)
    raise AssertionError("the policy never gave up")


@pytest.mark.parametrize(
    ("policy", "waits"),
    [
        (RetryPolicy(), [1.0, 2.0]),
        (RetryPolicy(max_attempts=6), [1.0, 2.0, 4.0, 8.0, 16.0]),
        (RetryPolicy(max_attempts=6, max_delay=5), [1.0, 2.0, 4.0, 5.0, 5.0]),
        (RetryPolicy(strategy="linear", initial_delay=2, max_attempts=5), [2.0, 4.0, 6.0, 8.0]),
        (RetryPolicy(strategy="fixed", initial_delay=0.5, max_attempts=4), [0.5, 0.5, 0.5]),
        (
            RetryPolicy(strategy="linear", initial_delay=3, max_delay=7, max_attempts=5),
            [3.0, 6.0, 7.0, 7.0],
        ),
        (RetryPolicy(max_attempts=1), []),
        (RetryPolicy.never(), []),
    ],
)
def test_backoff_grows_by_strategy_and_is_capped(policy: RetryPolicy, waits: list[float]) -> None:
    assert schedule(policy, status(503)) == waits


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (status(429), True),
        (status(500), True),
        (status(502), True),
        (status(503), True),
        (status(504), True),
        (status(501), False),
        (status(400), False),
        (status(401), False),
        (status(404), False),
        (status(422), False),
        (DNSFailure("cannot resolve"), True),
        (ConnectionRefused("refused"), True),
        (OutboundTimeout("timed out"), True),
        (NetworkError("reset"), True),
        (TLSFailure("bad certificate"), False),
        (BlockedAddress("private address"), False),
        (BadResponse("not JSON"), False),
    ],
)
def test_default_policy_retries_the_documented_failures(
    error: OutboundError, retried: bool
) -> None:
    policy = RetryPolicy()
    assert policy.retries(error) is retried
    assert (policy.delay(1, error, True) is not None) is retried


def test_configured_statuses_replace_the_defaults() -> None:
    policy = RetryPolicy(statuses=[409, 503])  # type: ignore[arg-type]  # a list from config
    assert policy.statuses == (409, 503)
    assert policy.delay(1, status(409), True) == 1.0
    assert policy.delay(1, status(500), True) is None


def test_network_errors_can_be_left_alone() -> None:
    policy = RetryPolicy(retry_network_errors=False)
    assert policy.delay(1, ConnectionRefused("refused"), True) is None
    assert policy.delay(1, status(503), True) == 1.0


@pytest.mark.parametrize("error", [status(503), status(429, 5), ConnectionRefused("refused")])
def test_a_request_that_may_not_repeat_is_never_retried(error: OutboundError) -> None:
    assert RetryPolicy(max_attempts=10).delay(1, error, may_repeat=False) is None


@pytest.mark.parametrize(
    ("error", "wait"),
    [
        (status(429, retry_after=7), 7.0),
        (status(503, retry_after=12.5), 12.5),
        (status(429, retry_after=0), 1.0),  # "now" does not shorten our own backoff
        (status(500, retry_after=30), 1.0),  # Retry-After means nothing on a 500
        (status(429, retry_after=None), 1.0),
    ],
)
def test_retry_after_is_honoured_on_429_and_503(error: OutboundError, wait: float) -> None:
    assert RetryPolicy().delay(1, error, True) == wait


def test_retry_after_longer_than_max_delay_gives_up_at_once() -> None:
    policy = RetryPolicy(max_delay=60)
    assert policy.delay(1, status(429, retry_after=60), True) == 60
    assert policy.delay(1, status(429, retry_after=61), True) is None


def test_jitter_stays_in_its_band_and_is_reproducible() -> None:
    policy = RetryPolicy(initial_delay=10, jitter=0.2, rng=random.Random(7), max_attempts=2)
    waits = [policy.delay(1, status(503), True) for _ in range(200)]
    assert all(w is not None and 8.0 <= w <= 12.0 for w in waits)
    assert len({round(w or 0, 6) for w in waits}) > 50  # it does vary
    again = RetryPolicy(initial_delay=10, jitter=0.2, rng=random.Random(7), max_attempts=2)
    assert [again.delay(1, status(503), True) for _ in range(200)] == waits


def test_jitter_never_exceeds_max_delay_nor_shortens_retry_after() -> None:
    policy = RetryPolicy(initial_delay=10, max_delay=10, jitter=1.0, rng=random.Random(1))
    for _ in range(100):
        assert (policy.delay(1, status(503), True) or 0) <= 10
        assert (policy.delay(1, status(429, retry_after=9.5), True) or 0) >= 9.5


@pytest.mark.parametrize(
    "kwargs",
    [
        {"strategy": "random"},
        {"max_attempts": 0},
        {"initial_delay": -1},
        {"max_delay": -1},
        {"jitter": 1.5},
    ],
)
def test_unusable_settings_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_attempts_start_at_one() -> None:
    with pytest.raises(ValueError, match="start at 1"):
        RetryPolicy().delay(0, status(503), True)
