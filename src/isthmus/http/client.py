"""The one outbound HTTP client: a session factory and the one request function.

Build one :class:`OutboundHTTP` per worker process (``OutboundHTTP.from_settings``) and close it
on shutdown. Every call goes through :meth:`OutboundHTTP.request`, which

- refuses URLs that are not http(s) and hosts the address policy refuses (literal addresses
  here, names in the :class:`~isthmus.http.resolver.GuardedResolver`), before any connect;
- never follows redirects: a 3xx comes back as a response, for the caller to treat as failure;
- bounds every call by a connect and a total timeout, and the (decompressed) body by a cap;
- translates every aiohttp/socket failure into one :class:`~isthmus.errors.OutboundError`;
- returns HTTP error statuses as responses; :func:`isthmus.http.statuses.raise_for_status`
  turns them into errors.

Each call is logged at debug level on ``isthmus.http``: method, redacted URL, status or error
class, duration. Never a body, never a header.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp.abc import AbstractResolver
from multidict import CIMultiDictProxy
from yarl import URL

from isthmus import __version__
from isthmus.errors import (
    BlockedAddress,
    ConnectionRefused,
    DNSFailure,
    InvalidURL,
    NetworkError,
    OutboundError,
    OutboundTimeout,
    ResponseTooLarge,
    TLSFailure,
)
from isthmus.http.redact import redact_url
from isthmus.http.resolver import AddressPolicy, GuardedResolver, IPNetwork

if TYPE_CHECKING:
    from isthmus.config import Settings

log = logging.getLogger("isthmus.http")

USER_AGENT = f"isthmus/{__version__}"
_CHUNK = 64 * 1024
_VETTED_MAX = 10_000

QueryParams = Mapping[str, str | int | float] | Sequence[tuple[str, str | int | float]]


@dataclass(frozen=True)
class OutboundResponse:
    """What came back: status, headers, the whole body (at most the cap), seconds taken, and
    the URL that was requested (query included; redact it before logging)."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    elapsed: float
    url: str

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def text(self, encoding: str = "utf-8") -> str:
        return self.body.decode(encoding, errors="replace")


