"""Webhook subscriptions: create, read, change, delete, rotate the signing secret, test.

A signing secret is handed out at two moments only, when the subscription is created and when
its secret is rotated; no read, list or audit row carries it (see ``signing_secrets``).
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from isthmus.domain.auth import Actor
from isthmus.domain.ids import new_id
from isthmus.domain.pagination import DEFAULT_LIMIT, decode_cursor
from isthmus.domain.records import Page, WebhookSubscription
from isthmus.domain.webhooks import (
    DEFAULT_GRACE_HOURS,
    DEFAULT_TIMEOUT,
    WILDCARD,
    SubscriptionStatus,
    is_wildcard,
    matches,
)
from isthmus.errors import (
    BlockedAddress,
    FieldError,
    InvalidInput,
    InvalidURL,
    NotFound,
    OutboundError,
)
from isthmus.http import OutboundHTTP, redact_headers, redact_url
from isthmus.services.audit import record
from isthmus.store import event_types as event_types_repo
from isthmus.store import subscriptions as repo
from isthmus.store.db import Store
from isthmus.store.types import utcnow
from isthmus.vault import Vault
from isthmus.webhooks import rules
from isthmus.webhooks.event_types import EventTypeService
from isthmus.webhooks.probe import ProbeResult, send_test_event
from isthmus.webhooks.signing_secrets import SigningSecrets

RESOURCE = "webhook"

# API field names, for the audit diff (the API speaks camelCase).
_FIELDS = {
    "name": "name",
    "url": "url",
    "events": "events",
    "is_active": "isActive",
    "description": "description",
    "headers": "headers",
    "rate_limit_per_second": "rateLimitPerSecond",
    "max_concurrency": "maxConcurrency",
    "timeout_seconds": "timeoutSeconds",
    "retry_schedule": "retrySchedule",
    "status": "status",
}


@dataclass(frozen=True)
class IssuedSecret:
    """A subscription and its new signing secret; ``secret`` exists only here, shown once."""

    subscription: WebhookSubscription
    secret: str


def _shown(field: str, value: Any) -> Any:
    """A field's value as the audit trail keeps it: URL and header secrets redacted."""
    if field == "url":
        return redact_url(value)
    if field == "headers":
        return redact_headers(value)
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, SubscriptionStatus):
        return str(value)
    return value


