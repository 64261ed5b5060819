"""The values every connector strategy speaks, and the protocols of the strategy families.

A connector (:class:`isthmus.connectors.client.APIClient`) is composed from strategies, each a
small family with one class per API convention:

- :class:`Auth` puts credentials on a :class:`Request` (and may renew them after a 401);
- :class:`Paginator` walks the pages of one listing, starting afresh each run;
- :class:`RateLimiter` holds a call back until the integration's budget allows it, and learns
  from what the provider says about its own limits;
- retries and transforms are plain values (``isthmus.connectors.retry`` / ``.transforms``);
- every outbound call, retries included, is reported to a :class:`CallObserver` as a
  :class:`CallRecord` (the per-integration request log and the metrics listen there).

Requests are mutable while strategies prepare them; responses are what came back, read whole.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

#: Methods that may be sent twice without changing more than once (RFC 9110 9.2.2).
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})

Record = dict[str, Any]
LogLevel = Literal["debug", "info", "warn", "error"]


@dataclass
class Request:
    """One call about to go out. ``url`` has no query: query parameters live in ``params``
    (in order; a name may repeat) so strategies can add and replace them."""

    method: str
    url: str
    params: list[tuple[str, str]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    json: Any = None
    #: ``None``: decided by the method (:data:`IDEMPOTENT_METHODS`); a POST is retried only
    #: when its action is declared idempotent (``True``).
    idempotent: bool | None = None

    @property
    def may_repeat(self) -> bool:
        if self.idempotent is not None:
            return self.idempotent
        return self.method.upper() in IDEMPOTENT_METHODS

    def copy(self) -> Request:
        """A copy whose params, headers and (top-level) JSON body can change independently."""
        body = dict(self.json) if isinstance(self.json, dict) else self.json
        return Request(
            self.method,
            self.url,
            list(self.params),
            dict(self.headers),
            body,
            self.idempotent,
        )

    def set_param(self, name: str, value: str) -> None:
        """Set query parameter ``name`` to one value (replacing any it had)."""
        self.params = [(k, v) for k, v in self.params if k != name]
        self.params.append((name, value))


@dataclass(frozen=True)
class Response:
    """What came back for one call: status, headers (case-insensitive), the body parsed as
    JSON (``None`` when empty or not JSON; ``raw`` has the bytes), seconds taken by the last
    try, how many tries it took, and the URL asked (secrets redacted)."""

    status: int
    headers: Mapping[str, str]
    body: Any
    raw: bytes
    duration: float
    url: str
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


@dataclass(frozen=True)
class Page:
    """One page of a listing: its records (after the data selector and the transforms), the
    response they came from, and its number (1 for the first)."""

    number: int
    records: list[Record]
    response: Response
    #: The total the API announced for the whole listing, when it says (a ``total`` field).
    total: int | None = None
    #: The request for the page after this one (``None``: this was the last); a sync saves
    #: it as its checkpoint and resumes from it.
    next: Request | None = None
    #: The request that fetched this page (as ``next``, without auth): where a cursor
    #: incremental sync starts the next time, once this was the last page.
    request: Request | None = None


class Auth(Protocol):
    """Puts credentials on a request."""

    async def apply(self, request: Request) -> None:
        """Add the credentials (headers or query parameters) to ``request`` in place."""
        ...

    async def renew(self) -> bool:
        """Called once after a 401: renew the credentials if this scheme can (an OAuth2
        token) and answer True to have the request sent again, False to give up."""
        ...


class PageWalk(Protocol):
    """One walk through a listing's pages; holds what the walk has seen so far."""

    def first(self, request: Request) -> Request:
        """The first page's request, from the configured base request."""
        ...

    def next(
        self, request: Request, response: Response, records: Sequence[Record]
    ) -> Request | None:
        """The next page's request after ``request`` got ``response`` with ``records``, or
        ``None`` when the listing is done. Raises ``PaginationLoop`` for a cursor (or next
        URL) already followed in this walk."""
        ...

    def resume(self, request: Request) -> Request:
        """Continue a walk interrupted before ``request`` (a ``Page.next`` saved earlier),
        after ``first``: the walk takes up its position from the request."""
        ...


class Paginator(Protocol):
    """A paging convention (immutable configuration); ``start`` begins a fresh walk."""

    def start(self) -> PageWalk: ...


class RateLimiter(Protocol):
    """An integration's proactive budget (requests per window, concurrency)."""

    def slot(self) -> AbstractAsyncContextManager[None]:
        """Wait until a call may go out (budget and a concurrency slot), hold the slot for
        the call's duration."""
        ...

    async def observe(self, status: int, headers: Mapping[str, str]) -> None:
        """Learn from a response: provider rate-limit headers slow the budget down before a
        429 happens; a 429/503 with Retry-After pauses every caller of this budget."""
        ...


@dataclass(frozen=True)
class CallRecord:
    """One outbound call as the request log keeps it (the URL already redacted)."""

    at: datetime
    method: str
    url: str
    status: int | None
    duration_ms: float
    bytes: int
    error_class: str | None = None
    message: str | None = None
    level: LogLevel = "info"


class CallObserver(Protocol):
    """Told about every outbound call, retries included."""

    async def __call__(self, record: CallRecord) -> None: ...


__all__ = [
    "IDEMPOTENT_METHODS",
    "Auth",
    "CallObserver",
    "CallRecord",
    "LogLevel",
    "Page",
    "PageWalk",
    "Paginator",
    "RateLimiter",
    "Record",
    "Request",
    "Response",
]