class OutboundHTTP:
    """One aiohttp session with the SSRF guard, timeouts and caps; share it, close it once.

    The session is created on first use, inside the running event loop.
    """

    def __init__(
        self,
        *,
        allowlist: Iterable[str | IPNetwork] = (),
        connect_timeout: float = 5.0,
        timeout: float = 10.0,
        max_response_bytes: int = 1024 * 1024,
        limit: int = 100,
        user_agent: str = USER_AGENT,
        ssl_context: ssl.SSLContext | None = None,
        resolver: AbstractResolver | None = None,
        trace_configs: Sequence[aiohttp.TraceConfig] = (),
    ) -> None:
        """``resolver`` is the *inner* resolver the guard wraps (default: aiohttp's)."""
        self.policy = AddressPolicy.from_strings(allowlist)
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
        self._limit = limit
        self._user_agent = user_agent
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._inner_resolver = resolver
        self._trace_configs = list(trace_configs)
        self._session: aiohttp.ClientSession | None = None
        self._resolver: GuardedResolver | None = None
        self._closed = False
        self._vetted_urls: dict[URL, URL] = {}
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> OutboundHTTP:
        kwargs: dict[str, Any] = {
            "allowlist": settings.outbound_networks,
            "connect_timeout": settings.outbound_connect_timeout,
            "timeout": settings.outbound_timeout,
            "max_response_bytes": settings.outbound_max_response_bytes,
        }
        return cls(**(kwargs | overrides))

    async def __aenter__(self) -> OutboundHTTP:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._resolver is not None:
            await self._resolver.close()
            self._resolver = None

    def _ensure_session(self) -> tuple[aiohttp.ClientSession, GuardedResolver]:
        if self._closed:
            raise RuntimeError("OutboundHTTP is closed")
        if self._session is None or self._resolver is None:
            resolver = GuardedResolver(self.policy, self._inner_resolver)
            connector = aiohttp.TCPConnector(resolver=resolver, limit=self._limit, ssl=self._ssl)
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers={"User-Agent": self._user_agent},
                # One session serves every tenant: cookies set by one upstream must never ride
                # along on another tenant's call.
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=True,
                # A proxy from the environment would be vetted instead of the real target.
                trust_env=False,
                trace_configs=self._trace_configs or None,
            )
            self._resolver = resolver
        return self._session, self._resolver

    def check_url(self, url: str | URL) -> URL:
        """Parse ``url`` and vet it without any I/O: http(s), a host, and a literal address the
        policy allows. Names are judged when they resolve (see :meth:`check_destination`)."""
        return _check_url(url, self.policy)

    async def check_destination(self, url: str | URL) -> list[str]:
        """Vet ``url`` including DNS (e.g. when a subscriber registers an endpoint): the
        addresses it would connect to, or InvalidURL / BlockedAddress / DNSFailure."""
        target = self.check_url(url)
        host = target.raw_host
        assert host is not None  # _check_url guarantees it
        literal = self.policy.check_host(host)
        if literal is not None:
            return [str(literal)]
        _, resolver = self._ensure_session()
        shown = redact_url(target)
        try:
            async with asyncio.timeout(self.timeout):
                results = await resolver.resolve(host, target.port or 0, socket.AF_UNSPEC)
        except BlockedAddress as exc:
            exc.url = shown
            raise
        except TimeoutError:
            raise OutboundTimeout(f"resolving {host} timed out", url=shown) from None
        except OSError as exc:
            raise DNSFailure(f"cannot resolve {host}: {_os_reason(exc)}", url=shown) from exc
        return [result["host"] for result in results]

    async def request(
        self,
        method: str,
        url: str | URL,
        *,
        headers: Mapping[str, str] | None = None,
        params: QueryParams | None = None,
        json: Any = None,
        data: bytes | str | None = None,
        # A per-call total for aiohttp's own ClientTimeout (it also bounds body reads), which
        # asyncio.timeout around the call could not express as cleanly.
        timeout: float | None = None,  # noqa: ASYNC109
        max_response_bytes: int | None = None,
    ) -> OutboundResponse:
        """Send one request and read the whole response (at most the cap).

        ``timeout`` overrides the total timeout for this call. Returns any status, 3xx and
        errors included; raises only OutboundError subclasses for failures to get one.
        """
        try:
            target = self._vetted(url)
        except OutboundError as refused:
            log.debug("%s %s -> %s: %s", method, refused.url, refused.error_class, refused)
            raise
        if params:
            target = target.extend_query(params)
        total = timeout if timeout is not None else self.timeout
        limit = max_response_bytes if max_response_bytes is not None else self.max_response_bytes
        started = time.perf_counter()
        try:
            session, _ = self._ensure_session()
            async with session.request(
                method,
                target,
                headers=headers,
                json=json,
                data=data,
                allow_redirects=False,
                timeout=self._client_timeout(total),
            ) as resp:
                body = await _read_capped(resp, limit, target)
                response = OutboundResponse(
                    status=resp.status,
                    headers=resp.headers,
                    body=body,
                    elapsed=time.perf_counter() - started,
                    url=str(target),
                )
        except Exception as exc:
            # The redacted URL is made only when something is reported: most calls succeed.
            shown = redact_url(target)
            error = _translate(exc, target, shown, total)
            if error is None:
                raise
            elapsed = time.perf_counter() - started
            log.debug("%s %s -> %s in %.3fs: %s", method, shown, error.error_class, elapsed, error)
            if error is exc:
                raise
            raise error from exc
        if log.isEnabledFor(logging.DEBUG):
            shown = redact_url(target)
            log.debug("%s %s -> %d in %.3fs", method, shown, response.status, response.elapsed)
        return response

    def _vetted(self, url: str | URL) -> URL:
        """``check_url``, remembered per URL: the policy never changes, and a worker sends to
        the same few endpoints thousands of times a second. A name is still judged at every
        connect, by the resolver."""
        if isinstance(url, URL):
            known = self._vetted_urls.get(url)
            if known is not None:
                return known
        target = self.check_url(url)
        if isinstance(url, URL):
            if len(self._vetted_urls) >= _VETTED_MAX:
                self._vetted_urls.clear()
            self._vetted_urls[url] = target
        return target

    def _client_timeout(self, total: float) -> aiohttp.ClientTimeout:
        """Each connect attempt (TCP + TLS) gets connect_timeout; waiting for a pool slot and
        DNS count against the total only. One object per total (they are immutable)."""
        made = self._timeouts.get(total)
        if made is None:
            if len(self._timeouts) >= _VETTED_MAX:
                self._timeouts.clear()
            made = self._timeouts[total] = aiohttp.ClientTimeout(
                total=total, sock_connect=min(self.connect_timeout, total)
            )
        return made


