"""The test call of a subscription: one signed sample event, sent at once, measured."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from isthmus.domain.ids import new_id
from isthmus.domain.records import WebhookSubscription
from isthmus.domain.webhooks import TEST_EVENT_TYPE
from isthmus.errors import OutboundError, UpstreamStatusError
from isthmus.http import USER_AGENT, OutboundHTTP, raise_for_status
from isthmus.webhooks.signing import delivery_headers, payload

TEST_DATA = {"test": True}


@dataclass(frozen=True)
class ProbeResult:
    """How the endpoint answered: ``status_code`` when a response came back; ``error`` is the
    failure's ``error_class`` (blocked, refused, timeout, unavailable, ...) and
    ``error_message`` says more, with the URL's secrets redacted."""

    success: bool
    status_code: int | None
    latency_ms: float
    error: str | None = None
    error_message: str | None = None


async def send_test_event(
    outbound: OutboundHTTP,
    sub: WebhookSubscription,
    secrets: Sequence[str],
    now: datetime,
) -> ProbeResult:
    """POST a ``webhook.test`` event with ``{"test": true}`` as its data, signed with
    ``secrets`` exactly as a delivery is, within the subscription's timeout.

    Never raises for the endpoint's sake: a blocked address, a network failure or a non-2xx
    answer is a result with ``success`` false. Redirects are not followed (3xx fails).
    """
    body = payload(TEST_EVENT_TYPE, now, sub.tenant_id, TEST_DATA)
    headers = delivery_headers(
        secrets=secrets,
        msg_id=new_id("msg"),
        timestamp=int(now.timestamp()),
        body=body,
        subscription_id=sub.id,
        event_type=TEST_EVENT_TYPE,
        user_agent=USER_AGENT,
        extra=sub.headers,
    )
    started = time.perf_counter()
    try:
        response = await outbound.request(
            "POST", sub.url, headers=headers, data=body, timeout=float(sub.timeout_seconds)
        )
    except OutboundError as exc:
        elapsed = time.perf_counter() - started
        return ProbeResult(False, None, _ms(elapsed), exc.error_class, exc.message)
    try:
        raise_for_status(response)
    except UpstreamStatusError as exc:
        return ProbeResult(False, exc.status, _ms(response.elapsed), exc.error_class, exc.message)
    return ProbeResult(True, response.status, _ms(response.elapsed))


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)