class SubscriptionService:
    def __init__(
        self, store: Store, vault: Vault, outbound: OutboundHTTP, event_types: EventTypeService
    ) -> None:
        self.store = store
        self.secrets = SigningSecrets(vault)
        self.outbound = outbound
        self.event_types = event_types

    async def _load(
        self, conn: AsyncConnection, tenant_id: str, sub_id: str, *, for_update: bool = False
    ) -> WebhookSubscription:
        found = await repo.get(conn, tenant_id, sub_id, for_update=for_update)
        if found is None:
            raise NotFound.of(RESOURCE, sub_id)
        return found

    # -- checks that need I/O ------------------------------------------------------------

    async def _check_destination(self, url: str) -> str:
        """``url`` if the hub may call it: http(s), and no address it resolves to is blocked.

        A name that does not resolve right now passes: DNS is checked again on every delivery
        (it changes), and a hiccup of the hub's resolver must not refuse a good endpoint.
        """
        url = rules.check_url_text(url)
        try:
            await self.outbound.check_destination(url)
        except (InvalidURL, BlockedAddress) as exc:
            raise InvalidInput.field("url", exc.message) from exc
        except OutboundError:
            pass  # DNSFailure, OutboundTimeout: judged again at delivery time
        return url

    @staticmethod
    async def _check_known(conn: AsyncConnection, tenant_id: str, filters: Sequence[str]) -> None:
        """Every filter that names an event type names a live one of the tenant's, and every
        prefix wildcard matches one (``contcat.*`` would otherwise receive nothing, silently).
        ``filters`` as the client sent them, so the field errors point at the right positions."""
        names = [f for f in filters if not is_wildcard(f)]
        prefixes = [f for f in filters if is_wildcard(f) and f != WILDCARD]
        # A tenant has tens of event types: all of them are read when a prefix is to match.
        live = await event_types_repo.live_names(conn, tenant_id, None if prefixes else names)
        errors = []
        for i, f in enumerate(filters):
            if f in names and f not in live:
                errors.append(FieldError(f"events.{i}", f"unknown or archived event type {f!r}"))
            elif f in prefixes and not any(matches([f], name) for name in live):
                errors.append(FieldError(f"events.{i}", f"{f!r} matches no live event type"))
        if errors:
            detail = "; ".join(e.message for e in errors)
            raise InvalidInput(f"events: {detail}", errors)

    # -- reads ---------------------------------------------------------------------------

    async def get(self, tenant_id: str, sub_id: str) -> WebhookSubscription:
        async with self.store.read() as conn:
            return await self._load(conn, tenant_id, sub_id)

    async def list(
        self,
        tenant_id: str,
        *,
        status: SubscriptionStatus | None = None,
        is_active: bool | None = None,
        cursor: str | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> Page[WebhookSubscription]:
        async with self.store.read() as conn:
            return await repo.query(
                conn,
                tenant_id,
                status=str(status) if status else None,
                is_active=is_active,
                after=decode_cursor(cursor),
                limit=limit,
            )

    async def active_secrets(
        self, tenant_id: str, sub_id: str, now: datetime
    ) -> builtins.list[str]:
        """The secrets that sign a delivery at ``now``, oldest first: the previous secret while
        its grace period lasts, then the current one (what ``delivery_headers`` expects)."""
        async with self.store.read() as conn:
            sub = await self._load(conn, tenant_id, sub_id)
            return await self.secrets.active(conn, sub, now)

    # -- writes --------------------------------------------------------------------------

    async def create(
        self,
        actor: Actor,
        *,
        url: str,
        events: Sequence[str],
        name: str = "",
        is_active: bool = True,
        description: str = "",
        headers: dict[str, Any] | None = None,
        rate_limit_per_second: int | None = None,
        max_concurrency: int | None = None,
        timeout_seconds: int = DEFAULT_TIMEOUT,
        retry_schedule: str | Sequence[Any] | None = None,
    ) -> IssuedSecret:
        """A new subscription and its signing secret (``whsec_`` + 32 random bytes, base64)."""
        name = rules.clean_name(name)
        filters = rules.check_filters(events)
        description = rules.check_description(description)
        clean_headers = rules.check_headers(headers)
        rate = rules.check_rate_limit(rate_limit_per_second)
        concurrency = rules.check_concurrency(max_concurrency)
        timeout = rules.check_timeout(timeout_seconds)
        schedule = rules.check_schedule(retry_schedule)
        await self.event_types.ensure_seeded(actor.tenant_id)
        url = await self._check_destination(url)  # network I/O: before the transaction
        now = utcnow()
        sub = WebhookSubscription(
            id=new_id("wh"),
            tenant_id=actor.tenant_id,
            name=name,
            url=url,
            events=filters,
            is_active=is_active,
            description=description,
            headers=clean_headers,
            rate_limit_per_second=rate,
            max_concurrency=concurrency,
            timeout_seconds=timeout,
            retry_schedule=schedule,
            status=SubscriptionStatus.ACTIVE,
            created_at=now,
            updated_at=now,
        )
        async with self.store.transaction() as conn:
            await self._check_known(conn, actor.tenant_id, events)
            await repo.insert(conn, sub)
            secret = await self.secrets.issue(conn, actor.tenant_id, sub.id)
            diff = {api: _shown(field, getattr(sub, field)) for field, api in _FIELDS.items()}
            await record(conn, actor, "webhook.create", RESOURCE, sub.id, diff)
        return IssuedSecret(sub, secret)

    async def update(
        self, actor: Actor, sub_id: str, changes: dict[str, Any]
    ) -> WebhookSubscription:
        """Change some fields, checked as on create. ``headers`` merges: a header given a value
        is set, one given None is removed (responses mask secret header values, so a client
        need not send them back). ``isActive: true`` also re-enables a subscription the
        delivery engine disabled, and starts its failure count afresh."""
        new_values: dict[str, Any] = {}
        checks: dict[str, Callable[[Any], Any]] = {
            "name": rules.clean_name,
            "events": rules.check_filters,
            "description": rules.check_description,
            "rate_limit_per_second": rules.check_rate_limit,
            "max_concurrency": rules.check_concurrency,
            "timeout_seconds": rules.check_timeout,
            "retry_schedule": rules.check_schedule,
        }
        for field, check in checks.items():
            if field in changes:
                new_values[field] = check(changes[field])
        if "is_active" in changes:
            new_values["is_active"] = bool(changes["is_active"])
        if "events" in new_values:
            await self.event_types.ensure_seeded(actor.tenant_id)
        if "url" in changes:
            new_values["url"] = await self._check_destination(changes["url"])

        async with self.store.transaction() as conn:
            current = await self._load(conn, actor.tenant_id, sub_id, for_update=True)
            if "events" in new_values:
                await self._check_known(conn, actor.tenant_id, changes["events"])
            if "headers" in changes:
                merged = rules.merge_headers(current.headers, changes["headers"] or {})
                new_values["headers"] = rules.check_headers(merged)
            if new_values.get("is_active") and current.status is SubscriptionStatus.DISABLED:
                new_values |= {
                    "status": SubscriptionStatus.ACTIVE,
                    "disabled_reason": None,
                    "consecutive_failures": 0,
                    "first_failure_at": None,
                }
            updated = replace(current, **new_values)
            diff = {
                api: {"from": _shown(f, getattr(current, f)), "to": _shown(f, getattr(updated, f))}
                for f, api in _FIELDS.items()
                if getattr(current, f) != getattr(updated, f)
            }
            if not diff:
                return current  # no phantom updates: updated_at and the audit stay as they are
            updated = replace(updated, updated_at=utcnow())
            await repo.update(conn, updated)
            await record(conn, actor, "webhook.update", RESOURCE, sub_id, diff)
        return updated

    async def delete(self, actor: Actor, sub_id: str) -> None:
        async with self.store.transaction() as conn:
            current = await self._load(conn, actor.tenant_id, sub_id, for_update=True)
            await self.secrets.remove(conn, actor.tenant_id, sub_id)
            await repo.delete(conn, actor.tenant_id, sub_id)
            diff = {"name": current.name, "url": redact_url(current.url)}
            await record(conn, actor, "webhook.delete", RESOURCE, sub_id, diff)

    async def rotate_secret(
        self,
        actor: Actor,
        sub_id: str,
        *,
        grace_hours: int = DEFAULT_GRACE_HOURS,
        now: datetime | None = None,
    ) -> IssuedSecret:
        """A new signing secret. The old one keeps signing beside it until ``now`` +
        ``grace_hours`` (0: it stops at once); a secret still in an earlier rotation's grace
        period is dropped, so at most two secrets sign at any time."""
        grace = rules.check_grace_hours(grace_hours)
        now = now or utcnow()
        async with self.store.transaction() as conn:
            current = await self._load(conn, actor.tenant_id, sub_id, for_update=True)
            secret, expires = await self.secrets.rotate(
                conn, actor.tenant_id, sub_id, grace=timedelta(hours=grace), now=now
            )
            updated = replace(current, previous_secret_expires_at=expires, updated_at=utcnow())
            await repo.update(conn, updated)
            diff = {
                "graceHours": grace,
                "previousSecretExpiresAt": expires.isoformat() if expires else None,
            }
            await record(conn, actor, "webhook.secret.rotate", RESOURCE, sub_id, diff)
        return IssuedSecret(updated, secret)

    # -- the test call -------------------------------------------------------------------

    async def send_test(
        self, tenant_id: str, sub_id: str, *, now: datetime | None = None
    ) -> ProbeResult:
        """Send one signed ``webhook.test`` event now, whatever the subscription's filters or
        state, and say how the endpoint answered. A failure to deliver is a result, not an
        error: only an unknown subscription raises (NotFound)."""
        now = now or utcnow()
        async with self.store.read() as conn:
            sub = await self._load(conn, tenant_id, sub_id)
            secrets = await self.secrets.active(conn, sub, now)
        # The call happens outside the transaction: a slow endpoint must not hold a connection.
        return await send_test_event(self.outbound, sub, secrets, now)
