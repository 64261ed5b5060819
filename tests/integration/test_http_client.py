"""The outbound HTTP layer against real local aiohttp servers on 127.0.0.1.

The client that reaches them is built with the allowlist 127.0.0.0/8, as the issue asks; a
default client (no allowlist) must refuse them, and the servers count every request they get,
so "refused" always means "zero requests arrived". Each test is bounded to a few seconds.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import re
import socket
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from multidict import CIMultiDict, CIMultiDictProxy

from isthmus import __version__
from isthmus.config import load_settings
from isthmus.errors import (
    BadResponse,
    BlockedAddress,
    ConfigError,
    ConnectionRefused,
    DNSFailure,
    InvalidURL,
    IsthmusError,
    NetworkError,
    OutboundError,
    OutboundTimeout,
    PaginationLoop,
    ReauthorizationNeeded,
    ResponseTooLarge,
    TLSFailure,
    TransportError,
    UpstreamAuthError,
    UpstreamNotFound,
    UpstreamRateLimited,
    UpstreamRedirected,
    UpstreamRejected,
    UpstreamStatusError,
    UpstreamUnavailable,
)
from isthmus.http import (
    MAX_RETRY_AFTER,
    AddressPolicy,
    GuardedResolver,
    OutboundHTTP,
    OutboundResponse,
    is_secret_name,
    parse_retry_after,
    raise_for_status,
    redact_headers,
    redact_url,
    upstream_message,
)

LOOPBACK = ["127.0.0.0/8"]
BIG = 2 * 1024 * 1024


# -- a local upstream that counts what reaches it ------------------------------------------


class Upstream:
    """An aiohttp.web server on 127.0.0.1 (random port) recording every request it gets."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.seen: list[web.Request] = []
        self.bodies: list[bytes] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    def url(self, path: str = "/", host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    async def start(self) -> None:
        app = web.Application(middlewares=[self._count])
        app.router.add_route("*", "/echo", self._echo)
        app.router.add_get("/victim", self._victim)
        app.router.add_route("*", "/redirect", self._redirect)
        app.router.add_get("/slow", self._slow)
        app.router.add_get("/reset", self._reset)
        app.router.add_get("/big", self._big)
        app.router.add_get("/stream", self._stream)
        app.router.add_get("/gzip-bomb", self._gzip_bomb)
        app.router.add_get("/status/{code}", self._status)
        app.router.add_get("/set-cookie", self._set_cookie)
        # handler_cancellation + a short shutdown: a sleeping handler must not hold teardown.
        self._runner = web.AppRunner(
            app, shutdown_timeout=0.1, handler_cancellation=True, access_log=None
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @web.middleware
    async def _count(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.hits.append(request.path)
        self.seen.append(request)
        self.bodies.append(await request.read())
        response: web.StreamResponse = await handler(request)
        return response

    async def _echo(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "method": request.method,
                "query": dict(request.query),
                "headers": dict(request.headers),
                "body": (await request.read()).decode(),
            },
            status=201,
            headers={"X-Upstream": "yes"},
        )

    async def _victim(self, request: web.Request) -> web.Response:
        return web.Response(text="you reached the victim")

    async def _redirect(self, request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": self.url("/victim")})

    async def _slow(self, request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(text="too late")

    async def _reset(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = 1000
        await response.prepare(request)
        await response.write(b"x" * 10)
        assert request.transport is not None
        request.transport.close()  # mid-response: 10 of the promised 1000 bytes
        return response

    async def _big(self, request: web.Request) -> web.Response:
        return web.Response(body=b"x" * BIG)

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()  # chunked: no Content-Length to judge up front
        await response.prepare(request)
        try:
            for _ in range(BIG // 65536):
                await response.write(b"y" * 65536)
        except (ConnectionError, RuntimeError):
            pass  # the client hung up at its cap
        return response

    async def _gzip_bomb(self, request: web.Request) -> web.Response:
        body = gzip.compress(b"\0" * BIG)
        return web.Response(body=body, headers={"Content-Encoding": "gzip"})

    async def _status(self, request: web.Request) -> web.Response:
        headers = {}
        if "retry_after" in request.query:
            headers["Retry-After"] = request.query["retry_after"]
        body = request.query.get("body", '{"message": "upstream says no"}')
        return web.Response(
            status=int(request.match_info["code"]),
            text=body,
            content_type="application/json",
            headers=headers,
        )

    async def _set_cookie(self, request: web.Request) -> web.Response:
        response = web.Response(text="cookie set")
        response.set_cookie("session", "tenant-a-secret")
        return response


class Tracer:
    """Counts what aiohttp actually does: requests started, DNS lookups, connections made."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.config = aiohttp.TraceConfig()
        # connection_create_start fires before DNS, so "made a connection" is *_end.
        for signal in ("request_start", "dns_resolvehost_start", "connection_create_end"):
            getattr(self.config, f"on_{signal}").append(self._counter(signal))

    def _counter(self, name: str) -> Callable[..., Any]:
        async def count(*_: Any) -> None:
            self.counts[name] += 1

        return count


class FakeDNS(AbstractResolver):
    """A stand-in for a third-party resolver: fixed answers, counted calls, optional delay."""

    def __init__(self, answers: dict[str, list[str]], delay: float = 0.0) -> None:
        self.answers = answers
        self.delay = delay
        self.calls: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.calls.append(host)
        if self.delay:
            await asyncio.sleep(self.delay)
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
            )
            for address in self.answers[host]
        ]

    async def close(self) -> None:
        pass


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    server = Upstream()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def tracer() -> Tracer:
    return Tracer()


@pytest.fixture
async def client(tracer: Tracer) -> AsyncIterator[OutboundHTTP]:
    """Allowed to reach 127.0.0.0/8, as the tests' local servers live there."""
    async with OutboundHTTP(
        allowlist=LOOPBACK, connect_timeout=1, timeout=2, trace_configs=[tracer.config]
    ) as http:
        yield http


@pytest.fixture
async def guarded(tracer: Tracer) -> AsyncIterator[OutboundHTTP]:
    """The default: no allowlist."""
    async with OutboundHTTP(connect_timeout=1, timeout=2, trace_configs=[tracer.config]) as http:
        yield http


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # closed again: nothing listens there


# -- success ------------------------------------------------------------------------------


async def test_success_carries_status_headers_body_elapsed_and_user_agent(
    client: OutboundHTTP, upstream: Upstream
) -> None:
    response = await client.request("GET", upstream.url("/echo"))
    assert isinstance(response, OutboundResponse)
    assert response.status == 201 and response.ok
    assert response.headers["X-Upstream"] == "yes"
    assert response.headers["content-type"].startswith("application/json")  # case-insensitive
    echoed = json.loads(response.body)
    assert echoed["headers"]["User-Agent"] == f"isthmus/{__version__}"
    assert 0 < response.elapsed < 2
    assert response.url == upstream.url("/echo")
    assert upstream.hits == ["/echo"]


async def test_headers_params_and_bodies_go_out_as_given(
    client: OutboundHTTP, upstream: Upstream
) -> None:
    response = await client.request(
        "POST",
        upstream.url("/echo?a=1"),
        headers={"User-Agent": "custom/1", "X-Webhook-Id": "wh_1"},
        params={"b": "2"},
        json={"event": "contact.created"},
    )
    echoed = json.loads(response.body)
    assert echoed["method"] == "POST"
    assert echoed["query"] == {"a": "1", "b": "2"}
    assert echoed["headers"]["User-Agent"] == "custom/1"
    assert echoed["headers"]["X-Webhook-Id"] == "wh_1"
    assert json.loads(echoed["body"]) == {"event": "contact.created"}
    raw = await client.request("PUT", upstream.url("/echo"), data=b'{"raw": true}')
    assert json.loads(raw.body)["body"] == '{"raw": true}'


async def test_cookies_never_carry_over_between_calls(
    client: OutboundHTTP, upstream: Upstream
) -> None:
    await client.request("GET", upstream.url("/set-cookie"))
    echoed = json.loads((await client.request("GET", upstream.url("/echo"))).body)
    assert "Cookie" not in echoed["headers"]


async def test_from_settings_takes_the_outbound_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ISTHMUS_OUTBOUND_ALLOWLIST", "127.0.0.0/8, 10.0.0.0/8")
    settings = load_settings(outbound_timeout=3, outbound_max_response_bytes=10)
    http = OutboundHTTP.from_settings(settings)
    assert [str(n) for n in http.policy.allowlist] == ["127.0.0.0/8", "10.0.0.0/8"]
    assert (http.connect_timeout, http.timeout, http.max_response_bytes) == (5.0, 3.0, 10)
    await http.close()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("10.0.0.1/8", "host bits set; did you mean 10.0.0.0/8?"),
        ("127.0.0.0/8,lan", "'lan' is not a network"),
        ("10.0.0.0/33", "is not a network"),
    ],
)
def test_a_bad_allowlist_is_a_config_error_naming_it(
    monkeypatch: pytest.MonkeyPatch, value: str, message: str
) -> None:
    monkeypatch.setenv("ISTHMUS_OUTBOUND_ALLOWLIST", value)
    with pytest.raises(ConfigError, match="outbound_allowlist") as caught:
        load_settings()
    assert message in caught.value.message


def test_the_allowlist_defaults_to_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ISTHMUS_OUTBOUND_ALLOWLIST", raising=False)
    assert load_settings().outbound_allowlist == []
    monkeypatch.setenv("ISTHMUS_OUTBOUND_ALLOWLIST", "")
    assert load_settings().outbound_networks == ()


# -- SSRF: the default client refuses, and nothing arrives ---------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "localhost",
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "[::ffff:0:7f00:1]",
        "[::127.0.0.1]",
        "[::1]",
        "[2002:7f00:1::]",
        "[64:ff9b::7f00:1]",
        "2130706433",
        "0x7f000001",
        "017700000001",
        "0177.0.0.1",
        "127.1",
        "127.0.0.1.",
        "LOCALHOST",
    ],
)
async def test_default_client_refuses_loopback_in_every_spelling(
    guarded: OutboundHTTP, upstream: Upstream, tracer: Tracer, host: str
) -> None:
    with pytest.raises(BlockedAddress) as caught:
        await guarded.request("GET", upstream.url("/victim", host=host))
    assert caught.value.error_class == "blocked"
    assert caught.value.retryable is False
    assert upstream.hits == []
    assert tracer.counts["connection_create_end"] == 0


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/",
        "http://0xa9fea9fe/",
        "http://10.0.0.1/",
        "http://192.168.1.1/",
        "http://100.64.0.1/",
        "http://[fe80::1%25eth0]/",
    ],
)
async def test_metadata_and_private_addresses_are_refused_before_any_connect(
    guarded: OutboundHTTP, tracer: Tracer, url: str
) -> None:
    with pytest.raises(BlockedAddress):
        await guarded.request("GET", url)
    # Not merely "no connection": aiohttp was never even asked.
    assert tracer.counts == Counter()


