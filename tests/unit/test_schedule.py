"""Polling schedules by tables: next poll times across DST changes, month ends and leap
years, cron expressions, validation, retry delays, health and the end-of-run rule.

Expected times are written out by hand, in UTC, from the published DST dates of 2026:
Europe/Berlin springs forward on 29 March (02:00 CET -> 03:00 CEST, 01:00 UTC) and falls back
on 25 October (03:00 CEST -> 02:00 CET, 01:00 UTC); America/New_York springs forward on
8 March (02:00 EST -> 03:00 EDT, 07:00 UTC) and falls back on 1 November (02:00 EDT -> 01:00
EST, 06:00 UTC).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from isthmus.domain.integrations import Health
from isthmus.domain.schedule import (
    AfterRun,
    Frequency,
    LastRun,
    Schedule,
    _consecutive_days,
    _consecutive_days_walked,
    after_run,
    cron_problem,
    day_number,
    following,
    health,
    next_poll_at,
    parse_schedule,
    retry_delay,
)
from isthmus.errors import InvalidInput


def utc(text: str) -> datetime:
    """``2026-03-29 01:00`` -> that instant in UTC."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def schedule(frequency: str = "daily", **fields: Any) -> Schedule:
    return parse_schedule(frequency=frequency, **fields)


def series(s: Schedule, after: str, n: int) -> list[str]:
    """The next ``n`` poll times after ``after``, as UTC ``YYYY-MM-DD HH:MM``."""
    found, at = [], utc(after)
    for _ in range(n):
        at = next_poll_at(s, at)
        assert at.tzinfo is UTC
        found.append(at.strftime("%Y-%m-%d %H:%M"))
    return found


BERLIN = {"timezone": "Europe/Berlin"}
NEW_YORK = {"timezone": "America/New_York"}


# -- daily, weekly, monthly at a time of day ---------------------------------------------


