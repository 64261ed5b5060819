"""Polling schedules: when an integration is polled next, what a schedule may be, how long a
failed run waits for its retry, and the health an integration's runs give it.

Pure: no I/O; times are aware UTC datetimes in and out. Local times are read in the
schedule's IANA time zone (``zoneinfo``), and daylight saving changes follow two rules:

- **hourly** runs every real hour, at the local minute of ``timeOfDay`` (default ``:00``): a
  DST change neither skips nor doubles a run.
- **daily**, **weekly**, **monthly** (at ``timeOfDay``, default 02:00, a quiet hour in most
  places) and **cron** expressions are wall-clock times. A local time that does not exist that
  day (spring forward) runs at the first instant after the gap; one that happens twice (fall
  back) runs once, at its first occurrence.

A monthly ``dayOfMonth`` beyond the month's length (31 in April, 30 in February) runs on the
month's last day. ``dayOfWeek`` counts from Monday = 0. No schedule may fire more often than
every ``MIN_INTERVAL`` (10 minutes); ``following`` keeps that true even where a DST gap folds
two cron times together.
"""

from __future__ import annotations

import calendar
import functools
import itertools
import re
import zoneinfo
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum

from croniter import (  # type: ignore[import-untyped]
    CroniterBadDateError,
    CroniterError,
    croniter,
)

from isthmus.domain.integrations import Health
from isthmus.errors import FieldError, InvalidInput


class Frequency(StrEnum):
    HOURLY = "hourly"
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"
    CRON = "cron"


DEFAULT_FREQUENCY = Frequency.DAILY
DEFAULT_TIMEZONE = "UTC"
#: Daily, weekly and monthly polls run at 02:00 local time unless told otherwise.
DEFAULT_TIME_OF_DAY = "02:00"
#: Hourly polls run on the hour unless told otherwise (only the minute counts).
DEFAULT_HOURLY_TIME = "00:00"
DEFAULT_MAX_RETRIES = 3
MAX_RETRIES_LIMIT = 10
MIN_INTERVAL = timedelta(minutes=10)
RETRY_BASE = timedelta(minutes=5)
MAX_RETRY_DELAY = timedelta(hours=24)

_TIME_OF_DAY = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# Bounds on the searches below; a valid schedule ends each long before them.
_MAX_DAYS = 400
_MAX_CRON_STEPS = 2000
_CALENDAR_YEARS = 28  # weekdays and leap years repeat on this cycle (1901-2099)


@dataclass(frozen=True)
class Schedule:
    """A checked schedule (see ``parse_schedule``). Fields that do not apply to the
    frequency are None: ``time_of_day`` for cron, ``day_of_week`` unless weekly,
    ``day_of_month`` unless monthly, ``cron`` unless cron."""

    frequency: Frequency = DEFAULT_FREQUENCY
    timezone: str = DEFAULT_TIMEZONE
    time_of_day: str | None = DEFAULT_TIME_OF_DAY
    day_of_week: int | None = None
    day_of_month: int | None = None
    cron: str | None = None


# -- validation ----------------------------------------------------------------------------


def parse_schedule(
    *,
    frequency: str = DEFAULT_FREQUENCY,
    timezone: str = DEFAULT_TIMEZONE,
    time_of_day: str | None = None,
    day_of_week: int | None = None,
    day_of_month: int | None = None,
    cron: str | None = None,
) -> Schedule:
    """The schedule these settings describe, or ``InvalidInput`` naming every bad field.

    ``frequency`` is hourly, daily, weekly, monthly or cron (with ``cron``), or a cron
    expression itself. ``day_of_week`` is 0 (Monday) to 6 (Sunday). Fields that do not
    apply to the frequency are dropped.
    """
    errors: list[FieldError] = []
    freq = _frequency(frequency, cron)
    if freq is None:
        errors.append(
            FieldError(
                "frequency",
                "must be hourly, daily, weekly, monthly, cron (with cron) or a cron expression",
            )
        )
    cron_field = "cron"
    if freq is Frequency.CRON and cron is None and frequency.strip().lower() != Frequency.CRON:
        cron, cron_field = frequency.strip(), "frequency"
    if timezone not in _zone_names():
        errors.append(
            FieldError(
                "timezone", f"unknown time zone {timezone!r}: use an IANA name like Europe/Berlin"
            )
        )
    if freq is Frequency.CRON:
        problem = "required when frequency is cron" if cron is None else cron_problem(cron)
        if problem:
            errors.append(FieldError(cron_field, problem))
    elif freq is not None:
        if time_of_day is not None and not _TIME_OF_DAY.match(time_of_day):
            errors.append(FieldError("timeOfDay", "must be HH:MM on a 24-hour clock, e.g. 02:30"))
        if freq is Frequency.WEEKLY and (day_of_week is None or not 0 <= day_of_week <= 6):
            errors.append(
                FieldError(
                    "dayOfWeek",
                    "weekly polling needs 0 to 6 (Monday = 0, Sunday = 6) or a day's name "
                    "(monday or mon, ...)",
                )
            )
        if freq is Frequency.MONTHLY and (day_of_month is None or not 1 <= day_of_month <= 31):
            errors.append(
                FieldError(
                    "dayOfMonth", "monthly polling needs 1 to 31 (beyond a month's end: its last)"
                )
            )
    if errors:
        raise InvalidInput("; ".join(f"{e.field}: {e.message}" for e in errors), errors)
    assert freq is not None
    if freq is Frequency.CRON:
        return Schedule(freq, timezone, None, cron=" ".join((cron or "").split()))
    default = DEFAULT_HOURLY_TIME if freq is Frequency.HOURLY else DEFAULT_TIME_OF_DAY
    return Schedule(
        freq,
        timezone,
        time_of_day or default,
        day_of_week if freq is Frequency.WEEKLY else None,
        day_of_month if freq is Frequency.MONTHLY else None,
    )