async def test_allowlist_opens_loopback_but_nothing_else(
    client: OutboundHTTP, upstream: Upstream, tracer: Tracer
) -> None:
    assert (await client.request("GET", upstream.url("/victim", host="localhost"))).ok
    with pytest.raises(BlockedAddress):
        await client.request("GET", "http://169.254.169.254/")
    with pytest.raises(BlockedAddress, match="only dotted-quad"):
        await client.request("GET", upstream.url("/victim", host="2130706433"))
    assert upstream.hits == ["/victim"]


async def test_a_302_to_loopback_is_returned_not_followed(
    client: OutboundHTTP, upstream: Upstream
) -> None:
    response = await client.request("POST", upstream.url("/redirect"), json={"x": 1})
    assert response.status == 302
    assert response.headers["Location"] == upstream.url("/victim")
    assert upstream.hits == ["/redirect"]  # zero on /victim
    with pytest.raises(UpstreamRedirected, match="not followed") as caught:
        raise_for_status(response)
    assert caught.value.status == 302 and caught.value.retryable is False


async def test_a_name_with_a_public_and_a_private_address_does_not_connect_at_all(
    upstream: Upstream, tracer: Tracer
) -> None:
    dns = FakeDNS({"mixed.example": ["93.184.216.34", "127.0.0.1"]})
    async with OutboundHTTP(resolver=dns, timeout=2, trace_configs=[tracer.config]) as http:
        with pytest.raises(BlockedAddress, match=re.escape("mixed.example resolves to 127.0.0.1")):
            await http.request("GET", f"http://mixed.example:{upstream.port}/victim")
    assert dns.calls == ["mixed.example"]
    assert tracer.counts["connection_create_end"] == 0
    assert upstream.hits == []