@pytest.mark.parametrize(
    ("frequency", "fields", "after", "expected"),
    [
        # The default: daily at 02:00 UTC; "after" is exclusive.
        ("daily", {}, "2026-01-15 01:00", ["2026-01-15 02:00", "2026-01-16 02:00"]),
        ("daily", {}, "2026-01-15 02:00", ["2026-01-16 02:00", "2026-01-17 02:00"]),
        # Berlin, spring forward: 02:30 does not exist on 29 March -> 03:00 CEST, the
        # first instant after the gap; the day after, 02:30 CEST again.
        (
            "daily",
            {**BERLIN, "time_of_day": "02:30"},
            "2026-03-28 12:00",
            ["2026-03-29 01:00", "2026-03-30 00:30"],
        ),
        # The first minute of the gap, and the minute before it.
        ("daily", {**BERLIN, "time_of_day": "02:00"}, "2026-03-28 12:00", ["2026-03-29 01:00"]),
        ("daily", {**BERLIN, "time_of_day": "01:59"}, "2026-03-28 12:00", ["2026-03-29 00:59"]),
        # Berlin, fall back: 02:30 happens twice on 25 October; it runs once, at the first
        # (00:30 UTC, CEST), not again at 01:30 UTC (CET).
        (
            "daily",
            {**BERLIN, "time_of_day": "02:30"},
            "2026-10-24 12:00",
            ["2026-10-25 00:30", "2026-10-26 01:30"],
        ),
        # Asked between the two occurrences: the second one is not a new run.
        ("daily", {**BERLIN, "time_of_day": "02:30"}, "2026-10-25 01:00", ["2026-10-26 01:30"]),
        # New York, spring forward at 02:00 EST: 02:15 -> 03:00 EDT (07:00 UTC).
        (
            "daily",
            {**NEW_YORK, "time_of_day": "02:15"},
            "2026-03-07 12:00",
            ["2026-03-08 07:00", "2026-03-09 06:15"],
        ),
        # New York, fall back: 01:30 first as EDT (05:30 UTC), next day as EST.
        (
            "daily",
            {**NEW_YORK, "time_of_day": "01:30"},
            "2026-10-31 12:00",
            ["2026-11-01 05:30", "2026-11-02 06:30"],
        ),
        # A gap at midnight (Santiago springs forward 00:00 -> 01:00 on 6 September).
        (
            "daily",
            {"timezone": "America/Santiago", "time_of_day": "00:30"},
            "2026-09-05 12:00",
            ["2026-09-06 04:00", "2026-09-07 03:30"],
        ),
        # A 30-minute change (Lord Howe Island, 02:00 -> 02:30 on 4 October).
        (
            "daily",
            {"timezone": "Australia/Lord_Howe", "time_of_day": "02:10"},
            "2026-10-03 00:00",
            ["2026-10-03 15:30", "2026-10-04 15:10"],
        ),
        # Southern hemisphere fall back (Sydney, 03:00 AEDT -> 02:00 AEST on 5 April).
        (
            "daily",
            {"timezone": "Australia/Sydney", "time_of_day": "02:30"},
            "2026-04-04 00:00",
            ["2026-04-04 15:30", "2026-04-05 16:30"],
        ),
        # A zone half an hour off UTC.
        ("daily", {"timezone": "Asia/Kolkata"}, "2026-01-01 00:00", ["2026-01-01 20:30"]),
        # Weekly, Monday = 0: from a Wednesday to the next Mondays, 09:00 Berlin (CET).
        (
            "weekly",
            {**BERLIN, "day_of_week": 0, "time_of_day": "09:00"},
            "2026-01-14 12:00",
            ["2026-01-19 08:00", "2026-01-26 08:00"],
        ),
        # Weekly on Sunday (6), the Sundays of both Berlin changes.
        (
            "weekly",
            {**BERLIN, "day_of_week": 6, "time_of_day": "02:30"},
            "2026-03-25 00:00",
            ["2026-03-29 01:00", "2026-04-05 00:30"],
        ),
        (
            "weekly",
            {**BERLIN, "day_of_week": 6, "time_of_day": "02:30"},
            "2026-10-21 00:00",
            ["2026-10-25 00:30", "2026-11-01 01:30"],
        ),
        # Monthly on the 31st: each month's last day when it is shorter.
        (
            "monthly",
            {"day_of_month": 31},
            "2026-01-01 00:00",
            [
                "2026-01-31 02:00",
                "2026-02-28 02:00",
                "2026-03-31 02:00",
                "2026-04-30 02:00",
                "2026-05-31 02:00",
                "2026-06-30 02:00",
            ],
        ),
        # Leap years: 29 February 2028, 28 February 2027 and 2100 (not a leap year).
        ("monthly", {"day_of_month": 30}, "2028-02-01 00:00", ["2028-02-29 02:00"]),
        ("monthly", {"day_of_month": 29}, "2027-02-01 00:00", ["2027-02-28 02:00"]),
        ("monthly", {"day_of_month": 29}, "2100-02-01 00:00", ["2100-02-28 02:00"]),
        # Monthly on a day that falls into a spring-forward gap (New York, 8 March 2026).
        (
            "monthly",
            {**NEW_YORK, "day_of_month": 8, "time_of_day": "02:30"},
            "2026-03-01 00:00",
            ["2026-03-08 07:00", "2026-04-08 06:30"],
        ),
    ],
)
def test_next_poll_at_a_time_of_day(
    frequency: str, fields: dict[str, Any], after: str, expected: list[str]
) -> None:
    assert series(schedule(frequency, **fields), after, len(expected)) == expected


@pytest.mark.parametrize(
    ("fields", "after", "expected"),
    [
        # Every real hour through both New York changes: none skipped, none doubled.
        (
            {**NEW_YORK, "time_of_day": "00:20"},
            "2026-03-08 05:00",
            ["2026-03-08 05:20", "2026-03-08 06:20", "2026-03-08 07:20", "2026-03-08 08:20"],
        ),
        (
            {**NEW_YORK, "time_of_day": "00:20"},
            "2026-11-01 04:00",
            ["2026-11-01 04:20", "2026-11-01 05:20", "2026-11-01 06:20", "2026-11-01 07:20"],
        ),
        # Only the minute of timeOfDay counts; the default is on the hour.
        ({"time_of_day": "17:45"}, "2026-01-01 10:50", ["2026-01-01 11:45", "2026-01-01 12:45"]),
        ({}, "2026-01-01 10:00", ["2026-01-01 11:00", "2026-01-01 12:00"]),
        # Local :00 in Kolkata is :30 UTC.
        ({"timezone": "Asia/Kolkata"}, "2026-01-01 00:00", ["2026-01-01 00:30"]),
        # Across Lord Howe's 30-minute change (15:30 UTC) local :00 moves from :30 UTC to
        # :00 UTC: one interval of 90 minutes, none shorter than an hour.
        (
            {"timezone": "Australia/Lord_Howe"},
            "2026-10-03 14:00",
            ["2026-10-03 14:30", "2026-10-03 16:00", "2026-10-03 17:00"],
        ),
    ],
)
def test_next_poll_at_hourly(fields: dict[str, Any], after: str, expected: list[str]) -> None:
    assert series(schedule("hourly", **fields), after, len(expected)) == expected


