"""APIClient: calls one upstream API with auth, rate limits, retries, pages and transforms.

It is the public face of the connector strategies (:mod:`isthmus.connectors.types`) and what
the hub's own connectors use::

    async with APIClient("https://api.example.com/v1", auth=BearerAuth(token)) as api:
        me = await api.get("me")
        async for page in api.paginate("contacts", paginator=CursorPaginator(...)):
            ...

Every try of a call goes: the rate limiter's slot (held for the call), ``auth.apply``, the
send through :class:`~isthmus.http.OutboundHTTP` (SSRF guard, timeouts, size cap, no
redirects), ``rate_limit.observe``, status and body checks, one :class:`~.types.CallRecord` to
the observer (URL redacted, never a secret), then the retry policy. After a 401, ``auth.renew``
is asked once and the request resent when it answers True (that resend does not count against
the retry policy's attempts). A failure ``auth.apply`` itself raises (say, an OAuth token
endpoint refusing) goes straight up: no call was made, and the auth strategy reports its own.

When is JSON expected? Always, unless a call says ``expect_json=False``: a 2xx with a non-empty
body that does not parse as JSON (whatever its Content-Type claims) raises ``BadResponse``
(``expected JSON from ..., got text/html ...``); an empty body is ``None``. Pages always expect
JSON. With ``expect_json=False`` a body that is not JSON is left in ``Response.raw``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, TypeVar

from yarl import URL

from isthmus import jsonread
from isthmus.connectors.pagination import SinglePage, announced_total
from isthmus.connectors.retry import RetryPolicy
from isthmus.connectors.selector import select_records
from isthmus.connectors.transforms import Transforms
from isthmus.connectors.tries import Try
from isthmus.connectors.types import (
    Auth,
    CallObserver,
    CallRecord,
    LogLevel,
    Page,
    PageWalk,
    Paginator,
    RateLimiter,
    Record,
    Request,
    Response,
)
from isthmus.errors import BadResponse, InvalidURL, OutboundError, UpstreamAuthError
from isthmus.http import OutboundHTTP, OutboundResponse, raise_for_status, redact_url

log = logging.getLogger("isthmus.connectors")

T = TypeVar("T")
Scalar = str | int | float | bool
Params = Mapping[str, Scalar] | Sequence[tuple[str, Scalar]]
Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], datetime]


class APIClient:
    """A client for one API at ``base_url``; relative paths are joined to it.

    ``http`` is shared when given (and then not closed here); otherwise the client makes one
    with the default SSRF guard and closes it with itself. To reach a private network (a
    self-hosted API), pass ``OutboundHTTP(allowlist=["10.0.0.0/8"])``. ``headers`` and
    ``params`` go on every request under the request's own. ``timeout`` bounds each try
    (seconds) and ``max_response_bytes`` each response (default: the ``OutboundHTTP``'s).
    ``clock`` and ``sleep`` are for tests.
    """

    def __init__(
        self,
        base_url: str,
        *,
        auth: Auth | None = None,
        retry: RetryPolicy = RetryPolicy(),
        rate_limit: RateLimiter | None = None,
        transforms: Transforms | None = None,
        headers: Mapping[str, str] | None = None,
        params: Params | None = None,
        http: OutboundHTTP | None = None,
        observer: CallObserver | None = None,
        timeout: float | None = None,
        max_response_bytes: int | None = None,
        clock: Clock | None = None,
        sleep: Sleep | None = None,
    ) -> None:
        base = _parse_base(base_url)
        self.base_url = str(base.with_query(None).with_fragment(None))
        self.auth = auth
        self.retry = retry
        self.rate_limit = rate_limit
        self.transforms = transforms
        self.headers = dict(headers or {})
        self.params = list(base.query.items()) + _pairs(params)
        self.observer = observer
        self.timeout, self.max_response_bytes = timeout, max_response_bytes
        self._owns_http = http is None
        self.http = http if http is not None else OutboundHTTP()
        self._clock = clock or _utcnow
        self._sleep = sleep or _asyncio_sleep
        #: Query names the auth set: secrets an API may echo in its next links (see _unauthed).
        self._auth_names: set[str] = set()

    async def __aenter__(self) -> APIClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP client if this client made it."""
        if self._owns_http:
            await self.http.close()

    # -- single calls ------------------------------------------------------------------------

    async def get(
        self,
        path: str = "",
        *,
        params: Params | None = None,
        headers: Mapping[str, str] | None = None,
        expect_json: bool = True,
    ) -> Response:
        return await self.request(
            "GET", path, params=params, headers=headers, expect_json=expect_json
        )

    async def post(
        self,
        path: str = "",
        *,
        json: Any = None,
        params: Params | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
        expect_json: bool = True,
    ) -> Response:
        """POST; retried after a failure only with ``idempotent=True`` (the action is safe
        to repeat, e.g. an upsert by key)."""
        return await self.request(
            "POST",
            path,
            json=json,
            params=params,
            headers=headers,
            idempotent=idempotent,
            expect_json=expect_json,
        )

    async def put(
        self,
        path: str = "",
        *,
        json: Any = None,
        params: Params | None = None,
        headers: Mapping[str, str] | None = None,
        expect_json: bool = True,
    ) -> Response:
        return await self.request(
            "PUT", path, json=json, params=params, headers=headers, expect_json=expect_json
        )

    async def patch(
        self,
        path: str = "",
        *,
        json: Any = None,
        params: Params | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
        expect_json: bool = True,
    ) -> Response:
        return await self.request(
            "PATCH",
            path,
            json=json,
            params=params,
            headers=headers,
            idempotent=idempotent,
            expect_json=expect_json,
        )

    async def delete(
        self,
        path: str = "",
        *,
        params: Params | None = None,
        headers: Mapping[str, str] | None = None,
        expect_json: bool = True,
    ) -> Response:
        return await self.request(
            "DELETE", path, params=params, headers=headers, expect_json=expect_json
        )

    async def request(
        self,
        method: str,
        path: str = "",
        *,
        json: Any = None,
        params: Params | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
        expect_json: bool = True,
    ) -> Response:
        """One call (retries included). ``path`` is relative to the base URL or absolute."""
        request = self.build(method, path, json=json, params=params, headers=headers)
        request.idempotent = idempotent
        return await self.send(request, expect_json=expect_json)

    # -- listings ----------------------------------------------------------------------------

    async def paginate(
        self,
        path: str = "",
        *,
        paginator: Paginator | None = None,
        selector: str | None = None,
        method: str = "GET",
        params: Params | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
        max_pages: int | None = None,
        resume: Request | None = None,
    ) -> AsyncIterator[Page]:
        """The pages of a listing, each with its records (selected by the dotted path
        ``selector``, see :func:`~isthmus.connectors.selector.select_records`, then
        transformed). ``paginator`` defaults to a single page; ``max_pages`` stops early
        without an error. A POST listing is retried only with ``idempotent=True``.

        The next page's request is worked out as soon as a page arrives, so a response
        that cannot be paged on (a pagination loop, a next URL on another host) fails with
        the call that brought it, and the request log shows it there.

        ``resume`` continues an interrupted walk from a saved ``Page.next`` instead of the
        first page.
        """
        pager = paginator or SinglePage()
        walk = pager.start()
        base = self.build(method, path, json=json, params=params, headers=headers)
        base.idempotent = idempotent
        request: Request | None = walk.first(base)
        if resume is not None:
            request = walk.resume(resume)
        number = 0
        while request is not None:
            number += 1
            last = max_pages is not None and number >= max_pages
            sent = request
            read = self._page_reader(walk, sent, selector, last)
            response, (records, request) = await self._send(sent, True, read)
            total = announced_total(pager, response.body)
            following = self._unauthed(request) if request else None
            yield Page(number, records, response, total, following, self._unauthed(sent))

    # -- the machinery -----------------------------------------------------------------------

    def _unauthed(self, request: Request) -> Request:
        """A copy to keep (a checkpoint, a cursor): the auth puts its query values back."""
        copy = request.copy()
        if self._auth_names:
            copy.params = [(k, v) for k, v in copy.params if k not in self._auth_names]
        return copy

    def build(
        self,
        method: str,
        path: str = "",
        *,
        json: Any = None,
        params: Params | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Request:
        """The :class:`~.types.Request` for ``path`` (its query moved into ``params``)."""
        target = self._url(path)
        query = list(target.query.items()) + _pairs(params)
        url = str(target.with_query(None).with_fragment(None))
        return Request(method.upper(), url, query, dict(headers or {}), json)

    async def send(self, request: Request, *, expect_json: bool = True) -> Response:
        """Send a built ``request`` (see :meth:`build`) with auth, limits and retries."""
        response, _ = await self._send(request, expect_json, _no_parse)
        return response

    def _page_reader(
        self, walk: PageWalk, request: Request, selector: str | None, last: bool
    ) -> Callable[[Response], tuple[list[Record], Request | None]]:
        def read(response: Response) -> tuple[list[Record], Request | None]:
            found = select_records(response.body, selector)
            records = self.transforms.records(found) if self.transforms else found
            following = None if last else walk.next(request, response, found)
            return records, following

        return read

    async def _send(
        self, request: Request, expect_json: bool, parse: Callable[[Response], T]
    ) -> tuple[Response, T]:
        """Send with retries; ``parse`` reads each 2xx response within its try, so a
        ``BadResponse`` it raises is logged with the call that brought it."""
        tries = failures = 0
        renewed = False
        while True:
            tries += 1
            attempt = await self._exchange(self._prepare(request))
            if attempt.out is not None:
                try:
                    raise_for_status(attempt.out, now=self._clock())
                    response = self._response(attempt, tries, expect_json)
                    parsed = parse(response)
                except OutboundError as exc:
                    attempt.error = exc
                else:
                    await self._report(attempt, "info")
                    return response, parsed
            error = attempt.error
            assert error is not None
            attempt.scrub(error)
            if (
                not renewed
                and self.auth is not None
                and isinstance(error, UpstreamAuthError)
                and error.status == 401
            ):
                renewed = True
                try:
                    resend = await self.auth.renew()
                except BaseException:
                    await self._report(attempt, "error")
                    raise
                if resend:
                    await self._report(attempt, "warn")
                    continue
            failures += 1
            wait = self.retry.delay(failures, error, request.may_repeat)
            await self._report(attempt, "error" if wait is None else "warn")
            if wait is None:
                raise error
            await self._sleep(wait)

    def _prepare(self, request: Request) -> Request:
        """The request as this try sends it, but for auth (see :meth:`_exchange`)."""
        prepared = request.copy()
        own = {name.lower() for name in prepared.headers}
        for name, value in self.headers.items():
            if name.lower() not in own:
                prepared.headers[name] = value
        present = {name for name, _ in prepared.params}
        prepared.params = [p for p in self.params if p[0] not in present] + prepared.params
        if self.transforms is not None:
            prepared = self.transforms.request(prepared)
        return prepared

    async def _exchange(self, prepared: Request) -> Try:
        """One try on the wire, inside a rate-limit slot."""
        slot = self.rate_limit.slot() if self.rate_limit else contextlib.nullcontext()
        async with slot:
            attempt = Try(prepared)
            if self.auth is not None:
                before = list(prepared.params)
                await self.auth.apply(prepared)
                # Whatever auth puts in the query is a secret, whatever its name.
                attempt.secret_names = {k for k, v in prepared.params if (k, v) not in before}
                self._auth_names |= attempt.secret_names
            started = time.perf_counter()
            try:
                attempt.out = await self.http.request(
                    prepared.method,
                    prepared.url,
                    headers=prepared.headers,
                    params=prepared.params,
                    json=prepared.json,
                    timeout=self.timeout,
                    max_response_bytes=self.max_response_bytes,
                )
            except OutboundError as exc:
                attempt.error = exc
                attempt.elapsed = time.perf_counter() - started
                return attempt
            attempt.elapsed = attempt.out.elapsed
            if self.rate_limit is not None:
                await self.rate_limit.observe(attempt.out.status, attempt.out.headers)
            return attempt

    def _response(self, attempt: Try, tries: int, expect_json: bool) -> Response:
        out = attempt.out
        assert out is not None
        shown = attempt.shown_url()
        body: Any = None
        if out.body.strip():
            try:
                body = jsonread.loads(out.body)
            except (ValueError, UnicodeDecodeError):
                if expect_json:
                    raise BadResponse(
                        f"expected JSON from {shown}, got {_content_type(out)}: "
                        f"{_snippet(out.body)}",
                        url=shown,
                    ) from None
        return Response(out.status, out.headers, body, out.body, out.elapsed, shown, tries)

    async def _report(self, attempt: Try, level: LogLevel) -> None:
        if self.observer is None:
            return
        out, error = attempt.out, attempt.error
        record = CallRecord(
            at=self._clock(),
            method=attempt.request.method,
            url=attempt.shown_url(),
            status=out.status if out is not None else None,
            duration_ms=round(attempt.elapsed * 1000, 3),
            bytes=len(out.body) if out is not None else 0,
            error_class=error.error_class if error is not None else None,
            message=error.message if error is not None else None,
            level=level,
        )
        try:
            await self.observer(record)
        except Exception:
            # The request log must not turn a good call into a failed one.
            log.warning("call observer failed for %s %s", record.method, record.url, exc_info=True)

    def _url(self, path: str) -> URL:
        try:
            given = URL(path)
        except (TypeError, ValueError):
            raise InvalidURL(f"not a usable path or URL: {path!r}") from None
        if given.is_absolute():
            return given
        if not path:
            return URL(self.base_url)
        return URL(self.base_url.rstrip("/") + "/" + path.lstrip("/"))


# -- helpers ---------------------------------------------------------------------------------


def _parse_base(base_url: str) -> URL:
    try:
        base = URL(base_url)
    except (TypeError, ValueError):
        raise InvalidURL("the base URL is not a valid URL") from None
    if base.scheme not in ("http", "https") or not base.host:
        raise InvalidURL(
            f"the base URL must be an absolute http(s) URL, not {redact_url(base)!r}",
            url=redact_url(base),
        )
    return base


def _pairs(params: Params | None) -> list[tuple[str, str]]:
    if not params:
        return []
    items = params.items() if isinstance(params, Mapping) else params
    # Booleans as JSON spells them, not as Python does.
    return [(str(k), str(v).lower() if isinstance(v, bool) else str(v)) for k, v in items]


def _content_type(out: OutboundResponse) -> str:
    kind = out.headers.get("Content-Type", "").split(";", 1)[0].strip()
    return kind or "no content type"


def _snippet(body: bytes, limit: int = 60) -> str:
    text = " ".join(body[: limit * 4].decode("utf-8", errors="replace").split())
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def _no_parse(response: Response) -> None:
    return None


def _utcnow() -> datetime:
    return datetime.now(UTC)


async def _asyncio_sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


__all__ = ["APIClient", "Clock", "Params", "Sleep"]
