"""Bodies of ``/api/v1/integrations/{id}/polling``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BeforeValidator, Field, StrictBool, StrictInt, StrictStr, WithJsonSchema
from pydantic_core import PydanticCustomError

from isthmus.api.schemas import Body, Out
from isthmus.domain.integrations import Health
from isthmus.domain.schedule import (
    DEFAULT_FREQUENCY,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEZONE,
    MAX_RETRIES_LIMIT,
    Frequency,
    day_number,
)
from isthmus.services.polling import PollingSettings, PollingView
from isthmus.store.sync_runs import RunStatus


def _day_of_week(value: object) -> object:
    if isinstance(value, str):
        return day_number(value)
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise PydanticCustomError(
        "day_of_week", "must be 0 to 6 (Monday = 0) or a day's name (monday or mon, ...)"
    )


# A number or a day's name, stored and answered as the number.
_DayOfWeek = Annotated[
    StrictInt | None,
    BeforeValidator(_day_of_week),
    WithJsonSchema({"anyOf": [{"type": "integer"}, {"type": "string"}, {"type": "null"}]}),
]


class PollingIn(Body):
    """The whole settings: what is left out takes its default."""

    enabled: StrictBool = True
    frequency: StrictStr = Field(
        DEFAULT_FREQUENCY,
        description="hourly, daily, weekly, monthly, cron (with `cron`), or a cron expression.",
        examples=["daily", "0 */6 * * *"],
    )
    cron: StrictStr | None = Field(
        None,
        description="Five fields (minute hour day-of-month month day-of-week) or @daily, ...; "
        "read in `timezone`.",
        examples=["30 2 * * 1-5"],
    )
    time_of_day: StrictStr | None = Field(
        None,
        description="HH:MM local time; hourly uses its minute. Default 02:00 (hourly: 00:00).",
        examples=["02:30"],
    )
    day_of_week: _DayOfWeek = Field(
        None,
        description="Weekly: 0 = Monday ... 6 = Sunday, or the day's name (monday or mon, ...; "
        "the answer gives its number).",
        examples=[0, "monday"],
    )
    day_of_month: StrictInt | None = Field(
        None, description="Monthly: 1-31; beyond a month's end, its last day.", examples=[1]
    )
    timezone: StrictStr = Field(DEFAULT_TIMEZONE, examples=["Europe/Berlin"])
    max_retries: StrictInt = Field(
        DEFAULT_MAX_RETRIES,
        ge=0,
        le=MAX_RETRIES_LIMIT,
        description="Failed runs retried (after 5, 10, 20, 40 ... minutes) before polling is "
        "switched off.",
    )

    def settings(self) -> PollingSettings:
        return PollingSettings(
            enabled=self.enabled,
            frequency=self.frequency,
            cron=self.cron,
            time_of_day=self.time_of_day,
            day_of_week=self.day_of_week,
            day_of_month=self.day_of_month,
            timezone=self.timezone,
            max_retries=self.max_retries,
        )


class PollingOut(Out):
    enabled: bool
    frequency: Frequency
    cron: str | None
    time_of_day: str | None
    day_of_week: int | None
    day_of_month: int | None
    timezone: str
    max_retries: int
    next_poll_at: datetime | None = Field(
        description="None while polling is off or the integration is disabled (enabled "
        "again, a poll missed meanwhile runs at once)."
    )
    last_poll_at: datetime | None = Field(description="When the scheduler last started a poll.")
    last_run_status: RunStatus | None = Field(description="The newest run's status, if any.")
    health: Health
    retry_count: int = Field(description="Failed runs in a row now being retried.")

    @classmethod
    def of(cls, view: PollingView) -> PollingOut:
        s = view.schedule
        return cls(
            enabled=view.enabled,
            frequency=s.frequency,
            cron=s.cron,
            time_of_day=s.time_of_day,
            day_of_week=s.day_of_week,
            day_of_month=s.day_of_month,
            timezone=s.timezone,
            max_retries=view.max_retries,
            next_poll_at=view.next_poll_at,
            last_poll_at=view.last_poll_at,
            last_run_status=view.last_run_status,
            health=view.health,
            retry_count=view.retry_count,
        )
