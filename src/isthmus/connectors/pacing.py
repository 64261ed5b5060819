"""What a provider's answer says about its limits, as pure rules (tested by tables).

A response may tell the budget to hold back in two ways:

- **reactive**: a 429 or 503 with ``Retry-After`` (seconds or an HTTP date) pauses every
  caller of the integration until then;
- **proactive**: rate-limit headers say how much is left of a limit and when it refills.
  While plenty is left nothing changes; once it runs low (:data:`LOW_FRACTION` of the limit,
  or :data:`LOW_FLOOR` calls when the limit is not given) the calls still allowed are spread
  evenly over the time left, and when nothing is left every caller pauses until the refill.
  So the budget slows down before the provider answers 429.

Headers understood (names case-insensitive):

- ``X-RateLimit-Remaining`` + ``X-RateLimit-Reset`` (+ ``X-RateLimit-Limit``): the reset is
  an epoch time (seconds, or milliseconds) or seconds from now, told apart by size;
  the IETF draft's ``RateLimit-Remaining`` + ``RateLimit-Reset`` (seconds from now) alike;
- HubSpot: ``X-HubSpot-RateLimit-Remaining`` + ``X-HubSpot-RateLimit-Interval-Milliseconds``
  (+ ``X-HubSpot-RateLimit-Max``), and ``X-HubSpot-RateLimit-Secondly-Remaining`` (+
  ``-Secondly``). HubSpot does not say where in its interval a call falls, so the whole
  interval is taken as the time left (the cautious reading);
- Salesforce: ``Sforce-Limit-Info: api-usage=USED/LIMIT``, a rolling 24-hour allowance.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from isthmus.http import parse_retry_after

#: Below this share of its limit an allowance counts as running low.
LOW_FRACTION = 0.1
#: When a provider gives no limit, this many calls left counts as running low.
LOW_FLOOR = 10
#: No pause or pace lasts longer than a day, whatever a header claims.
MAX_HOLD = 86_400.0
#: Statuses whose ``Retry-After`` pauses the budget.
PAUSING_STATUSES = frozenset({429, 503})

_SALESFORCE_USAGE = re.compile(r"api-usage\s*=\s*(\d+)\s*/\s*(\d+)", re.IGNORECASE)
_EPOCH_SECONDS = 1e9  # 2001-09-09: a larger reset is a moment, not a duration
_EPOCH_MILLISECONDS = 1e12


@dataclass(frozen=True)
class Allowance:
    """What a provider says is left of one of its limits: ``remaining`` calls until
    ``reset_in`` seconds from now; ``limit`` when it says the whole."""

    remaining: int
    reset_in: float
    limit: int | None = None


@dataclass(frozen=True)
class Slowdown:
    """How to hold back: every caller waits ``pause`` seconds, and calls start at least
    ``spacing`` seconds apart for the next ``lasts`` seconds."""

    pause: float = 0.0
    spacing: float = 0.0
    lasts: float = 0.0


@dataclass(frozen=True)
class Reaction:
    """What one response asks of the budget. ``informed``: it carried rate-limit headers,
    so a pace without ``spacing`` means "plenty left" and an earlier pace can end."""

    pause: float = 0.0
    spacing: float = 0.0
    lasts: float = 0.0
    informed: bool = False


def read_allowances(headers: Mapping[str, str], now: datetime) -> list[Allowance]:
    """Every allowance the headers state (one per limit family present)."""
    h = {name.lower(): value for name, value in headers.items()}
    found: list[Allowance] = []
    for prefix in ("x-ratelimit-", "ratelimit-"):
        remaining = _int(h.get(prefix + "remaining"))
        reset = _number(h.get(prefix + "reset"))
        if remaining is not None and reset is not None:
            found.append(
                Allowance(remaining, reset_seconds(reset, now), _int(h.get(prefix + "limit")))
            )
            break  # the draft's names repeat the same limit; do not count it twice
    remaining = _int(h.get("x-hubspot-ratelimit-remaining"))
    interval_ms = _number(h.get("x-hubspot-ratelimit-interval-milliseconds"))
    if remaining is not None and interval_ms is not None:
        found.append(
            Allowance(remaining, _clamp(interval_ms / 1000), _int(h.get("x-hubspot-ratelimit-max")))
        )
    remaining = _int(h.get("x-hubspot-ratelimit-secondly-remaining"))
    if remaining is not None:
        found.append(Allowance(remaining, 1.0, _int(h.get("x-hubspot-ratelimit-secondly"))))
    if (usage := _SALESFORCE_USAGE.search(h.get("sforce-limit-info", ""))) is not None:
        used, limit = int(usage.group(1)), int(usage.group(2))
        found.append(Allowance(max(limit - used, 0), MAX_HOLD, limit))
    return found


def reset_seconds(value: float, now: datetime) -> float:
    """Seconds until a ``*-Reset`` value: an epoch time in seconds or milliseconds (told
    apart by size), else already a number of seconds from now."""
    if value >= _EPOCH_MILLISECONDS:
        value = value / 1000 - now.timestamp()
    elif value >= _EPOCH_SECONDS:
        value = value - now.timestamp()
    return _clamp(value)


def slowdown(allowance: Allowance, *, low_fraction: float = LOW_FRACTION) -> Slowdown | None:
    """How to hold back for one allowance; None while plenty is left."""
    if allowance.remaining <= 0:
        return Slowdown(pause=allowance.reset_in, lasts=allowance.reset_in)
    if allowance.limit:
        plenty = allowance.remaining > allowance.limit * low_fraction
    else:
        plenty = allowance.remaining > LOW_FLOOR
    if plenty or allowance.reset_in <= 0:
        return None
    return Slowdown(spacing=allowance.reset_in / allowance.remaining, lasts=allowance.reset_in)


def react(
    status: int,
    headers: Mapping[str, str],
    now: datetime,
    *,
    low_fraction: float = LOW_FRACTION,
) -> Reaction:
    """The reaction to one response: the longest pause and the widest spacing any of its
    signals asks for."""
    pause = 0.0
    if status in PAUSING_STATUSES:
        retry_after = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
        pause = parse_retry_after(retry_after, now, maximum=MAX_HOLD) or 0.0
    allowances = read_allowances(headers, now)
    spacing = lasts = 0.0
    for allowance in allowances:
        slow = slowdown(allowance, low_fraction=low_fraction)
        if slow is None:
            continue
        pause = max(pause, slow.pause)
        if slow.spacing > spacing:
            spacing, lasts = slow.spacing, slow.lasts
    return Reaction(pause=pause, spacing=spacing, lasts=lasts, informed=bool(allowances))


def _int(value: str | None) -> int | None:
    number = _number(value)
    return None if number is None else int(number)


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    # Some providers send "100, 100;w=60" (draft policies): the first figure is the value.
    text = value.split(",", 1)[0].split(";", 1)[0].strip()
    try:
        number = float(text)
    except ValueError:
        return None
    return number if number == number and abs(number) != float("inf") else None


def _clamp(seconds: float) -> float:
    return min(max(seconds, 0.0), MAX_HOLD)