#: Monday first: a day's number is its index, as ``date.weekday()`` counts (not cron's 0 = Sunday:
#: hence names too, which no one misreads).
DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def day_number(day: str) -> int:
    """A day's name or its first three letters (any case) as its number, the index in
    ``DAY_NAMES``; any other text -1, which no schedule takes."""
    name = day.strip().lower()
    for number, full in enumerate(DAY_NAMES):
        if name in (full, full[:3]):
            return number
    return -1


def _frequency(frequency: str, cron: str | None) -> Frequency | None:
    name = frequency.strip().lower()
    if name in Frequency.__members__.values():
        return Frequency(name)
    # "or a cron expression": the expression itself given as the frequency.
    if cron is None and (name.startswith("@") or len(name.split()) > 1):
        return Frequency.CRON
    return None


@functools.cache
def _zone_names() -> frozenset[str]:
    # Only names the tz database lists (no file paths), less the host's own and placeholders.
    return frozenset(zoneinfo.available_timezones()) - {"localtime", "posixrules", "Factory"}


@functools.cache
def _zone(name: str) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(name)


def cron_problem(expression: str) -> str | None:
    """Why ``expression`` cannot be a polling schedule, or None if it can: five fields
    (minute hour day-of-month month day-of-week) or a macro like ``@daily``, firing at some
    time and never twice within ``MIN_INTERVAL``."""
    fields = _cron_fields(expression)
    if fields is None:
        return (
            "must be a cron expression of five fields (minute hour day-of-month month "
            "day-of-week), e.g. '30 2 * * 1-5', or @hourly, @daily, @weekly, @monthly, @yearly"
        )
    text = " ".join(fields)
    try:
        expanded = croniter(text, datetime(2000, 1, 1)).expanded
        croniter(text, datetime(2000, 1, 1)).get_next(datetime)
    except CroniterBadDateError:
        return "never fires: no date matches it"
    except (CroniterError, ValueError, KeyError):
        return "is not a valid cron expression"
    gap = _shortest_gap(fields, expanded)
    if gap is not None:
        minutes = MIN_INTERVAL.seconds // 60
        return (
            f"fires more often than every {minutes} minutes ({gap}); "
            f"the shortest polling interval is {minutes} minutes"
        )
    return None


def _cron_fields(expression: str) -> list[str] | None:
    text = expression.strip().lower()
    text = _MACROS.get(text, text)
    fields = text.split()
    if len(fields) != 5 or not croniter.is_valid(" ".join(fields)):
        return None
    return fields


def _values(field: list[int | str], size: int) -> list[int]:
    return list(range(size)) if "*" in field else sorted(int(v) for v in field)


def _shortest_gap(fields: list[str], expanded: list[list[int | str]]) -> str | None:
    """Two firings closer than ``MIN_INTERVAL`` in wall-clock time, described, or None.

    Within an hour the minutes tell; across an hour boundary, consecutive hours; across
    midnight (23:xx to 00:xx), whether two consecutive days both match, which is searched
    over a whole calendar cycle because day-of-month, month and weekday interact.
    """
    limit = MIN_INTERVAL.seconds // 60
    minutes, hours = _values(expanded[0], 60), _values(expanded[1], 24)
    for a, b in itertools.pairwise(minutes):
        if b - a < limit:
            return f"at {hours[0]:02d}:{a:02d} and {hours[0]:02d}:{b:02d}"
    if 60 - minutes[-1] + minutes[0] >= limit:
        return None
    last, first = minutes[-1], minutes[0]
    for h in hours:
        if h + 1 in hours:
            return f"at {h:02d}:{last:02d} and {h + 1:02d}:{first:02d}"
    if 23 in hours and 0 in hours and _consecutive_days(fields[2:], expanded[2:]):
        return f"at 23:{last:02d} and 00:{first:02d} the next day"
    return None


