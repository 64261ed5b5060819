"""The generic ``api_endpoint`` provider: an integration's config made into a listing to walk.

Its config (camelCase like the rest of the API) says where the records are and how to page
through them: ``{apiEndpoint, method, headers, auth, pagination, dataSelector, fieldMapping,
rateLimit}``. Credentials and the auth block become an :class:`~isthmus.connectors.types.Auth`
elsewhere (``auth_factory``); this module turns the rest into an :class:`APIClient` and the
request that lists the records, and detects the fields of what came back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from isthmus.connectors.client import APIClient
from isthmus.connectors.pagination_config import paginator_from_config
from isthmus.connectors.retry import RetryPolicy
from isthmus.connectors.types import (
    Auth,
    CallObserver,
    CallRecord,
    Page,
    Paginator,
    RateLimiter,
    Record,
    Request,
)
from isthmus.http import OutboundHTTP

log = logging.getLogger("isthmus.connectors")

PROVIDER = "api_endpoint"
#: How long call records wait to be written to the request log together (seconds).
LOG_GATHER_SECONDS = 0.5


@dataclass(frozen=True)
class Listing:
    """What lists an integration's records: method, paging convention, where the records are."""

    url: str
    method: str
    headers: dict[str, str]
    paginator: Paginator
    selector: str | None

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Listing:
        return cls(
            url=str(config["apiEndpoint"]),
            method=str(config.get("method") or "GET").upper(),
            headers=dict(config.get("headers") or {}),
            paginator=paginator_from_config(config.get("pagination")),
            selector=config.get("dataSelector") or None,
        )


class _Unawaited:
    """Hands call records to ``observer`` in the background, gathered for up to ``gather``
    seconds, so that no call waits for them.

    The request log writes in a transaction of its own: awaited per call, that write would
    stand between a page's arrival and the request for the next one, however fast the API,
    and a sync of a thousand pages would cost a thousand transactions. Gathered, they cost a
    few per interval (the log also batches the entries that arrive while it writes).
    ``flush``, which closing the endpoint calls, hands over what is left and waits for it."""

    def __init__(self, observer: CallObserver, *, gather: float = LOG_GATHER_SECONDS) -> None:
        self.observer = observer
        self.gather = gather
        self._pending: list[CallRecord] = []
        self._now = asyncio.Event()
        self._handing: asyncio.Task[None] | None = None

    async def __call__(self, record: CallRecord) -> None:
        self._pending.append(record)
        if self._handing is None or self._handing.done():
            self._handing = asyncio.create_task(self._hand_over())

    async def _hand_over(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._now.wait(), self.gather)
        while self._pending:
            batch, self._pending = self._pending, []
            # In the calls' order: each appends its entry before it first waits.
            done = await asyncio.gather(
                *(self.observer(record) for record in batch), return_exceptions=True
            )
            for outcome in done:
                if isinstance(outcome, Exception):
                    # The log must not turn a good call into a failed one (as APIClient).
                    log.warning("call observer failed", exc_info=outcome)

    async def flush(self) -> None:
        self._now.set()
        if self._handing is not None:
            await self._handing
        self._now.clear()


class Endpoint:
    """An ``api_endpoint`` integration ready to call; close it (or use ``async with``)."""

    def __init__(self, client: APIClient, listing: Listing, log: _Unawaited | None = None) -> None:
        self.client = client
        self.listing = listing
        self._log = log

    @classmethod
    def open(
        cls,
        config: Mapping[str, Any],
        auth: Auth,
        *,
        http: OutboundHTTP,
        observer: CallObserver | None = None,
        rate_limit: RateLimiter | None = None,
        retry: RetryPolicy | None = None,
        max_response_bytes: int | None = None,
    ) -> Endpoint:
        listing = Listing.from_config(config)
        log = _Unawaited(observer) if observer is not None else None
        client = APIClient(
            listing.url,
            auth=auth,
            retry=retry or RetryPolicy(),
            rate_limit=rate_limit,
            headers=listing.headers,
            http=http,
            observer=log,
            max_response_bytes=max_response_bytes,
        )
        return cls(client, listing, log)

    async def __aenter__(self) -> Endpoint:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the client once every call is in the request log."""
        try:
            if self._log is not None:
                await self._log.flush()
        finally:
            await self.client.close()

    def pages(
        self,
        *,
        max_pages: int | None = None,
        resume: Request | None = None,
        params: Sequence[tuple[str, str]] | None = None,
    ) -> AsyncIterator[Page]:
        """The listing's pages, first to last (or ``max_pages``); from a saved ``Page.next``
        with ``resume``; ``params`` are added to the first request (e.g. updated-since)."""
        return self.client.paginate(
            "",
            paginator=self.listing.paginator,
            selector=self.listing.selector,
            method=self.listing.method,
            params=list(params) if params else None,
            max_pages=max_pages,
            resume=resume,
        )


# -- what the records look like ---------------------------------------------------------------

#: Nested objects are described down to this depth (``address.city`` is 2).
FIELD_DEPTH = 3


def json_type(value: Any) -> str:
    """The JSON Schema type name of a decoded JSON value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def detect_fields(records: Iterable[Record]) -> list[dict[str, str]]:
    """Each field's dotted name and type across ``records``, in order of first appearance.

    Nested objects are walked (to ``FIELD_DEPTH``) so a UI can offer ``properties.email`` for
    mapping. A field that is null in some records takes the type of its other values; one that
    holds different types is described by them joined with ``|``."""
    seen: dict[str, list[str]] = {}

    def walk(value: Mapping[str, Any], prefix: str, depth: int) -> None:
        for key, item in value.items():
            name = f"{prefix}{key}"
            if isinstance(item, Mapping) and item and depth < FIELD_DEPTH:
                walk(item, f"{name}.", depth + 1)
                continue
            types = seen.setdefault(name, [])
            kind = json_type(item)
            if kind not in types:
                types.append(kind)

    for record in records:
        walk(record, "", 1)
    fields = []
    for name, types in seen.items():
        present = [t for t in types if t != "null"] or ["null"]
        # Integers among numbers are numbers.
        if "number" in present and "integer" in present:
            present.remove("integer")
        fields.append({"name": name, "type": "|".join(present)})
    return fields


__all__ = ["FIELD_DEPTH", "PROVIDER", "Endpoint", "Listing", "detect_fields", "json_type"]
