"""The ``webhook.deliver`` job handler: one attempt of one delivery.

One run::

    load delivery + event + subscription (read; one statement for the jobs claimed together)
      delivery no longer pending             -> job done, nothing sent
      subscription gone, switched off or
      disabled                               -> delivery cancelled, job done
      over the rate limit / no free slot     -> RetryLater shortly (no attempt counted)
    POST the signed body (outside any transaction)
    record, atomically: the attempt row, the delivery's new state, the subscription's
    failure counters (and its disabling), and the job's settle fenced by its lease

Successes of subscriptions with a clean record (the common case) are recorded in groups,
one statement for the deliveries that finish together (``deliveries.record_successes``);
failures, retries and the rest go one by one through the retry policy.

Because the attempt's effects commit with the job's settle, a worker that dies mid-way
leaves the job to be rescued and the attempt is made again, never lost (at least once).
``webhook-id`` is the delivery id, the same on every retry of it, which is what Standard
Webhooks asks of a message id (receivers deduplicate on it); each subscription's copy of an
event is its own message.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection
from yarl import URL

from isthmus.coalescer import Coalescer
from isthmus.domain.auth import Actor
from isthmus.domain.ids import new_id
from isthmus.domain.records import WebhookSubscription
from isthmus.domain.webhooks import MAX_TIMEOUT, SubscriptionStatus
from isthmus.errors import InvalidInput, OutboundError, UpstreamStatusError
from isthmus.http import USER_AGENT, OutboundHTTP, raise_for_status
from isthmus.job import Job, RetryLater
from isthmus.services.audit import record
from isthmus.store import deliveries as repo
from isthmus.store.db import Store
from isthmus.vault import Vault
from isthmus.webhooks.publish import publish
from isthmus.webhooks.retry import Outcome, next_attempt, should_disable
from isthmus.webhooks.signing import delivery_headers, payload
from isthmus.webhooks.signing_secrets import SigningSecrets
from isthmus.webhooks.throttle import Throttle

log = logging.getLogger("isthmus.webhooks")

MAX_RESPONSE_BODY = 4096
_URL_CACHE_MAX = 10_000
DISABLED_EVENT = "webhook.disabled"
GONE_REASON = "the endpoint answered 410 Gone"


@dataclass(frozen=True)
class Attempt:
    """What one POST gave: the outcome for the retry policy and what the log keeps."""

    outcome: Outcome
    status_code: int | None
    response_body: str | None
    latency_ms: float
    error_class: str | None = None
    error_message: str | None = None


def _clean(text: str | None) -> str | None:
    # PostgreSQL text cannot hold NUL; a receiver's body may.
    return text.replace("\x00", "\ufffd") if text is not None else None


#: A loaded delivery and the bodies made for its batch so far (by event id).
_Loaded = tuple[repo.Loaded, dict[str, bytes]]


class DeliveryHandler:
    """Call it with a claimed ``webhook.deliver`` job (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        vault: Vault,
        outbound: OutboundHTTP,
        throttle: Throttle,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.secrets = SigningSecrets(vault)
        self.outbound = outbound
        self.throttle = throttle
        self.rng = rng or random.Random()
        self._load: Coalescer[str, _Loaded | None] = Coalescer(self._load_many)
        self._record_success: Coalescer[tuple[Job, repo.Success], bool] = Coalescer(
            self._record_many
        )
        self._urls: dict[str, URL] = {}
        self._opening: dict[tuple[str, repo.SecretsStamp], asyncio.Future[list[str]]] = {}
        # On SQLite every write waits for the one writer: a slot freed before its record
        # only brings the next claim forward, and more, smaller write transactions take
        # longer in all (measured: 15 % fewer deliveries a second).
        self._settle_later = store.dialect == "postgresql"

    async def prepare(self, jobs: Sequence[Job]) -> None:
        """Load the deliveries of jobs claimed together, in one statement, before their
        handlers start (see ``isthmus.worker``)."""
        loaded = await self._load_many([_delivery_id(job) for job in jobs])
        for job, found in zip(jobs, loaded, strict=True):
            job.prepared = (found,)

    async def __call__(self, job: Job) -> None:
        now = job.clock()
        if isinstance(job.prepared, tuple):
            loaded: _Loaded | None = job.prepared[0]
        else:
            loaded = await self._load(_delivery_id(job))
        if loaded is None or loaded[0][0].status != repo.PENDING:
            return  # settled meanwhile (or removed): the worker completes the job
        (work, sub, stamp), bodies = loaded
        refusal = _refusal(sub)
        if sub is None or refusal:
            async with self.store.transaction() as conn:
                await repo.cancel(conn, work.id, refusal or "subscription deleted", now)
                await job.complete_in(conn)
            return

        secrets = self.secrets.cached(sub, now, stamp)
        if secrets is None:  # opened again only when they changed, or once in a while
            secrets = await self._open_secrets(sub, now, stamp)
        if sub.rate_limit_per_second or sub.max_concurrency or self.throttle.is_slow(sub):
            attempt = await self._throttled(work, sub, secrets, bodies, now)
        else:  # nothing for the throttle to count
            attempt = await self._sign_and_send(work, sub, secrets, bodies, now)
        self.throttle.observe(sub, attempt.latency_ms / 1000)
        await self._record(job, work, sub, attempt)

    async def _throttled(
        self,
        work: repo.DeliveryWork,
        sub: WebhookSubscription,
        secrets: list[str],
        bodies: dict[str, bytes],
        now: datetime,
    ) -> Attempt:
        delay = await self.throttle.rate_delay(sub)
        if delay is not None:
            raise RetryLater("subscription rate limit", delay=delay)
        async with self.throttle.slot(sub) as refused:
            if refused is not None:
                raise RetryLater(refused.reason, delay=refused.delay)
            return await self._sign_and_send(work, sub, secrets, bodies, now)

    async def _sign_and_send(
        self,
        work: repo.DeliveryWork,
        sub: WebhookSubscription,
        secrets: list[str],
        bodies: dict[str, bytes],
        now: datetime,
    ) -> Attempt:
        # Every subscription's copy of an event has the same body: made once a batch.
        body = bodies.get(work.event_id)
        if body is None:
            body = bodies[work.event_id] = payload(
                work.event_type, work.event_created_at, work.tenant_id, work.data
            )
        headers = delivery_headers(
            secrets=secrets,
            msg_id=work.id,
            timestamp=int(now.timestamp()),
            body=body,
            subscription_id=sub.id,
            event_type=work.event_type,
            user_agent=USER_AGENT,
            extra=sub.headers,
        )
        return await self._send(sub, headers, body)

    async def _send(
        self, sub: WebhookSubscription, headers: dict[str, str], body: bytes
    ) -> Attempt:
        started = time.perf_counter()
        try:
            response = await self.outbound.request(
                "POST",
                self._url(sub.url),
                headers=headers,
                data=body,
                timeout=float(min(sub.timeout_seconds, MAX_TIMEOUT)),
            )
        except OutboundError as exc:
            latency = _ms(time.perf_counter() - started)
            return Attempt(Outcome.failed(exc), None, None, latency, exc.error_class, exc.message)
        text = _clean(response.body[:MAX_RESPONSE_BODY].decode("utf-8", errors="replace"))
        latency = _ms(response.elapsed)
        try:
            raise_for_status(response)
        except UpstreamStatusError as exc:
            return Attempt(
                Outcome.failed(exc), exc.status, text, latency, exc.error_class, exc.message
            )
        return Attempt(Outcome.delivered(response.status), response.status, text, latency)

    async def _record(
        self, job: Job, work: repo.DeliveryWork, sub: WebhookSubscription, attempt: Attempt
    ) -> None:
        now = job.clock()
        number = work.attempts + 1
        outcome = attempt.outcome
        attempt_id = new_id("att")
        clean_record = not sub.consecutive_failures and sub.first_failure_at is None
        if outcome.success and clean_record and attempt.status_code is not None:
            # The common case, grouped with the successes finishing together: the attempt,
            # the delivery's state and the job's completion commit together, or (lease
            # lost) none of them.
            success = repo.Success(
                job_id=job.id,
                lease_token=job.lease_token,
                delivery_id=work.id,
                tenant_id=work.tenant_id,
                attempts=number,
                attempt_id=attempt_id,
                at=now,
                status_code=attempt.status_code,
                response_body=attempt.response_body,
                latency_ms=attempt.latency_ms,
            )
            recorded = self._record_success.submit((job, success))
            if self._settle_later:
                # The slot is free now; the worker waits for the record in the background.
                job.settle_later(recorded)
            else:
                job.completed(await recorded)
            return
        retry_at = next_attempt(sub.retry_schedule, number, outcome, now, self.rng)
        error = _clean(attempt.error_message)
        row = {
            "id": attempt_id,
            "delivery_id": work.id,
            "tenant_id": work.tenant_id,
            "attempted_at": now,
            "status_code": attempt.status_code,
            "response_body": attempt.response_body,
            "latency_ms": attempt.latency_ms,
            "error_class": attempt.error_class,
            "error_message": error,
        }
        state: dict[str, Any] = {
            "last_status_code": attempt.status_code,
            "last_error": error,
            "updated_at": now,
        }
        if outcome.success:
            state |= {"status": "delivered", "delivered_at": now, "next_attempt_at": None}
        elif retry_at is not None:
            state |= {"status": repo.PENDING, "next_attempt_at": retry_at}
        else:
            state |= {"status": "failed", "next_attempt_at": None}
        async with self.store.transaction() as conn:
            await repo.record_attempt(conn, row)
            if not await repo.settle(conn, work.id, number, **state):
                # Changed by someone else meanwhile (cancelled, retried by hand): the attempt
                # stays in the log, the delivery's state is theirs.
                await job.complete_in(conn)
                return
            if outcome.success:
                if sub.consecutive_failures or sub.first_failure_at is not None:
                    await repo.reset_failures(conn, sub.id)
                await job.complete_in(conn)
            elif retry_at is not None:
                await job.retry_in(conn, run_at=retry_at, error=error or "delivery failed")
            else:
                await self._after_final_failure(conn, sub, outcome, now)
                await job.fail_in(conn, error=error or "delivery failed")

    async def _open_secrets(
        self, sub: WebhookSubscription, now: datetime, stamp: repo.SecretsStamp
    ) -> list[str]:
        """One read of a subscription's secrets for all its deliveries that find them not
        cached at once (a batch claimed together would each open a connection for them)."""
        key = (sub.id, stamp)
        opening = self._opening.get(key)
        if opening is None:
            opening = self._opening[key] = asyncio.ensure_future(
                self._read_secrets(sub, now, stamp)
            )
            opening.add_done_callback(lambda _done: self._opening.pop(key, None))
        return list(await asyncio.shield(opening))

    async def _read_secrets(
        self, sub: WebhookSubscription, now: datetime, stamp: repo.SecretsStamp
    ) -> list[str]:
        async with self.store.read() as conn:
            return await self.secrets.active_cached(conn, sub, now, stamp)

    def _url(self, url: str) -> URL | str:
        """The endpoint parsed once, not at every delivery (the client still vets it each
        time); a URL that does not parse goes as given, for the client to refuse."""
        parsed = self._urls.get(url)
        if parsed is None:
            try:
                parsed = URL(url)
            except (TypeError, ValueError):
                return url
            if len(self._urls) >= _URL_CACHE_MAX:
                self._urls.clear()
            self._urls[url] = parsed
        return parsed

    async def _load_many(self, delivery_ids: list[str]) -> list[_Loaded | None]:
        found = await repo.load_many(self.store, delivery_ids)
        bodies: dict[str, bytes] = {}  # event id -> body, shared by the batch
        return [
            (loaded, bodies) if (loaded := found.get(delivery_id)) is not None else None
            for delivery_id in delivery_ids
        ]

    async def _record_many(self, batch: list[tuple[Job, repo.Success]]) -> list[bool]:
        held = await repo.record_successes(self.store, [success for _job, success in batch])
        for job, _success in batch:
            # Marked here too, for a job whose task was cancelled meanwhile (a stop): the
            # worker must not hand it back once its success is recorded.
            job.settled = job.settled or job.id in held
        return [job.id in held for job, _success in batch]

    async def _after_final_failure(
        self, conn: AsyncConnection, sub: WebhookSubscription, outcome: Outcome, now: datetime
    ) -> None:
        """Count the failed delivery against the subscription; disable it at a 410 or when
        ``should_disable`` says so."""
        reason: str | None = GONE_REASON if outcome.gone else None
        counted = await repo.count_failure(conn, sub.id, now)
        if reason is None and counted is not None:
            reason = should_disable(counted[0], counted[1], now)
        if reason is not None:
            await disable(conn, sub, reason, now)


async def disable(
    conn: AsyncConnection, sub: WebhookSubscription, reason: str, now: datetime
) -> None:
    """Disable the subscription with ``reason``, record it in the audit trail and publish
    ``webhook.disabled`` to the tenant's other receiving subscriptions (this one no longer
    receives). A tenant that archived that event type simply gets no event."""
    if not await repo.disable(conn, sub.id, reason, now):
        return  # already disabled: announced once, by whoever did it
    log.warning("webhook %s disabled: %s", sub.id, reason)
    actor = Actor(sub.tenant_id, "system")
    diff = {"status": {"from": "active", "to": "disabled"}, "reason": reason}
    await record(conn, actor, "webhook.disable", "webhook", sub.id, diff)
    data = {"subscriptionId": sub.id, "name": sub.name, "reason": reason}
    try:
        async with conn.begin_nested():
            await publish(
                conn, tenant_id=sub.tenant_id, event_type=DISABLED_EVENT, data=data, now=now
            )
    except InvalidInput as exc:
        log.info("webhook.disabled for %s not published: %s", sub.id, exc.message)


def _delivery_id(job: Job) -> str:
    return str(job.payload.get("deliveryId", ""))


def _refusal(sub: WebhookSubscription | None) -> str | None:
    """Why the subscription takes no deliveries now, or None if it does."""
    if sub is None:
        return "subscription deleted"
    if sub.status is SubscriptionStatus.DISABLED:
        return f"subscription disabled: {sub.disabled_reason or 'no reason given'}"
    if not sub.is_active:
        return "subscription switched off (isActive false)"
    return None


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)