def _consecutive_days(fields: list[str], expanded: list[list[int | str]]) -> bool:
    """Whether two consecutive days both match the day fields (day-of-month, month,
    day-of-week), anywhere in a whole calendar cycle."""
    dom, dow = fields[0], fields[2]
    if any(c.isalpha() for c in dom) or "#" in dow or "l" in dow:
        return _consecutive_days_walked(fields)  # L, W, #: leave them to croniter
    days_of_month = set(_values(expanded[0], 32))
    months = set(_values(expanded[1], 13))
    weekdays = {d % 7 for d in _values(expanded[2], 7)}  # cron: Sunday is 0 (or 7)
    any_dom, any_dow = "*" in expanded[0], "*" in expanded[2]

    def matches(day: date) -> bool:
        if day.month not in months:
            return False
        by_dom, by_dow = day.day in days_of_month, (day.weekday() + 1) % 7 in weekdays
        if any_dom or any_dow:  # only the restricted one counts (both: every day)
            return by_dom and by_dow
        return by_dom or by_dow  # both restricted: either (cron's rule)

    day, matched = date(2000, 1, 1), False
    for _ in range(_CALENDAR_YEARS * 366):
        now_matches = matches(day)
        if matched and now_matches:
            return True
        matched, day = now_matches, day + timedelta(days=1)
    return False


def _consecutive_days_walked(fields: list[str]) -> bool:
    days = croniter(f"0 0 {' '.join(fields)}", datetime(1999, 12, 31))
    previous: datetime | None = None
    for _ in range(_CALENDAR_YEARS * 366):
        day: datetime = days.get_next(datetime)
        if day.year > 1999 + _CALENDAR_YEARS:
            return False
        if previous is not None and day - previous == timedelta(days=1):
            return True
        previous = day
    return False


# -- the next poll -------------------------------------------------------------------------


def next_poll_at(schedule: Schedule, after: datetime) -> datetime:
    """The first time strictly after ``after`` that ``schedule`` fires (UTC)."""
    if after.tzinfo is None:
        raise ValueError("after must be an aware datetime")
    after = after.astimezone(UTC)
    zone = _zone(schedule.timezone)
    if schedule.frequency is Frequency.HOURLY:
        return _next_hourly(_clock(schedule.time_of_day)[1], zone, after)
    if schedule.frequency is Frequency.CRON:
        return _next_cron(schedule.cron or "", zone, after)
    return _next_on_days(schedule, zone, after)


def following(schedule: Schedule, polled: datetime, now: datetime) -> datetime:
    """The poll after one due at ``polled`` and handed out at ``now``: the schedule's next
    time after ``now``, but never within ``MIN_INTERVAL`` of ``polled`` (a DST gap can fold
    two cron times into one instant and the next one minutes later)."""
    floor = polled.astimezone(UTC) + MIN_INTERVAL - timedelta(microseconds=1)
    return next_poll_at(schedule, max(now.astimezone(UTC), floor))


def _clock(time_of_day: str | None) -> tuple[int, int]:
    found = _TIME_OF_DAY.match(time_of_day or DEFAULT_TIME_OF_DAY)
    if found is None:
        raise ValueError(f"bad time of day {time_of_day!r}")
    return int(found.group(1)), int(found.group(2))


def _next_hourly(minute: int, zone: zoneinfo.ZoneInfo, after: datetime) -> datetime:
    at = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
    for _ in range(3 * 60):
        if at.astimezone(zone).minute == minute:
            return at
        at += timedelta(minutes=1)
    raise ValueError(f"no local minute {minute} within three hours in {zone.key}")


def _next_on_days(schedule: Schedule, zone: zoneinfo.ZoneInfo, after: datetime) -> datetime:
    at_time = time(*_clock(schedule.time_of_day))
    # From the day before: a time in a gap at the end of one day resolves into the next.
    day = after.astimezone(zone).date() - timedelta(days=1)
    for _ in range(_MAX_DAYS):
        if _runs_on(schedule, day):
            at = resolve_local(datetime.combine(day, at_time), zone)
            if at > after:
                return at
        day += timedelta(days=1)
    raise ValueError(f"{schedule} does not fire within {_MAX_DAYS} days")