async def test_one_blocked_answer_refuses_a_name_even_when_the_rest_is_allowlisted(
    upstream: Upstream, tracer: Tracer
) -> None:
    # 127.0.0.1 is allowlisted and the server there would answer; 10.0.0.5 is not.
    dns = FakeDNS({"split.example": ["127.0.0.1", "10.0.0.5"]})
    async with OutboundHTTP(allowlist=LOOPBACK, resolver=dns, timeout=2) as http:
        with pytest.raises(BlockedAddress, match=re.escape("10.0.0.5, which is private")):
            await http.request("GET", f"http://split.example:{upstream.port}/victim")
    assert upstream.hits == []


async def test_the_connection_goes_to_the_vetted_address_without_a_second_lookup(
    upstream: Upstream,
) -> None:
    dns = FakeDNS({"pinned.example": ["127.0.0.1"]})
    async with OutboundHTTP(allowlist=LOOPBACK, resolver=dns, timeout=2) as http:
        response = await http.request("GET", f"http://pinned.example:{upstream.port}/echo")
        # A rebinding attacker's DNS now answers something else; it is never asked.
        dns.answers["pinned.example"] = ["169.254.169.254"]
        await http.request("GET", f"http://pinned.example:{upstream.port}/echo")
    assert dns.calls == ["pinned.example"]
    assert json.loads(response.body)["headers"]["Host"] == (f"pinned.example:{upstream.port}")
    assert upstream.hits == ["/echo", "/echo"]