@pytest.mark.parametrize(
    ("cron", "fields", "after", "expected"),
    [
        ("30 2 * * 1-5", BERLIN, "2026-01-16 12:00", ["2026-01-19 01:30", "2026-01-20 01:30"]),
        ("0 */6 * * *", {}, "2026-01-01 05:59", ["2026-01-01 06:00", "2026-01-01 12:00"]),
        ("@monthly", {}, "2026-01-15 00:00", ["2026-02-01 00:00", "2026-03-01 00:00"]),
        ("@daily", NEW_YORK, "2026-01-01 00:00", ["2026-01-01 05:00"]),
        # Every 15 minutes through New York's spring forward: 01:45 EST, then 03:00 EDT
        # (02:00-02:45 do not exist and fold into the gap's end, once).
        (
            "*/15 * * * *",
            NEW_YORK,
            "2026-03-08 06:40",
            ["2026-03-08 06:45", "2026-03-08 07:00", "2026-03-08 07:15"],
        ),
        # ... and through the fall back: the repeated 01:xx hour runs once, as EDT.
        (
            "*/30 * * * *",
            NEW_YORK,
            "2026-11-01 05:00",
            ["2026-11-01 05:30", "2026-11-01 07:00", "2026-11-01 07:30"],
        ),
        ("0 1 * * *", NEW_YORK, "2026-10-31 12:00", ["2026-11-01 05:00", "2026-11-02 06:00"]),
        # Month ends and leap days.
        ("0 0 29 2 *", {}, "2026-01-01 00:00", ["2028-02-29 00:00", "2032-02-29 00:00"]),
        (
            "0 0 L * *",
            {},
            "2028-01-15 00:00",
            ["2028-01-31 00:00", "2028-02-29 00:00", "2028-03-31 00:00"],
        ),
        # The first Monday of each month, 09:00 Berlin.
        ("0 9 * * 1#1", BERLIN, "2026-01-01 00:00", ["2026-01-05 08:00", "2026-02-02 08:00"]),
    ],
)
def test_next_poll_at_cron(
    cron: str, fields: dict[str, Any], after: str, expected: list[str]
) -> None:
    assert series(schedule("cron", cron=cron, **fields), after, len(expected)) == expected


def test_following_never_polls_again_within_ten_minutes() -> None:
    # 02:05 and 02:55 do not exist on 8 March in New York: both fold into 03:00 EDT, five
    # minutes before 03:05. After the 03:00 poll, the next one is 03:55.
    s = schedule("cron", cron="5,55 2,3 * * *", **NEW_YORK)
    polled = utc("2026-03-08 07:00")
    assert next_poll_at(s, polled) == utc("2026-03-08 07:05")
    assert following(s, polled, polled + timedelta(seconds=30)) == utc("2026-03-08 07:55")
    # An ordinary late tick does not skip a slot: */10, polled 12:10, handed out 12:10:40.
    every_ten = schedule("cron", cron="*/10 * * * *")
    assert following(every_ten, utc("2026-01-01 12:10"), utc("2026-01-01 12:10:40")) == utc(
        "2026-01-01 12:20"
    )
    # A tick hours late runs once and goes on from now, not from the missed times.
    assert following(every_ten, utc("2026-01-01 12:10"), utc("2026-01-01 15:03")) == utc(
        "2026-01-01 15:10"
    )


def test_next_poll_at_refuses_a_naive_time() -> None:
    with pytest.raises(ValueError, match="aware"):
        next_poll_at(schedule(), datetime(2026, 1, 1))


# -- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "bad"),
    [
        ({"timezone": "Mars/Olympus_Mons"}, {"timezone"}),
        ({"timezone": ""}, {"timezone"}),
        ({"timezone": "../../etc/passwd"}, {"timezone"}),
        ({"timezone": "localtime"}, {"timezone"}),
        ({"time_of_day": "24:00"}, {"timeOfDay"}),
        ({"time_of_day": "2:30"}, {"timeOfDay"}),
        ({"time_of_day": "02:60"}, {"timeOfDay"}),
        ({"time_of_day": "0230"}, {"timeOfDay"}),
        ({"frequency": "fortnightly"}, {"frequency"}),
        ({"frequency": "weekly"}, {"dayOfWeek"}),
        ({"frequency": "weekly", "day_of_week": 7}, {"dayOfWeek"}),
        ({"frequency": "weekly", "day_of_week": -1}, {"dayOfWeek"}),
        ({"frequency": "monthly"}, {"dayOfMonth"}),
        ({"frequency": "monthly", "day_of_month": 0}, {"dayOfMonth"}),
        ({"frequency": "monthly", "day_of_month": 32}, {"dayOfMonth"}),
        ({"frequency": "cron"}, {"cron"}),
        ({"frequency": "cron", "cron": "every day"}, {"cron"}),
        ({"frequency": "cron", "cron": "0 0 1 1 * 2027"}, {"cron"}),  # a year field
        ({"frequency": "cron", "cron": "0 0 * * * *"}, {"cron"}),  # a seconds field
        ({"frequency": "cron", "cron": "0 0 30 2 *"}, {"cron"}),  # never fires
        ({"frequency": "cron", "cron": "*/5 * * * *"}, {"cron"}),
        ({"frequency": "*/5 * * * *"}, {"frequency"}),  # the expression as the frequency
        (
            {"frequency": "weekly", "timezone": "Nowhere", "time_of_day": "25:00"},
            {"timezone", "timeOfDay", "dayOfWeek"},
        ),
    ],
)
def test_bad_settings_name_every_bad_field(fields: dict[str, Any], bad: set[str]) -> None:
    with pytest.raises(InvalidInput) as raised:
        parse_schedule(**fields)
    assert {e.field for e in raised.value.errors} == bad
    for error in raised.value.errors:
        assert error.message and error.field in str(raised.value)


