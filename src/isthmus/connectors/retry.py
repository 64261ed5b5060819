"""The retry policy of connector calls, as a pure value.

:meth:`RetryPolicy.delay` answers, after a failed try, how long to wait before the next one or
``None`` to give up. It reads only its arguments (and the injected random source for jitter),
so it is tested by tables without sleeping; :class:`~isthmus.connectors.client.APIClient` does
the waiting.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Literal

from isthmus.errors import ConfigError, OutboundError, TransportError, UpstreamStatusError

Strategy = Literal["exponential", "linear", "fixed"]

DEFAULT_STATUSES: tuple[int, ...] = (429, 500, 502, 503, 504)
#: Statuses whose Retry-After header means "come back after this long".
RETRY_AFTER_STATUSES = frozenset({429, 503})
_STRATEGIES = ("exponential", "linear", "fixed")
_RANDOM = random.Random()


@dataclass(frozen=True)
class RetryPolicy:
    """When a failed call is tried again.

    - ``max_attempts`` counts every try, the first included (1 = never retry).
    - A status error is retried when its status is in ``statuses``; a network failure (a
      retryable :class:`~isthmus.errors.TransportError`: DNS, refused, timeout, reset) when
      ``retry_network_errors``. Nothing else is: a TLS failure, a blocked address, an unusable
      body will not get better by asking again.
    - A request that may not repeat (a POST whose action is not declared idempotent) is never
      retried: the first try may have changed something upstream before it failed.
    - The wait before try ``n + 1`` is ``initial_delay`` times ``2 ** (n - 1)`` (exponential),
      ``n`` (linear) or 1 (fixed), at most ``max_delay``. With ``jitter`` > 0 it is multiplied
      by a factor drawn from ``rng`` in ``[1 - jitter, 1 + jitter]`` (still at most
      ``max_delay``), so callers that failed together do not come back together.
    - A 429 or 503 with Retry-After waits what the upstream asked (jitter may lengthen it,
      never shorten it). When that is more than ``max_delay`` the policy gives up at once:
      the error, carrying ``retry_after``, goes to a caller that can come back later (a
      scheduled sync) instead of holding this one.
    """

    strategy: Strategy = "exponential"
    initial_delay: float = 1.0
    max_delay: float = 60.0
    max_attempts: int = 3
    statuses: tuple[int, ...] = DEFAULT_STATUSES
    retry_network_errors: bool = True
    jitter: float = 0.0
    rng: random.Random | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.strategy not in _STRATEGIES:
            raise ConfigError(
                f"retry strategy must be one of {', '.join(_STRATEGIES)}, not {self.strategy!r}"
            )
        if self.max_attempts < 1:
            raise ConfigError("max_attempts counts the first try too: at least 1")
        if self.initial_delay < 0 or self.max_delay < 0:
            raise ConfigError("retry delays cannot be negative")
        if not 0 <= self.jitter <= 1:
            raise ConfigError("jitter is a fraction between 0 and 1")
        # A list from a config file works as well as a tuple, and the value stays hashable.
        object.__setattr__(self, "statuses", tuple(self.statuses))

    @classmethod
    def never(cls) -> RetryPolicy:
        """One try only."""
        return cls(max_attempts=1)

    def retries(self, error: OutboundError) -> bool:
        """Whether ``error`` is the kind of failure this policy tries again."""
        if isinstance(error, UpstreamStatusError):
            return error.status in self.statuses
        return self.retry_network_errors and isinstance(error, TransportError) and error.retryable

    def delay(self, attempt: int, error: OutboundError, may_repeat: bool) -> float | None:
        """Seconds to wait after try number ``attempt`` (1-based) failed with ``error``, or
        ``None`` to give up (last attempt, a request that may not repeat, an error not worth
        retrying, or a Retry-After longer than ``max_delay``)."""
        if attempt < 1:
            raise ValueError("attempt numbers start at 1")
        if attempt >= self.max_attempts or not may_repeat or not self.retries(error):
            return None
        wait = min(self._backoff(attempt), self.max_delay)
        if self.jitter and wait:
            rng = self.rng if self.rng is not None else _RANDOM
            wait = min(wait * (1 + rng.uniform(-self.jitter, self.jitter)), self.max_delay)
        asked = _retry_after(error)
        if asked is not None:
            if asked > self.max_delay:
                return None
            wait = max(wait, asked)
        return wait

    def _backoff(self, attempt: int) -> float:
        if self.strategy == "exponential":
            # The exponent is capped: 2 ** 1000 floats fine, 2 ** 10000 overflows.
            return self.initial_delay * 2.0 ** min(attempt - 1, 64)
        if self.strategy == "linear":
            return self.initial_delay * attempt
        return self.initial_delay


def _retry_after(error: OutboundError) -> float | None:
    if isinstance(error, UpstreamStatusError) and error.status in RETRY_AFTER_STATUSES:
        return error.retry_after
    return None


__all__ = ["DEFAULT_STATUSES", "RETRY_AFTER_STATUSES", "RetryPolicy", "Strategy"]