@pytest.mark.parametrize(
    "name", ["2130706433", "0x7f000001", "017700000001", "0177.0.0.1", "127.1", "localhost"]
)
async def test_what_getaddrinfo_makes_of_a_name_is_vetted_before_any_socket(name: str) -> None:
    # The last line of defence, under the URL check: even if a numeric form reached the
    # resolver, the real getaddrinfo() decodes it to 127.0.0.1 and the guard refuses that.
    resolver = GuardedResolver(AddressPolicy(), ThreadedResolver())
    with pytest.raises(BlockedAddress, match=re.escape("127.0.0.1, which is loopback")):
        await resolver.resolve(name, 80, socket.AF_INET)
    opened = GuardedResolver(AddressPolicy.from_strings(LOOPBACK), ThreadedResolver())
    assert [r["host"] for r in await opened.resolve(name, 80, socket.AF_INET)] == ["127.0.0.1"]


async def test_check_destination_vets_names_by_what_they_resolve_to(
    guarded: OutboundHTTP, client: OutboundHTTP
) -> None:
    with pytest.raises(BlockedAddress):
        await guarded.check_destination("http://localhost:9/")
    with pytest.raises(BlockedAddress):
        await guarded.check_destination("http://[::ffff:10.0.0.1]/")
    with pytest.raises(DNSFailure):
        await guarded.check_destination("https://hooks.invalid/x")
    with pytest.raises(InvalidURL):
        await guarded.check_destination("gopher://localhost/")
    assert await client.check_destination("http://localhost:9/") == ["127.0.0.1"]
    assert await client.check_destination("http://127.0.0.2/") == ["127.0.0.2"]


@pytest.mark.parametrize(
    "url", ["ftp://example.com/x", "file:///etc/passwd", "http://", "/relative/path", "mailto:a@b"]
)
async def test_only_absolute_http_urls_are_accepted(
    guarded: OutboundHTTP, tracer: Tracer, url: str
) -> None:
    with pytest.raises(InvalidURL) as caught:
        await guarded.request("GET", url)
    assert caught.value.error_class == "invalid_url"
    assert tracer.counts == Counter()


# -- every failure maps to one error class --------------------------------------------------


async def test_timeout(upstream: Upstream) -> None:
    async with OutboundHTTP(allowlist=LOOPBACK, timeout=0.3) as http:
        started = asyncio.get_running_loop().time()
        with pytest.raises(OutboundTimeout, match=re.escape("within 0.3s")) as caught:
            await http.request("GET", upstream.url("/slow"))
        assert asyncio.get_running_loop().time() - started < 2
        # The per-call timeout overrides the client's.
        with pytest.raises(OutboundTimeout, match=re.escape("within 0.2s")):
            await http.request("GET", upstream.url("/slow"), timeout=0.2)
    assert (caught.value.error_class, caught.value.retryable) == ("timeout", True)