@pytest.mark.parametrize(
    ("cron", "gap"),
    [
        ("* * * * *", "00:00 and 00:01"),
        ("*/7 * * * *", "00:00 and 00:07"),
        ("0,5 9 * * *", "09:00 and 09:05"),
        # Across an hour: 09:55 then 10:00.
        ("0,55 9,10 * * *", "09:55 and 10:00"),
        # Across midnight, when consecutive days match.
        ("0,55 0,23 * * *", "23:55 and 00:00 the next day"),
        ("0,55 0,23 * * fri,sat", "23:55 and 00:00 the next day"),
        ("0,55 0,23 1,31 * *", "23:55 and 00:00 the next day"),  # 31 Jan -> 1 Feb
        ("0,55 0,23 1,29 2,3 *", "23:55 and 00:00 the next day"),  # 29 Feb -> 1 Mar
        ("0,55 0,23 1,L * *", "23:55 and 00:00 the next day"),
    ],
)
def test_a_cron_firing_within_ten_minutes_is_refused(cron: str, gap: str) -> None:
    problem = cron_problem(cron)
    assert problem is not None
    assert "more often than every 10 minutes" in problem
    assert gap in problem


@pytest.mark.parametrize(
    "cron",
    [
        "*/10 * * * *",
        "0,50 * * * *",  # 50 minutes, then 10 across the hour
        "55 9,10 * * *",
        "0,55 0,23 1 * *",  # 23:55 on the 1st, 00:00 on the 1st: a month apart
        "0,55 0,23 * * mon,wed,fri",
        "0,55 0,23 2-30/2 * *",
        "0,55 0,23 29 2 *",
        "0,55 0,23 L * *",
        "@hourly",
        "@yearly",
        "0 9 * * MON-FRI",
    ],
)
def test_a_cron_never_firing_within_ten_minutes_is_accepted(cron: str) -> None:
    assert cron_problem(cron) is None


@pytest.mark.parametrize(
    "days",
    [
        "* * *",
        "* * mon,wed,fri",
        "* * 5,6",
        "* * 0,6",
        "* * 7,1",
        "1,15 * *",
        "2-30/2 * *",
        "1,31 * *",
        "29 2 *",
        "1,29 2,3 *",
        "28 2 tue",
        "1,15 * mon",
        "13 * 5",
        "* 2 *",
    ],
)
def test_the_consecutive_days_rule_agrees_with_croniter(days: str) -> None:
    from croniter import croniter  # type: ignore[import-untyped]

    fields = days.split()
    expanded = croniter(f"0 0 {days}", datetime(2000, 1, 1)).expanded
    assert _consecutive_days(fields, expanded[2:]) == _consecutive_days_walked(fields)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, Schedule(Frequency.DAILY, "UTC", "02:00")),
        ({"frequency": "Daily"}, Schedule(Frequency.DAILY, "UTC", "02:00")),
        ({"frequency": "hourly"}, Schedule(Frequency.HOURLY, "UTC", "00:00")),
        (
            {"frequency": "weekly", "day_of_week": 4, "day_of_month": 9, "time_of_day": "07:15"},
            Schedule(Frequency.WEEKLY, "UTC", "07:15", day_of_week=4),
        ),
        (
            {"frequency": "monthly", "day_of_month": 31, "day_of_week": 2},
            Schedule(Frequency.MONTHLY, "UTC", "02:00", day_of_month=31),
        ),
        (
            {"frequency": "cron", "cron": " 0  3 * * * ", "time_of_day": "05:00"},
            Schedule(Frequency.CRON, "UTC", None, cron="0 3 * * *"),
        ),
        (
            {"frequency": "0 */6 * * *", "timezone": "Europe/Berlin"},
            Schedule(Frequency.CRON, "Europe/Berlin", None, cron="0 */6 * * *"),
        ),
        ({"frequency": "@daily"}, Schedule(Frequency.CRON, "UTC", None, cron="@daily")),
    ],
)
def test_good_settings_are_normalised(fields: dict[str, Any], expected: Schedule) -> None:
    assert parse_schedule(**fields) == expected