def _check_url(url: str | URL, policy: AddressPolicy) -> URL:
    try:
        target = url if isinstance(url, URL) else URL(url)
    except (TypeError, ValueError):
        raise InvalidURL("not a valid URL", url=redact_url(url)) from None
    shown = redact_url(target)
    if target.scheme not in ("http", "https"):
        raise InvalidURL(f"only http and https URLs are allowed, not {shown!r}", url=shown)
    host, raw_host = target.host, target.raw_host
    if not host or not raw_host:
        raise InvalidURL(f"the URL has no host: {shown!r}", url=shown)
    try:
        # Both spellings: aiohttp connects to raw_host (an IPv6 zone stays %-encoded there).
        for candidate in dict.fromkeys((host, raw_host)):
            policy.check_host(candidate)
    except BlockedAddress as exc:
        exc.url = shown
        raise
    return target


async def _read_capped(resp: aiohttp.ClientResponse, limit: int, target: URL) -> bytes:
    declared = resp.content_length
    if declared is not None and declared > limit:
        resp.close()  # do not drain what we will not read; drop the connection
        shown = redact_url(target)
        raise ResponseTooLarge(
            f"response of {declared} bytes from {shown} is over the {limit}-byte cap",
            limit=limit,
            url=shown,
        )
    if declared is not None and "Content-Encoding" not in resp.headers:
        # Not compressed and declared within the cap: the body cannot grow past it.
        return await resp.read()
    chunks: list[bytes] = []
    size = 0
    # Counted after decompression, so a small gzip bomb hits the cap too.
    async for chunk in resp.content.iter_chunked(_CHUNK):
        size += len(chunk)
        if size > limit:
            resp.close()
            shown = redact_url(target)
            raise ResponseTooLarge(
                f"response from {shown} is over the {limit}-byte cap", limit=limit, url=shown
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__


def _translate(exc: Exception, target: URL, shown: str, total: float) -> OutboundError | None:
    """The OutboundError for a failure, or None for one that is not a network failure.

    Messages are composed here, never copied from aiohttp: its messages can carry the full URL
    with its secrets.
    """
    where = f"{target.host}:{target.port}"
    if isinstance(exc, OutboundError):
        if exc.url is None:
            exc.url = shown
        return exc
    if isinstance(exc, aiohttp.ClientConnectorError):
        os_error = exc.os_error
        if isinstance(exc, aiohttp.ClientSSLError | aiohttp.ClientConnectorCertificateError):
            return TLSFailure(f"TLS with {where} failed: {_tls_reason(exc)}", url=shown)
        # ClientConnectorDNSError only exists from aiohttp 3.10; the gaierror test covers 3.9.
        if isinstance(os_error, socket.gaierror) or isinstance(
            exc, getattr(aiohttp, "ClientConnectorDNSError", ())
        ):
            return DNSFailure(f"cannot resolve {target.host}: {_os_reason(os_error)}", url=shown)
        if os_error.errno == errno.ECONNREFUSED or isinstance(os_error, ConnectionRefusedError):
            return ConnectionRefused(f"connection to {where} refused", url=shown)
        if isinstance(os_error, TimeoutError) or os_error.errno == errno.ETIMEDOUT:
            return OutboundTimeout(f"connecting to {where} timed out", url=shown)
        return NetworkError(f"cannot connect to {where}: {_os_reason(os_error)}", url=shown)
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return TLSFailure(f"TLS with {where} failed: {_tls_reason(exc)}", url=shown)
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return OutboundTimeout(f"connecting to {where} timed out", url=shown)
    if isinstance(exc, asyncio.TimeoutError):
        return OutboundTimeout(f"no complete response from {where} within {total:g}s", url=shown)
    if isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
        return InvalidURL(f"not a usable URL: {shown!r}", url=shown)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return NetworkError(f"{where} closed the connection before answering", url=shown)
    if isinstance(exc, aiohttp.ClientPayloadError):
        return NetworkError(f"the response from {where} broke off", url=shown)
    if isinstance(exc, aiohttp.ClientResponseError):
        return NetworkError(f"{where} sent a malformed response", url=shown)
    if isinstance(exc, aiohttp.ClientError | OSError):
        reason = _os_reason(exc) if isinstance(exc, OSError) else type(exc).__name__
        return NetworkError(f"network error with {where}: {reason}", url=shown)
    return None


def _tls_reason(exc: BaseException) -> str:
    inner = getattr(exc, "certificate_error", None) or getattr(exc, "os_error", None) or exc
    if isinstance(inner, ssl.SSLCertVerificationError) and inner.verify_message:
        return str(inner.verify_message)
    if isinstance(inner, ssl.SSLError) and inner.reason:
        return str(inner.reason)
    return type(inner).__name__