async def test_slow_dns_counts_against_the_total_timeout(upstream: Upstream) -> None:
    dns = FakeDNS({"slow.example": ["127.0.0.1"]}, delay=5)
    async with OutboundHTTP(allowlist=LOOPBACK, resolver=dns, timeout=0.3) as http:
        with pytest.raises(OutboundTimeout):
            await http.request("GET", f"http://slow.example:{upstream.port}/echo")
    assert upstream.hits == []


async def test_connection_refused(client: OutboundHTTP) -> None:
    with pytest.raises(ConnectionRefused) as caught:
        await client.request("GET", f"http://127.0.0.1:{closed_port()}/")
    assert (caught.value.error_class, caught.value.retryable) == ("refused", True)


async def test_connection_reset_mid_response(client: OutboundHTTP, upstream: Upstream) -> None:
    with pytest.raises(NetworkError) as caught:
        await client.request("GET", upstream.url("/reset"))
    assert (caught.value.error_class, caught.value.retryable) == ("network", True)


async def test_dns_failure(client: OutboundHTTP, tracer: Tracer) -> None:
    with pytest.raises(DNSFailure) as caught:
        await client.request("GET", "http://no-such-host.invalid/")
    assert (caught.value.error_class, caught.value.retryable) == ("dns", True)
    assert tracer.counts["connection_create_end"] == 0


async def test_dns_failure_from_the_inner_resolver() -> None:
    async with OutboundHTTP(resolver=FakeDNS({}), timeout=2) as http:
        with pytest.raises(DNSFailure, match=re.escape("cannot resolve nowhere.example")):
            await http.request("GET", "https://nowhere.example/")


@pytest.mark.parametrize("path", ["/big", "/stream", "/gzip-bomb"])
async def test_response_too_large(client: OutboundHTTP, upstream: Upstream, path: str) -> None:
    with pytest.raises(ResponseTooLarge) as caught:
        await client.request("GET", upstream.url(path))
    assert (caught.value.error_class, caught.value.retryable) == ("too_large", False)
    assert caught.value.limit == client.max_response_bytes
    whole = await client.request("GET", upstream.url(path), max_response_bytes=BIG)
    assert len(whole.body) == BIG  # the gzip bomb counted after decompression


async def test_tls_error(client: OutboundHTTP, upstream: Upstream) -> None:
    with pytest.raises(TLSFailure) as caught:
        await client.request("GET", upstream.url("/echo", scheme="https"))
    assert (caught.value.error_class, caught.value.retryable) == ("tls", False)


# -- statuses: returned by request, raised by raise_for_status -------------------------------


@pytest.mark.parametrize(
    ("query", "kind", "retryable", "retry_after", "message"),
    [
        ("/status/401", UpstreamAuthError, False, None, "upstream says no"),
        ("/status/403", UpstreamAuthError, False, None, "upstream says no"),
        ("/status/404", UpstreamNotFound, False, None, "upstream says no"),
        ("/status/429?retry_after=7", UpstreamRateLimited, True, 7.0, "upstream says no"),
        ("/status/429?retry_after=999999", UpstreamRateLimited, True, MAX_RETRY_AFTER, None),
        ("/status/429", UpstreamRateLimited, True, None, None),
        ("/status/503?retry_after=30", UpstreamUnavailable, True, 30.0, None),
        ("/status/500?body=oops", UpstreamUnavailable, True, None, None),
        ("/status/502", UpstreamUnavailable, True, None, None),
        ("/status/422", UpstreamRejected, False, None, "upstream says no"),
        ("/status/410", UpstreamRejected, False, None, None),
        (
            '/status/400?body={"error": {"message": "email is invalid"}}',
            UpstreamRejected,
            False,
            None,
            "email is invalid",
        ),
    ],
)
async def test_raise_for_status_maps_statuses(
    client: OutboundHTTP,
    upstream: Upstream,
    query: str,
    kind: type[UpstreamStatusError],
    retryable: bool,
    retry_after: float | None,
    message: str | None,
) -> None:
    response = await client.request("GET", upstream.url(query))  # not raised by request
    with pytest.raises(kind) as caught:
        raise_for_status(response)
    error = caught.value
    assert error.status == response.status
    assert (error.error_class, error.retryable, error.retry_after) == (
        kind.error_class,
        retryable,
        retry_after,
    )
    if message is not None:
        assert error.upstream_message == message
        assert message in error.message


