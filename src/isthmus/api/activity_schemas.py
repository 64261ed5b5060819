"""Bodies of an integration's activity routes (``/api/v1/integrations/{id}/metrics`` and
``/logs``)."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from isthmus.api.schemas import Out
from isthmus.store.integration_requests import RequestEntry, RequestMetrics


def _percent(rate: float | None) -> float | None:
    return None if rate is None else round(rate * 100, 2)


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


class MetricsOut(Out):
    total_requests: int = Field(description="Outbound calls in the log, retries included.")
    successful_requests: int = Field(description="Calls answered with a 2xx status.")
    failed_requests: int = Field(
        description="Every other call: other statuses, and calls that got no answer."
    )
    success_rate: float | None = Field(
        description="Successful calls in percent of all (null before the first call)."
    )
    error_rate: float | None = Field(description="Failed calls in percent of all.")
    average_response_time: float | None = Field(description="Average duration, milliseconds.")
    p95_response_time: float | None = Field(
        description="95th percentile duration (nearest rank), milliseconds."
    )
    last_activity: datetime | None = Field(description="When the last call was made.")

    @classmethod
    def of(cls, m: RequestMetrics) -> MetricsOut:
        return cls(
            total_requests=m.total,
            successful_requests=m.successes,
            failed_requests=m.failures,
            success_rate=_percent(m.success_rate),
            error_rate=_percent(m.error_rate),
            average_response_time=_ms(m.average_ms),
            p95_response_time=_ms(m.p95_ms),
            last_activity=m.last_at,
        )


class RequestLogOut(Out):
    id: str
    at: datetime = Field(description="When the call was made.")
    level: str = Field(description="debug, info, warn or error.")
    method: str
    url: str = Field(description="The URL called, its secrets redacted.")
    status_code: int | None = Field(description="The status answered; null if none came.")
    duration_ms: float
    bytes: int = Field(description="Size of the response body.")
    error_class: str | None = Field(
        description="Why it failed: auth, not_found, rate_limited, unavailable, rejected, "
        "timeout, dns, refused, tls, blocked, bad_response, ..."
    )
    message: str | None

    @classmethod
    def of(cls, e: RequestEntry) -> RequestLogOut:
        return cls(
            id=e.id,
            at=e.at,
            level=e.level,
            method=e.method,
            url=e.url,
            status_code=e.status_code,
            duration_ms=e.duration_ms,
            bytes=e.bytes,
            error_class=e.error_class,
            message=e.message,
        )