def _runs_on(schedule: Schedule, day: date) -> bool:
    if schedule.frequency is Frequency.WEEKLY:
        return day.weekday() == schedule.day_of_week
    if schedule.frequency is Frequency.MONTHLY:
        last = calendar.monthrange(day.year, day.month)[1]
        return day.day == min(schedule.day_of_month or 1, last)
    return True


def _next_cron(expression: str, zone: zoneinfo.ZoneInfo, after: datetime) -> datetime:
    fields = _cron_fields(expression)
    if fields is None:
        raise ValueError(f"bad cron expression {expression!r}")
    # Cron reads wall-clock times: walk them from the wall-clock time of ``after``; those
    # of a repeated hour's second pass resolve to its first and are passed over.
    walk = croniter(" ".join(fields), after.astimezone(zone).replace(tzinfo=None))
    for _ in range(_MAX_CRON_STEPS):
        at = resolve_local(walk.get_next(datetime), zone)
        if at > after:
            return at
    raise ValueError(f"{expression!r} does not fire within {_MAX_CRON_STEPS} steps")


def resolve_local(local: datetime, zone: zoneinfo.ZoneInfo) -> datetime:
    """The UTC instant of the naive wall-clock time ``local`` in ``zone``: its first
    occurrence when the time happens twice, the end of the gap when it does not exist."""
    first = local.replace(tzinfo=zone, fold=0)
    at = first.astimezone(UTC)
    if at.astimezone(zone).replace(tzinfo=None) == local:
        return at
    # In a gap, fold=0 reads the time with the offset from before the change (an instant
    # after it) and fold=1 with the offset from after (an instant before it): the change,
    # the first instant after the gap, lies between. Changes happen on whole seconds.
    low = int(local.replace(tzinfo=zone, fold=1).astimezone(UTC).timestamp())
    high = int(at.timestamp())
    before = datetime.fromtimestamp(low, zone).utcoffset()
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, zone).utcoffset() == before:
            low = middle
        else:
            high = middle
    return datetime.fromtimestamp(high, UTC)


# -- retries and health --------------------------------------------------------------------


def retry_delay(retry: int) -> timedelta:
    """How long before retry number ``retry`` (1 = after the first failure): 5, 10, 20,
    40 minutes, ..., doubling, at most a day."""
    if retry < 1:
        raise ValueError("retries count from 1")
    doubled: int = 2 ** min(retry - 1, 20)
    return min(RETRY_BASE * doubled, MAX_RETRY_DELAY)


@dataclass(frozen=True)
class LastRun:
    """What health needs of an integration's last finished run."""

    succeeded: bool
    skipped: int = 0


def health(last_run: LastRun | None, retry_pending: bool) -> Health:
    """unknown: never run; warning: a retry is pending, or the last run worked but skipped
    records; error: the last run failed and nothing will retry it; healthy otherwise."""
    if retry_pending:
        return Health.WARNING
    if last_run is None:
        return Health.UNKNOWN
    if not last_run.succeeded:
        return Health.ERROR
    return Health.WARNING if last_run.skipped else Health.HEALTHY


@dataclass(frozen=True)
class AfterRun:
    """What a finished run does to polling: the new retry count, the next poll (None:
    none), whether polling is switched off now, and the integration's health."""

    retry_count: int
    next_poll_at: datetime | None
    disable: bool
    health: Health


def after_run(
    schedule: Schedule,
    *,
    polling: bool,
    retry_count: int,
    max_retries: int,
    succeeded: bool,
    skipped: int = 0,
    needs_reauthorization: bool = False,
    now: datetime,
) -> AfterRun:
    """The rule at the end of a run, ``polling`` telling whether scheduled polling is on.

    - success: no retry pending, the next poll as scheduled; healthy, or warning if records
      were skipped;
    - refused credentials: polling off at once, error (retrying cannot help);
    - failure while polling: retry number ``retry_count + 1`` after ``retry_delay``
      (warning), or, past ``max_retries``, polling off (error);
    - failure while not polling: error, nothing scheduled.
    """
    if succeeded:
        upcoming = next_poll_at(schedule, now) if polling else None
        return AfterRun(0, upcoming, False, health(LastRun(True, skipped), False))
    failed = health(LastRun(False), False)
    if not polling:
        return AfterRun(retry_count, None, False, failed)
    if needs_reauthorization or retry_count >= max_retries:
        return AfterRun(retry_count, None, True, failed)
    retry = retry_count + 1
    return AfterRun(retry, now + retry_delay(retry), False, health(LastRun(False), True))
