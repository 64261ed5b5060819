"""Connections: an integration opened for calls, and the "test connection" check.

``open`` builds what a sync walks (auth from the credentials, the integration's rate-limit
budget, its request log). ``check`` fetches the first pages and reports what a person needs to
know: did it work, how fast, a preview (the records, and the contacts the integration's field
mapping makes of them), how many records, which fields; a saved integration's
status moves configuring -> testing -> active or error with it. ``check_config`` does the same
for a config not saved yet (a setup wizard's "test" step), changing nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from limits.aio.storage import Storage

from isthmus.connectors.api_endpoint import PROVIDER, Endpoint, detect_fields
from isthmus.connectors.auth_factory import auth_for
from isthmus.connectors.catalog import Catalog, validate_integration
from isthmus.connectors.oauth import OAuthService
from isthmus.connectors.ratelimit import budget_for
from isthmus.connectors.request_log import RequestLog
from isthmus.connectors.retry import RetryPolicy
from isthmus.connectors.types import Page, Record
from isthmus.domain.auth import Actor
from isthmus.domain.contact_mapping import EmailClaims, FieldMapping, Skipped, map_record
from isthmus.domain.contacts import Mapped
from isthmus.domain.integrations import IntegrationStatus
from isthmus.domain.records import Integration
from isthmus.errors import InvalidInput, NotFound, OutboundError, UpstreamStatusError
from isthmus.http import OutboundHTTP
from isthmus.services.audit import record
from isthmus.services.integrations import RESOURCE, IntegrationService
from isthmus.store import integrations as repo
from isthmus.store.db import Store
from isthmus.store.types import utcnow

PREVIEW_SIZE = 10
#: A check walks this many pages at most: enough to see the pagination work (or loop), few
#: enough to answer while a person waits. Only the first page is previewed and counted.
CHECK_PAGES = 3
#: The check is a person waiting on a form: one try, no backoff.
CHECK_RETRY = RetryPolicy(max_attempts=1)

# What a person can do about each failure, after the error's own message.
_HINTS = {
    "auth": "Check the credentials and the auth type.",
    "reauthorize": "Authorize the integration again.",
    "not_found": "Check the endpoint URL.",
    "rate_limited": "The API is rate limiting these calls; try again later.",
    "unavailable": "The API is failing or down; try again later.",
    "rejected": "The API refused the request; check the method, headers and parameters.",
    "redirected": "Use the URL the API redirects to.",
    "dns": "Check the host name in the endpoint URL.",
    "refused": "Nothing answers at that host and port; check the URL.",
    "timeout": "The API did not answer in time.",
    "tls": "The API's TLS certificate or handshake failed.",
    "blocked": "isthmus does not call private or local addresses (see ISTHMUS_OUTBOUND_ALLOWLIST).",
    "bad_response": "Check the endpoint URL and the data selector.",
    "pagination_loop": "Check the pagination settings.",
    "too_large": "Page the listing (see pagination) or raise ISTHMUS_CONNECTOR_MAX_RESPONSE_BYTES.",
}


@dataclass(frozen=True)
class ConnectionCheck:
    """What a connection test found."""

    success: bool
    message: str
    status_code: int | None = None
    latency_ms: float | None = None
    preview: list[dict[str, Any]] = field(default_factory=list)
    records_count: int | None = None
    total: int | None = None
    fields: list[dict[str, str]] = field(default_factory=list)
    error_class: str | None = None
    #: ``preview`` as a sync would take it: each record's contact, or why it is skipped.
    contacts: list[Mapped | Skipped] = field(default_factory=list)


class ConnectionService:
    def __init__(
        self,
        store: Store,
        integrations: IntegrationService,
        catalog: Catalog,
        outbound: OutboundHTTP,
        oauth: OAuthService,
        limiter_storage: Storage,
        *,
        max_response_bytes: int | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        """``max_response_bytes``: the integrations' response cap (default: ``outbound``'s)."""
        self.store = store
        self.integrations = integrations
        self.catalog = catalog
        self.outbound = outbound
        self.oauth = oauth
        self.limiter_storage = limiter_storage
        self.clock = clock
        self.max_response_bytes = max_response_bytes

    async def _integration(self, tenant_id: str, integration_id: str) -> Integration:
        async with self.store.read() as conn:
            found = await repo.get(conn, tenant_id, integration_id)
        if found is None:
            raise NotFound.of(RESOURCE, integration_id)
        return found

    async def open(
        self,
        tenant_id: str,
        integration_id: str,
        *,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.time,
    ) -> Endpoint:
        """The saved integration, ready to call: its auth, budget and request log. ``clock``
        (epoch seconds) is the budget's: a job passes its own, so time is one thing to it."""
        integration = await self._integration(tenant_id, integration_id)
        return await self._open(integration, retry=retry, clock=clock)

    async def _open(
        self,
        integration: Integration,
        *,
        retry: RetryPolicy | None,
        clock: Callable[[], float] = time.time,
    ) -> Endpoint:
        _require_supported(integration.provider)
        credentials = await self.integrations.credentials(integration.tenant_id, integration.id)
        auth = auth_for(
            integration.config,
            credentials,
            http=self.outbound,
            oauth=self.oauth,
            integration=integration,
        )
        return Endpoint.open(
            integration.config,
            auth,
            http=self.outbound,
            max_response_bytes=self.max_response_bytes,
            observer=RequestLog(self.store, integration.tenant_id, integration.id),
            rate_limit=budget_for(
                integration.id,
                integration.config.get("rateLimit"),
                self.limiter_storage,
                clock=clock,
            ),
            retry=retry,
        )

    async def check(self, actor: Actor, integration_id: str) -> ConnectionCheck:
        """Test a saved integration; its status follows: testing, then active or error."""
        integration = await self._integration(actor.tenant_id, integration_id)
        await self._set_status(actor, integration, IntegrationStatus.TESTING, None)
        try:
            endpoint = await self._open(integration, retry=CHECK_RETRY)
        except InvalidInput as exc:
            result = ConnectionCheck(False, exc.message, error_class="invalid_config")
        else:
            result = await _probe(endpoint, integration.provider, integration.config)
        if result.success:
            status = IntegrationStatus.ACTIVE if integration.enabled else IntegrationStatus.INACTIVE
            await self._set_status(actor, integration, status, None, verified=True)
        else:
            await self._set_status(actor, integration, IntegrationStatus.ERROR, result.message)
        return result

    async def check_config(
        self,
        actor: Actor,
        provider: str,
        config: Mapping[str, Any],
        credentials: Mapping[str, str],
    ) -> ConnectionCheck:
        """Test a config that is not saved: nothing is written, nothing is logged."""
        _require_supported(provider)
        spec = self.catalog.get(provider)
        filled = validate_integration(spec, config, credentials)
        if (filled.get("auth") or {}).get("type") == "oauth2_authorization_code":
            raise InvalidInput.field(
                "config.auth.type",
                "an OAuth2 authorization-code integration must be saved and authorized "
                "before it can be tested",
            )
        auth = auth_for(filled, credentials, http=self.outbound)
        endpoint = Endpoint.open(
            filled,
            auth,
            http=self.outbound,
            retry=CHECK_RETRY,
            max_response_bytes=self.max_response_bytes,
        )
        return await _probe(endpoint, provider, filled)

    async def _set_status(
        self,
        actor: Actor,
        integration: Integration,
        status: IntegrationStatus,
        message: str | None,
        *,
        verified: bool = False,
    ) -> None:
        now = self.clock()
        async with self.store.transaction() as conn:
            changed = await repo.set_status(
                conn, actor.tenant_id, integration.id, status, message, now=now, verified=verified
            )
            if not changed:
                raise NotFound.of(RESOURCE, integration.id)
            if status is not IntegrationStatus.TESTING:
                diff: dict[str, Any] = {
                    "status": {"from": str(integration.status), "to": str(status)}
                }
                if message:
                    diff["message"] = {"from": None, "to": message}
                await record(conn, actor, "integration.test", RESOURCE, integration.id, diff)