async def test_raise_for_status_reads_an_http_date(
    client: OutboundHTTP, upstream: Upstream
) -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    date = format_datetime(now + timedelta(seconds=90), usegmt=True)
    response = await client.request(
        "GET", upstream.url("/status/429"), params={"retry_after": date}
    )
    with pytest.raises(UpstreamRateLimited) as caught:
        raise_for_status(response, now=now)
    assert caught.value.retry_after == 90.0
    ok = await client.request("GET", upstream.url("/echo"))
    assert raise_for_status(ok) is ok


NOW = datetime(2026, 3, 1, 8, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("   ", None),
        ("0", 0.0),
        ("120", 120.0),
        (" 5 ", 5.0),
        ("1.5", 1.5),
        ("99999999999", MAX_RETRY_AFTER),
        ("-5", None),
        ("soon", None),
        ("Sun, 01 Mar 2026 08:00:30 GMT", 30.0),
        ("Sunday, 01-Mar-26 08:01:00 GMT", 60.0),  # RFC 850, still to be accepted
        ("Sun Mar  1 08:02:00 2026", 120.0),  # asctime
        ("Sun, 01 Mar 2026 07:00:00 GMT", 0.0),  # in the past: now
        ("Mon, 02 Mar 2026 08:00:00 GMT", MAX_RETRY_AFTER),
        ("Sun, 99 Mar 2026 08:00:00 GMT", None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, NOW) == expected


def test_parse_retry_after_clamps_to_the_given_maximum_and_accepts_naive_now() -> None:
    assert parse_retry_after("600", NOW, maximum=60) == 60
    naive = NOW.replace(tzinfo=None)
    assert parse_retry_after("Sun, 01 Mar 2026 08:00:10 GMT", naive) == 10.0


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"message": "Email is invalid"}', "Email is invalid"),
        (b'{"error": "invalid_grant", "error_description": "expired"}', "invalid_grant: expired"),
        (b'{"error": "forbidden"}', "forbidden"),
        (b'{"error": {"message": "No such customer", "type": "x"}}', "No such customer"),
        (b'{"errors": [{"message": "bad field"}]}', "bad field"),
        (b'{"detail": "Not allowed"}', "Not allowed"),
        (b'{"message": "  spread\\n over  lines "}', "spread over lines"),
        (b'{"message": ""}', None),
        (b'{"status": "error"}', None),
        (b"[1, 2]", None),
        (b"<html>502 Bad Gateway</html>", None),
        (b"\xff\xfe", None),
        (b"", None),
    ],
)
def test_upstream_message(body: bytes, expected: str | None) -> None:
    assert upstream_message(body) == expected


def test_upstream_message_is_cut() -> None:
    message = upstream_message(b'{"message": "' + b"x" * 1000 + b'"}')
    assert message is not None and len(message) == 300 and message.endswith("…")


def test_upstream_errors_are_not_the_hubs_own_auth_not_found_or_rate_limit() -> None:
    from isthmus.errors import AuthError, NotFound, RateLimited

    response = OutboundResponse(401, CIMultiDictProxy(CIMultiDict()), b"", 0.1, "http://x/")
    with pytest.raises(UpstreamAuthError) as caught:
        raise_for_status(response)
    assert not isinstance(caught.value, AuthError | NotFound | RateLimited)