@pytest.mark.parametrize(
    ("name", "number"),
    [
        ("monday", 0),
        ("Mon", 0),
        (" Sun ", 6),
        ("WEDNESDAY", 2),
        ("thu", 3),
        ("funday", -1),
        ("mo", -1),
        ("", -1),
        ("0", -1),
    ],
)
def test_a_day_by_its_name_or_first_three_letters(name: str, number: int) -> None:
    assert day_number(name) == number


# -- retries, health, the end of a run ----------------------------------------------------


@pytest.mark.parametrize(
    ("retry", "minutes"),
    [(1, 5), (2, 10), (3, 20), (4, 40), (5, 80), (8, 640), (9, 1280), (10, 1440), (99, 1440)],
)
def test_retry_delay_doubles_from_five_minutes_up_to_a_day(retry: int, minutes: int) -> None:
    assert retry_delay(retry) == timedelta(minutes=minutes)


def test_retry_delay_counts_from_one() -> None:
    with pytest.raises(ValueError, match="from 1"):
        retry_delay(0)


@pytest.mark.parametrize(
    ("last_run", "retry_pending", "expected"),
    [
        (None, False, Health.UNKNOWN),
        (LastRun(True), False, Health.HEALTHY),
        (LastRun(True, skipped=3), False, Health.WARNING),
        (LastRun(False), True, Health.WARNING),
        (LastRun(False), False, Health.ERROR),
    ],
)
def test_health(last_run: LastRun | None, retry_pending: bool, expected: Health) -> None:
    assert health(last_run, retry_pending) is expected


NOW = utc("2026-01-15 10:07")
HOURLY = parse_schedule(frequency="hourly")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        # Success: retries cleared, next poll as scheduled.
        (
            {"polling": True, "retry_count": 2, "succeeded": True},
            AfterRun(0, utc("2026-01-15 11:00"), False, Health.HEALTHY),
        ),
        (
            {"polling": True, "retry_count": 0, "succeeded": True, "skipped": 4},
            AfterRun(0, utc("2026-01-15 11:00"), False, Health.WARNING),
        ),
        (
            {"polling": False, "retry_count": 0, "succeeded": True},
            AfterRun(0, None, False, Health.HEALTHY),
        ),
        # Failures while polling: retries 1, 2, 3 after 5, 10, 20 minutes; the fourth
        # failure (max 3 retries) disables.
        (
            {"polling": True, "retry_count": 0, "succeeded": False},
            AfterRun(1, NOW + timedelta(minutes=5), False, Health.WARNING),
        ),
        (
            {"polling": True, "retry_count": 1, "succeeded": False},
            AfterRun(2, NOW + timedelta(minutes=10), False, Health.WARNING),
        ),
        (
            {"polling": True, "retry_count": 2, "succeeded": False},
            AfterRun(3, NOW + timedelta(minutes=20), False, Health.WARNING),
        ),
        (
            {"polling": True, "retry_count": 3, "succeeded": False},
            AfterRun(3, None, True, Health.ERROR),
        ),
        (
            {"polling": True, "retry_count": 0, "max_retries": 0, "succeeded": False},
            AfterRun(0, None, True, Health.ERROR),
        ),
        # Refused credentials: off at once, whatever retries were left.
        (
            {"polling": True, "retry_count": 0, "succeeded": False, "reauthorize": True},
            AfterRun(0, None, True, Health.ERROR),
        ),
        # Not polling (a manual run): error, nothing scheduled, nothing to disable.
        (
            {"polling": False, "retry_count": 0, "succeeded": False},
            AfterRun(0, None, False, Health.ERROR),
        ),
    ],
)
def test_after_run(args: dict[str, Any], expected: AfterRun) -> None:
    decided = after_run(
        HOURLY,
        polling=args["polling"],
        retry_count=args["retry_count"],
        max_retries=args.get("max_retries", 3),
        succeeded=args["succeeded"],
        skipped=args.get("skipped", 0),
        needs_reauthorization=args.get("reauthorize", False),
        now=NOW,
    )
    assert decided == expected