def _require_supported(provider: str) -> None:
    if provider != PROVIDER:
        raise InvalidInput.field(
            "provider", f"connection tests are available for {PROVIDER!r} integrations only"
        )


async def _probe(endpoint: Endpoint, provider: str, config: Mapping[str, Any]) -> ConnectionCheck:
    """Fetch the first page; every failure becomes a result, never an exception."""
    try:
        mapping = FieldMapping.build(provider, config.get("fieldMapping"))
    except InvalidInput as exc:
        return ConnectionCheck(False, exc.message, error_class="invalid_config")
    started = time.perf_counter()
    first: Page | None = None
    try:
        async with endpoint:
            async for page in endpoint.pages(max_pages=CHECK_PAGES):
                first = first or page
    except OutboundError as exc:
        return _failure(exc, started)
    except InvalidInput as exc:
        return ConnectionCheck(False, exc.message, error_class="invalid_config")
    if first is None:  # a paginator that yields nothing still made its call: say so plainly
        return ConnectionCheck(False, "the API returned no page", error_class="bad_response")
    response = first.response
    count = len(first.records)
    total = first.total
    counted = f"{count} record{'s' if count != 1 else ''} on the first page"
    if total is not None:
        counted += f", {total} in total"
    preview = first.records[:PREVIEW_SIZE]
    return ConnectionCheck(
        success=True,
        message=f"Connected: {counted}.",
        status_code=response.status,
        latency_ms=round(response.duration * 1000, 1),
        preview=preview,
        records_count=count,
        total=total,
        fields=detect_fields(preview),
        contacts=_as_synced(preview, mapping),
    )


def _as_synced(records: list[Record], mapping: FieldMapping) -> list[Mapped | Skipped]:
    """The records as a sync would take them, a later duplicate of an email included."""
    claims = EmailClaims()
    return [claims.check(map_record(record, mapping)) for record in records]


def _failure(exc: OutboundError, started: float) -> ConnectionCheck:
    hint = _HINTS.get(exc.error_class)
    message = exc.message.rstrip(".") + "." + (f" {hint}" if hint else "")
    status = exc.status if isinstance(exc, UpstreamStatusError) else None
    return ConnectionCheck(
        success=False,
        message=message,
        status_code=status,
        latency_ms=round((time.perf_counter() - started) * 1000, 1),
        error_class=exc.error_class,
    )


__all__ = ["CHECK_PAGES", "CHECK_RETRY", "PREVIEW_SIZE", "ConnectionCheck", "ConnectionService"]