# -- the error tree ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "error_class", "retryable"),
    [
        (InvalidURL, "invalid_url", False),
        (BlockedAddress, "blocked", False),
        (DNSFailure, "dns", True),
        (ConnectionRefused, "refused", True),
        (OutboundTimeout, "timeout", True),
        (TLSFailure, "tls", False),
        (NetworkError, "network", True),
        (ResponseTooLarge, "too_large", False),
        (UpstreamRedirected, "redirected", False),
        (UpstreamAuthError, "auth", False),
        (UpstreamNotFound, "not_found", False),
        (UpstreamRateLimited, "rate_limited", True),
        (UpstreamUnavailable, "unavailable", True),
        (UpstreamRejected, "rejected", False),
        (ReauthorizationNeeded, "reauthorize", False),
        (BadResponse, "bad_response", False),
        (PaginationLoop, "pagination_loop", False),
    ],
)
def test_every_error_class_knows_its_name_and_whether_to_retry(
    kind: type[OutboundError], error_class: str, retryable: bool
) -> None:
    assert issubclass(kind, OutboundError) and issubclass(kind, IsthmusError)
    assert (kind.error_class, kind.retryable) == (error_class, retryable)
    if kind in (DNSFailure, ConnectionRefused, OutboundTimeout, TLSFailure, NetworkError):
        assert issubclass(kind, TransportError)


# -- redaction and logs -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://api.example.com/v1/contacts", "https://api.example.com/v1/contacts"),
        ("https://x.io/a?api_key=sk_live_1&page=2", "https://x.io/a?api_key=***&page=2"),
        (
            "https://x.io/a?token=t&access_token=a&q=ok",
            "https://x.io/a?token=***&access_token=***&q=ok",
        ),
        (
            "https://x.io/a?apiKey=k&hapikey=h&key=v",
            "https://x.io/a?apiKey=***&hapikey=***&key=***",
        ),
        (
            "https://x.io/a?client_secret=s&password=p",
            "https://x.io/a?client_secret=***&password=***",
        ),
        (
            "https://x.io/a?signature=s&sig=s&auth=a",
            "https://x.io/a?signature=***&sig=***&auth=***",
        ),
        ("https://x.io/cb?code=c&state=s", "https://x.io/cb?code=***&state=s"),
        ("https://user:pass@x.io/a", "https://***@x.io/a"),
        ("https://sk_live_key@x.io/a", "https://***@x.io/a"),
        ("https://x.io/a#access_token=t", "https://x.io/a"),
        ("https://x.io/a?author=ann&monkey=1", "https://x.io/a?author=ann&monkey=1"),
        ("http://[::1", "<unparseable url>"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_redact_headers() -> None:
    headers = {
        "Authorization": "Bearer sk_live_abc",
        "Cookie": "session=abc",
        "X-API-Key": "k",
        "X-Auth-Token": "t",
        "X-Webhook-Signature": "sha256=aa",
        "webhook-signature": "v1,bb",
        "X-HubSpot-Signature-v3": "cc",
        "X-Custom-Secret": "s",
        "Content-Type": "application/json",
        "X-Webhook-Id": "wh_1",
    }
    shown = redact_headers(headers)
    assert shown["Authorization"] == "Bearer ***"
    assert shown["Content-Type"] == "application/json"
    assert shown["X-Webhook-Id"] == "wh_1"
    for name in set(headers) - {"Authorization", "Content-Type", "X-Webhook-Id"}:
        assert shown[name] == "***", name
    assert redact_headers([("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]) == {
        "Set-Cookie": "***, ***"
    }
    assert redact_headers(None) == {}
    assert not is_secret_name("Content-Length") and is_secret_name("private_key")


async def test_calls_are_logged_at_debug_without_secrets_or_bodies(
    client: OutboundHTTP, upstream: Upstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="isthmus.http")
    await client.request(
        "POST",
        upstream.url("/echo?api_key=SECRET-Q"),
        headers={"Authorization": "Bearer SECRET-H"},
        data=b"SECRET-BODY",
    )
    with pytest.raises(ConnectionRefused):
        await client.request("GET", f"http://127.0.0.1:{closed_port()}/?token=SECRET-T")
    with pytest.raises(BlockedAddress):
        await client.request("GET", "http://169.254.169.254/?password=SECRET-P")
    records = [r for r in caplog.records if r.name == "isthmus.http"]
    text = "\n".join(r.getMessage() for r in records)
    assert len(records) == 3
    assert all(r.levelno == logging.DEBUG for r in records)
    assert f"POST {upstream.url('/echo?api_key=***')} -> 201 in " in text
    assert "-> refused in" in text and "token=***" in text
    assert "-> blocked" in text
    assert "SECRET" not in text
    assert "SECRET-BODY" in upstream.bodies[0].decode()  # it was sent, just not logged
