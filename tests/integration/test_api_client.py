"""APIClient against a real local aiohttp API on 127.0.0.1.

The API serves five contacts under each paging convention and scripted failures; it records
every request, so "not retried" means one request arrived and "stopped" means no further page
was asked for. The client reaches it through an OutboundHTTP allowing 127.0.0.0/8; waits go to
a fake sleep that records them, and a fixed clock makes Retry-After dates exact.
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from aiohttp import web
from webhook_support import LocalServer

import isthmus
from isthmus.connectors import (
    APIClient,
    CallRecord,
    CursorPaginator,
    HeaderCursorPaginator,
    LinkHeaderPaginator,
    NextURLPaginator,
    OffsetPaginator,
    Page,
    PageNumberPaginator,
    Paginator,
    Request,
    RetryPolicy,
    Transforms,
    paginator_from_config,
)
from isthmus.errors import (
    BadResponse,
    BlockedAddress,
    ConnectionRefused,
    DNSFailure,
    OutboundError,
    PaginationLoop,
    UpstreamAuthError,
    UpstreamNotFound,
    UpstreamRateLimited,
    UpstreamRedirected,
    UpstreamRejected,
    UpstreamUnavailable,
)
from isthmus.http import OutboundHTTP

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
CONTACTS = [{"id": i, "name": f"Contact {i}", "created": 1714564800 + i} for i in range(1, 6)]
IDS = [1, 2, 3, 4, 5]
SIZE = 2


@dataclass
class Hit:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any


class FakeAPI(LocalServer):
    """Five contacts behind every paging convention, plus scripted failures."""

    def __init__(self) -> None:
        super().__init__()
        self.hits: list[Hit] = []
        self._failures: Counter[str] = Counter()

    def paths(self) -> list[str]:
        return [hit.path for hit in self.hits]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body = json.loads(raw) if raw else None
        self.hits.append(
            Hit(request.method, request.path, dict(request.query), dict(request.headers), body)
        )
        q = request.query
        route = getattr(self, "_" + request.path.strip("/").split("/")[0], None)
        if route is None:
            return web.json_response({"message": f"no route {request.path}"}, status=404)
        response: web.StreamResponse = await route(request, q, body)
        return response

    # -- paging conventions ----------------------------------------------------------------

    async def _page(self, request: web.Request, q: Any, body: Any) -> web.Response:
        page, size = int(q.get("page", 1)), int(q.get("per_page", SIZE))
        return web.json_response({"data": CONTACTS[(page - 1) * size : page * size]})

    async def _offset(self, request: web.Request, q: Any, body: Any) -> web.Response:
        offset, limit = int(q.get("offset", 0)), int(q.get("limit", SIZE))
        return web.json_response({"items": CONTACTS[offset : offset + limit], "total": 5})

    async def _cursor(self, request: web.Request, q: Any, body: Any) -> web.Response:
        after = int(q.get("after", 0))
        page: dict[str, Any] = {"results": CONTACTS[after : after + SIZE]}
        if after + SIZE < len(CONTACTS):
            page["paging"] = {"next": {"after": str(after + SIZE)}}
        return web.json_response(page)

    async def _search(self, request: web.Request, q: Any, body: Any) -> web.Response:
        after, limit = int(body.get("after", 0)), int(body["limit"])
        page: dict[str, Any] = {"results": CONTACTS[after : after + limit]}
        if after + limit < len(CONTACTS):
            page["paging"] = {"after": after + limit}
        return web.json_response(page)

    async def _next(self, request: web.Request, q: Any, body: Any) -> web.Response:
        page = int(q.get("page", 1))
        more = page * SIZE < len(CONTACTS)
        following = f"/next?page={page + 1}&sort=id" if more else None
        data = CONTACTS[(page - 1) * SIZE : page * SIZE]
        return web.json_response({"data": data, "links": {"next": following}})

    async def _parrot(self, request: web.Request, q: Any, body: Any) -> web.Response:
        """Next links carrying the whole query back, the key in it too (as some APIs do)."""
        page = int(q.get("page", 1))
        query = "&".join(f"{k}={v}" for k, v in q.items() if k != "page")
        more = page * SIZE < len(CONTACTS)
        following = f"/parrot?{query}&page={page + 1}" if more else None
        data = CONTACTS[(page - 1) * SIZE : page * SIZE]
        return web.json_response({"data": data, "links": {"next": following}})

    async def _link(self, request: web.Request, q: Any, body: Any) -> web.Response:
        page = int(q.get("page", 1))
        headers = {}
        if page * SIZE < len(CONTACTS):
            headers["Link"] = f'<{self.url(f"/link?page={page + 1}")}>; rel="next"'
        data = CONTACTS[(page - 1) * SIZE : page * SIZE]
        return web.json_response(data, headers=headers)

    async def _header(self, request: web.Request, q: Any, body: Any) -> web.Response:
        after = int(q.get("cursor", 0))
        headers = {}
        if after + SIZE < len(CONTACTS):
            headers["X-Next-Cursor"] = str(after + SIZE)
        return web.json_response({"rows": CONTACTS[after : after + SIZE]}, headers=headers)

    async def _hasmore(self, request: web.Request, q: Any, body: Any) -> web.Response:
        # Always a next cursor, even on the last page: only has_more says when to stop.
        after = int(q.get("cursor", 0))
        more = after + SIZE < len(CONTACTS)
        data = CONTACTS[after : after + SIZE]
        return web.json_response({"data": data, "next": str(after + SIZE), "has_more": more})

    async def _loop(self, request: web.Request, q: Any, body: Any) -> web.Response:
        page = 2 if "cursor" in q else 1
        return web.json_response({"data": [CONTACTS[page - 1]], "next": "c-1"})

    async def _offhost(self, request: web.Request, q: Any, body: Any) -> web.Response:
        elsewhere = f"http://localhost:{self.port}/next?page=2"
        return web.json_response({"data": CONTACTS[:SIZE], "next": elsewhere})

    # -- other answers ---------------------------------------------------------------------

    async def _flaky(self, request: web.Request, q: Any, body: Any) -> web.Response:
        key = f"{request.method} {request.path_qs}"
        if self._failures[key] < int(q.get("fail", 1)):
            self._failures[key] += 1
            headers = {"Retry-After": q["retry_after"]} if "retry_after" in q else {}
            status = int(q.get("status", 503))
            return web.json_response({"message": "try later"}, status=status, headers=headers)
        return web.json_response(
            {"ok": True, "method": request.method}, headers={"X-RateLimit-Remaining": "99"}
        )

    async def _status(self, request: web.Request, q: Any, body: Any) -> web.Response:
        code = int(request.path.rsplit("/", 1)[1])
        text = q.get("body", '{"message": "upstream says no"}')
        return web.Response(status=code, text=text, content_type="application/json")

    async def _html(self, request: web.Request, q: Any, body: Any) -> web.Response:
        page = "<!DOCTYPE html>\n<html><body><h1>Please log in</h1></body></html>"
        return web.Response(text=page, content_type="text/html")

    async def _empty(self, request: web.Request, q: Any, body: Any) -> web.Response:
        return web.Response(status=204)

    async def _private(self, request: web.Request, q: Any, body: Any) -> web.Response:
        if request.headers.get("Authorization") != "Bearer fresh":
            return web.json_response({"message": "token expired"}, status=401)
        return web.json_response({"data": CONTACTS[:1]})

    async def _redirect(self, request: web.Request, q: Any, body: Any) -> web.Response:
        return web.Response(status=302, headers={"Location": self.url("/page")})

    async def _echo(self, request: web.Request, q: Any, body: Any) -> web.Response:
        return web.json_response({"query": list(q.items()), "json": body})


class TokenAuth:
    """A minimal Auth: a bearer token that ``renew`` may replace."""

    def __init__(self, token: str, renewed: str | None = None) -> None:
        self.token = token
        self.renewed = renewed
        self.renewals = 0

    async def apply(self, request: Request) -> None:
        request.headers["Authorization"] = f"Bearer {self.token}"

    async def renew(self) -> bool:
        self.renewals += 1
        if self.renewed is None:
            return False
        self.token = self.renewed
        return True


class OddQueryAuth:
    """A key in a query parameter whose name redact_url cannot know is secret."""

    async def apply(self, request: Request) -> None:
        request.set_param("k", "s3cr3t-value")

    async def renew(self) -> bool:
        return False


class LoggingLimiter:
    """A minimal RateLimiter noting when the client takes a slot and what it reports."""

    def __init__(self) -> None:
        self.events: list[str] = []

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        self.events.append("enter")
        try:
            yield
        finally:
            self.events.append("exit")

    async def observe(self, status: int, headers: Mapping[str, str]) -> None:
        self.events.append(f"{status} remaining={headers.get('x-ratelimit-remaining')}")


class Recorder:
    def __init__(self) -> None:
        self.calls: list[CallRecord] = []

    async def __call__(self, record: CallRecord) -> None:
        self.calls.append(record)


class Sleeper:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
async def server() -> AsyncIterator[FakeAPI]:
    api = FakeAPI()
    await api.start()
    yield api
    await api.stop()


@pytest.fixture
async def http() -> AsyncIterator[OutboundHTTP]:
    async with OutboundHTTP(allowlist=["127.0.0.0/8"], timeout=5) as client:
        yield client


@pytest.fixture
def sleeper() -> Sleeper:
    return Sleeper()


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def make(server: FakeAPI, http: OutboundHTTP, sleeper: Sleeper, recorder: Recorder) -> Any:
    def build(**kwargs: Any) -> APIClient:
        options: dict[str, Any] = {
            "http": http,
            "sleep": sleeper,
            "clock": lambda: NOW,
            "observer": recorder,
        }
        return APIClient(server.url(""), **(options | kwargs))

    return build


async def collect(api: APIClient, path: str, **kwargs: Any) -> list[Page]:
    return [page async for page in api.paginate(path, **kwargs)]


def ids(pages: list[Page]) -> list[int]:
    return [record["id"] for page in pages for record in page.records]


# -- paginators end to end -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "paginator", "selector", "requests"),
    [
        ("/page", PageNumberPaginator(page_size=SIZE, page_size_param="per_page"), "data", 4),
        ("/offset", OffsetPaginator(limit=SIZE), "items", 4),
        (
            "/cursor",
            CursorPaginator(cursor_path="paging.next.after", cursor_param="after"),
            None,
            3,
        ),
        ("/next", NextURLPaginator(next_url_path="links.next"), "data", 3),
        ("/link", LinkHeaderPaginator(), None, 3),
        ("/header", HeaderCursorPaginator(cursor_header="X-Next-Cursor"), "rows", 3),
    ],
    ids=["page", "offset", "cursor", "next_url", "link_header", "header_cursor"],
)
async def test_each_paginator_walks_the_whole_listing(
    make: Any,
    server: FakeAPI,
    path: str,
    paginator: Paginator,
    selector: str | None,
    requests: int,
) -> None:
    async with make() as api:
        pages = await collect(api, path, paginator=paginator, selector=selector)
    assert ids(pages) == IDS
    assert len(server.hits) == requests
    assert [page.number for page in pages] == list(range(1, requests + 1))
    assert all(page.response.status == 200 for page in pages)


@pytest.mark.parametrize(
    ("path", "paginator", "selector"),
    [
        ("/page", PageNumberPaginator(page_size=SIZE, page_size_param="per_page"), "data"),
        ("/offset", OffsetPaginator(limit=SIZE), "items"),
        ("/cursor", CursorPaginator(cursor_path="paging.next.after", cursor_param="after"), None),
        ("/next", NextURLPaginator(next_url_path="links.next"), "data"),
        ("/link", LinkHeaderPaginator(), None),
        ("/header", HeaderCursorPaginator(cursor_header="X-Next-Cursor"), "rows"),
    ],
    ids=["page", "offset", "cursor", "next_url", "link_header", "header_cursor"],
)
async def test_a_walk_resumes_from_a_saved_next_request(
    make: Any, server: FakeAPI, path: str, paginator: Paginator, selector: str | None
) -> None:
    async with make() as api:
        walked = api.paginate(path, paginator=paginator, selector=selector)
        first = await anext(walked)
        await walked.aclose()  # interrupted after the first page
        assert first.next is not None
        hits_before = len(server.hits)
        rest = await collect(api, path, paginator=paginator, selector=selector, resume=first.next)

    assert ids([first, *rest]) == IDS  # nothing fetched twice, nothing missed
    assert len(server.hits) - hits_before == len(rest)
    assert rest[-1].next is None


async def test_next_url_pages_carry_the_query_the_api_gave(make: Any, server: FakeAPI) -> None:
    async with make() as api:
        await collect(
            api, "/next?sort=name", paginator=NextURLPaginator(next_url_path="links.next")
        )
    assert [hit.query for hit in server.hits] == [
        {"sort": "name"},
        {"page": "2", "sort": "id"},
        {"page": "3", "sort": "id"},
    ]


async def test_a_pages_requests_never_carry_the_auths_query_values(
    make: Any, server: FakeAPI
) -> None:
    """They are saved (checkpoints, a cursor sync's state): an API echoing the key in its
    next links must not get it stored; the auth puts it back on every request it sends."""
    async with make(auth=OddQueryAuth()) as api:
        pages = await collect(
            api, "/parrot", paginator=NextURLPaginator(next_url_path="links.next"), selector="data"
        )

    assert ids(pages) == IDS
    assert [hit.query.get("k") for hit in server.hits] == ["s3cr3t-value"] * 3
    kept = [r for page in pages for r in (page.request, page.next) if r is not None]
    assert len(kept) == 5
    assert all("s3cr3t-value" not in json.dumps([r.url, r.params]) for r in kept)
    assert [dict(page.next.params) for page in pages if page.next] == [{"page": "2"}, {"page": "3"}]


async def test_paginator_from_the_api_endpoint_config(make: Any, server: FakeAPI) -> None:
    config = {"type": "cursor", "cursorPath": "paging.next.after", "cursorParam": "after"}
    async with make() as api:
        pages = await collect(api, "/cursor", paginator=paginator_from_config(config))
    assert ids(pages) == IDS
    assert [hit.query for hit in server.hits] == [{}, {"after": "2"}, {"after": "4"}]


async def test_post_pagination_puts_the_cursor_in_the_body(make: Any, server: FakeAPI) -> None:
    paginator = CursorPaginator(cursor_path="paging.after", cursor_param="after", cursor_in="body")
    async with make() as api:
        pages = await collect(
            api, "/search", method="POST", json={"limit": 2, "q": "x"}, paginator=paginator
        )
    assert ids(pages) == IDS
    assert [(hit.method, hit.json) for hit in server.hits] == [
        ("POST", {"limit": 2, "q": "x"}),
        ("POST", {"limit": 2, "q": "x", "after": "2"}),
        ("POST", {"limit": 2, "q": "x", "after": "4"}),
    ]


# -- stop rules end to end -------------------------------------------------------------------


async def test_stop_on_empty_page(make: Any, server: FakeAPI) -> None:
    async with make() as api:
        pages = await collect(api, "/page", paginator=PageNumberPaginator(), selector="data")
    assert [len(page.records) for page in pages] == [2, 2, 1, 0]
    assert [hit.query["page"] for hit in server.hits] == ["1", "2", "3", "4"]


async def test_stop_when_has_more_is_false(make: Any, server: FakeAPI) -> None:
    paginator = CursorPaginator(cursor_path="next", has_more_path="has_more")
    async with make() as api:
        pages = await collect(api, "/hasmore", paginator=paginator, selector="data")
    assert ids(pages) == IDS
    assert len(server.hits) == 3  # the cursor on the last page is not followed


async def test_stop_when_the_total_is_reached(make: Any, server: FakeAPI) -> None:
    paginator = OffsetPaginator(limit=SIZE, total_path="total")
    async with make() as api:
        pages = await collect(api, "/offset", paginator=paginator, selector="items")
    assert ids(pages) == IDS
    assert len(server.hits) == 3  # no fourth, empty page asked for
    assert {page.total for page in pages} == {5}


async def test_stop_after_max_pages(make: Any, server: FakeAPI) -> None:
    paginator = PageNumberPaginator(max_pages=2)
    async with make() as api:
        by_rule = await collect(api, "/page", paginator=paginator, selector="data")
        by_call = await collect(api, "/page", paginator=PageNumberPaginator(), max_pages=1)
    assert ids(by_rule) == [1, 2, 3, 4]
    assert ids(by_call) == [1, 2]
    assert len(server.hits) == 3


async def test_a_pagination_loop_is_an_error_not_an_endless_walk(
    make: Any, server: FakeAPI, recorder: Recorder
) -> None:
    seen: list[Page] = []
    async with make() as api:
        with pytest.raises(PaginationLoop) as caught:
            async for page in api.paginate("/loop", paginator=CursorPaginator(cursor_path="next")):
                seen.append(page)
    assert "sent the cursor 'c-1' again with page 2" in str(caught.value)
    assert len(server.hits) == 2
    assert ids(seen) == [1]
    assert [(c.status, c.error_class, c.level) for c in recorder.calls] == [
        (200, None, "info"),
        (200, "pagination_loop", "error"),
    ]


async def test_a_next_url_on_another_host_is_not_followed(make: Any, server: FakeAPI) -> None:
    async with make() as api:
        with pytest.raises(BadResponse, match=r"is on another host than http://127\.0\.0\.1"):
            await collect(api, "/offhost", paginator=NextURLPaginator())
    assert len(server.hits) == 1


# -- retries ---------------------------------------------------------------------------------


async def test_429_with_retry_after_in_seconds(
    make: Any, server: FakeAPI, sleeper: Sleeper
) -> None:
    async with make() as api:
        response = await api.get("/flaky", params={"status": 429, "retry_after": "7"})
    assert response.body == {"ok": True, "method": "GET"}
    assert response.attempts == 2
    assert sleeper.waits == [7.0]
    assert len(server.hits) == 2


async def test_429_with_retry_after_as_an_http_date(
    make: Any, server: FakeAPI, sleeper: Sleeper
) -> None:
    when = format_datetime(NOW + timedelta(seconds=20), usegmt=True)
    async with make() as api:
        response = await api.get("/flaky", params={"status": 429, "retry_after": when})
    assert response.ok
    assert sleeper.waits == [20.0]


async def test_429_asking_longer_than_max_delay_gives_up(make: Any, sleeper: Sleeper) -> None:
    async with make(retry=RetryPolicy(max_delay=10)) as api:
        with pytest.raises(UpstreamRateLimited) as caught:
            await api.get("/flaky", params={"status": 429, "retry_after": "30"})
    assert caught.value.retry_after == 30
    assert sleeper.waits == []


async def test_5xx_retried_then_success(make: Any, server: FakeAPI, sleeper: Sleeper) -> None:
    async with make() as api:
        response = await api.get("/flaky", params={"fail": 2, "status": 502})
    assert (response.status, response.attempts) == (200, 3)
    assert sleeper.waits == [1.0, 2.0]
    assert len(server.hits) == 3


async def test_5xx_until_the_attempts_run_out(make: Any, server: FakeAPI, sleeper: Sleeper) -> None:
    policy = RetryPolicy(strategy="linear", initial_delay=0.5, max_attempts=4)
    async with make(retry=policy) as api:
        with pytest.raises(UpstreamUnavailable, match="answered 503: try later"):
            await api.get("/flaky", params={"fail": 9})
    assert len(server.hits) == 4
    assert sleeper.waits == [0.5, 1.0, 1.5]


async def test_post_is_not_retried_unless_idempotent(
    make: Any, server: FakeAPI, sleeper: Sleeper
) -> None:
    async with make() as api:
        with pytest.raises(UpstreamUnavailable):
            await api.post("/flaky", json={"email": "a@b.io"})
        assert len(server.hits) == 1
        response = await api.post("/flaky?again=1", json={"email": "a@b.io"}, idempotent=True)
    assert response.body == {"ok": True, "method": "POST"}
    assert len(server.hits) == 3
    assert sleeper.waits == [1.0]


async def test_put_and_delete_are_retried(make: Any, server: FakeAPI) -> None:
    async with make() as api:
        assert (await api.put("/flaky", json={"a": 1})).attempts == 2
        assert (await api.delete("/flaky")).attempts == 2
        assert (await api.patch("/flaky", json={"a": 1}, idempotent=True)).attempts == 2


# -- failures, each its class and a readable message -----------------------------------------


async def test_401_is_an_auth_error(make: Any, server: FakeAPI) -> None:
    auth = TokenAuth("stale")
    async with make(auth=auth) as api:
        with pytest.raises(UpstreamAuthError) as caught:
            await api.get("/private")
    assert str(caught.value) == f"{server.url('/private')} answered 401: token expired"
    assert caught.value.error_class == "auth"
    assert auth.renewals == 1
    assert len(server.hits) == 1


async def test_401_renews_the_credentials_once_and_resends(
    make: Any, server: FakeAPI, recorder: Recorder
) -> None:
    auth = TokenAuth("stale", renewed="fresh")
    async with make(auth=auth) as api:
        response = await api.get("/private")
    assert response.body == {"data": CONTACTS[:1]}
    assert (response.attempts, auth.renewals) == (2, 1)
    assert [hit.headers["Authorization"] for hit in server.hits] == ["Bearer stale", "Bearer fresh"]
    assert [(c.status, c.level) for c in recorder.calls] == [(401, "warn"), (200, "info")]


async def test_404_is_not_found(make: Any, server: FakeAPI) -> None:
    async with make() as api:
        with pytest.raises(UpstreamNotFound, match="answered 404: upstream says no"):
            await api.get("/status/404")
    assert len(server.hits) == 1


async def test_422_carries_the_body_message(make: Any) -> None:
    body = '{"errors": [{"message": "email is not valid"}]}'
    async with make() as api:
        with pytest.raises(UpstreamRejected) as caught:
            await api.post("/status/422", json={"email": "x"}, params={"body": body})
    assert caught.value.upstream_message == "email is not valid"
    assert str(caught.value).endswith("answered 422: email is not valid")


async def test_a_redirect_is_not_followed(make: Any, server: FakeAPI) -> None:
    async with make() as api:
        with pytest.raises(UpstreamRedirected, match="not followed"):
            await api.get("/redirect")
    assert server.paths() == ["/redirect"]


async def test_html_instead_of_json(make: Any, recorder: Recorder) -> None:
    async with make() as api:
        with pytest.raises(BadResponse) as caught:
            await api.get("/html")
        text = await api.get("/html", expect_json=False)
    assert str(caught.value) == (
        f"expected JSON from {text.url}, got text/html: "
        "'<!DOCTYPE html> <html><body><h1>Please log in</h1></body></…'"
    )
    assert (caught.value.error_class, caught.value.url) == ("bad_response", text.url)
    assert text.body is None and text.raw.startswith(b"<!DOCTYPE html>")
    assert [(c.status, c.error_class, c.level) for c in recorder.calls] == [
        (200, "bad_response", "error"),
        (200, None, "info"),
    ]


async def test_an_empty_body_is_none(make: Any) -> None:
    async with make() as api:
        response = await api.delete("/empty")
    assert (response.status, response.body, response.raw) == (204, None, b"")


@pytest.mark.parametrize(
    "text",
    [
        '{"id": 123456789012345678901234567890, "n": -0, "f": 1.5e-7, "dup": 1, "dup": 2}',
        '{"score": NaN, "far": 1e400, "low": -Infinity}',
        '["\\u00e9t\\u00e9", "\\ud83d\\ude00", {"nested": [true, false, null]}]',
    ],
)
async def test_json_bodies_parse_as_the_standard_library_parses_them(make: Any, text: str) -> None:
    async with make() as api:
        response = await api.get("/status/200", params={"body": text})
    # Compared as serialised: NaN is not equal to itself.
    assert json.dumps(response.body) == json.dumps(json.loads(text))


async def test_a_selector_that_finds_nothing(make: Any, recorder: Recorder) -> None:
    async with make() as api:
        with pytest.raises(BadResponse) as caught:
            await collect(api, "/page", selector="results")
    assert str(caught.value) == (
        "data selector 'results' found nothing: there is no 'results' in the response, "
        "which is an object with keys data"
    )
    assert caught.value.url is not None and caught.value.url.endswith("/page")
    assert [(c.status, c.error_class, c.level) for c in recorder.calls] == [
        (200, "bad_response", "error")
    ]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_connection_refused_is_retried_then_raised(
    http: OutboundHTTP, sleeper: Sleeper, recorder: Recorder
) -> None:
    base = f"http://127.0.0.1:{closed_port()}"
    async with APIClient(base, http=http, sleep=sleeper, observer=recorder) as api:
        with pytest.raises(ConnectionRefused, match=r"connection to 127\.0\.0\.1:\d+ refused"):
            await api.get("/x")
    assert sleeper.waits == [1.0, 2.0]
    assert [(c.status, c.error_class, c.level) for c in recorder.calls] == [
        (None, "refused", "warn"),
        (None, "refused", "warn"),
        (None, "refused", "error"),
    ]


async def test_dns_failure(http: OutboundHTTP) -> None:
    async with APIClient(
        "http://no-such-host.invalid/v1", http=http, retry=RetryPolicy.never()
    ) as api:
        with pytest.raises(DNSFailure, match=r"cannot resolve no-such-host\.invalid"):
            await api.get("contacts")


async def test_blocked_address_without_an_allowlist(server: FakeAPI, sleeper: Sleeper) -> None:
    # No http given: the client makes its own with the default guard, and closes it.
    async with APIClient(server.url(""), sleep=sleeper) as api:
        with pytest.raises(BlockedAddress) as caught:
            await api.get("/page")
    assert caught.value.error_class == "blocked"
    assert "127.0.0.1" in str(caught.value)
    assert server.hits == []
    assert sleeper.waits == []


# -- the observer, redaction, transforms, defaults -------------------------------------------


async def test_one_call_record_per_try_with_redacted_urls(
    make: Any, server: FakeAPI, recorder: Recorder
) -> None:
    async with make(auth=OddQueryAuth()) as api:
        response = await api.get("/flaky", params={"fail": 2, "api_key": "also-secret"})
        with pytest.raises(UpstreamNotFound) as caught:
            await api.get("/status/404")
    assert [(c.method, c.status, c.error_class, c.level) for c in recorder.calls] == [
        ("GET", 503, "unavailable", "warn"),
        ("GET", 503, "unavailable", "warn"),
        ("GET", 200, None, "info"),
        ("GET", 404, "not_found", "error"),
    ]
    assert [hit.query["k"] for hit in server.hits] == ["s3cr3t-value"] * 4  # it was sent
    shown = [c.url for c in recorder.calls] + [response.url, str(caught.value), caught.value.url]
    assert all("s3cr3t" not in text and "also-secret" not in text for text in shown), shown
    assert "api_key=***" in recorder.calls[0].url and "k=***" in recorder.calls[0].url
    assert all(c.at == NOW and c.duration_ms >= 0 for c in recorder.calls)
    assert recorder.calls[2].bytes == len(response.raw)
    assert recorder.calls[0].message is not None and "try later" in recorder.calls[0].message


async def test_every_try_takes_a_rate_limit_slot_and_reports_back(make: Any) -> None:
    limiter = LoggingLimiter()
    async with make(rate_limit=limiter, auth=TokenAuth("t")) as api:
        await api.get("/flaky")
        with pytest.raises(BlockedAddress):
            await api.get("http://10.0.0.1/x")
    assert limiter.events == [
        "enter",
        "503 remaining=None",
        "exit",
        "enter",
        "200 remaining=99",
        "exit",
        "enter",  # a call that never got a response reports no status
        "exit",
    ]


async def test_a_failing_observer_does_not_fail_the_call(make: Any) -> None:
    async def broken(record: CallRecord) -> None:
        raise RuntimeError("log store down")

    async with make(observer=broken) as api:
        assert (await api.get("/page")).ok


async def test_transforms_apply_to_records_and_requests(make: Any, server: FakeAPI) -> None:
    transforms = Transforms(
        rename={"name": "full_name"},
        dates={"created": "epoch"},
        hook=lambda record: record if record["id"] % 2 else None,
        headers={"X-Api-Version": "2024-05"},
        params={"archived": "false"},
    )
    async with make(transforms=transforms) as api:
        pages = await collect(
            api,
            "/cursor",
            paginator=CursorPaginator(cursor_path="paging.next.after", cursor_param="after"),
        )
    assert [page.records for page in pages] == [
        [{"id": 1, "full_name": "Contact 1", "created": "2024-05-01T12:00:01Z"}],
        [{"id": 3, "full_name": "Contact 3", "created": "2024-05-01T12:00:03Z"}],
        [{"id": 5, "full_name": "Contact 5", "created": "2024-05-01T12:00:05Z"}],
    ]
    # Dropped records still move the walk on: three pages, not one.
    assert len(server.hits) == 3
    assert all(h.headers["X-Api-Version"] == "2024-05" for h in server.hits)
    assert all(h.query["archived"] == "false" for h in server.hits)


async def test_base_url_joining_default_headers_and_params(
    server: FakeAPI, http: OutboundHTTP
) -> None:
    base = server.url("/echo?v=2")
    async with isthmus.APIClient(
        base, http=http, headers={"X-Team": "a"}, params={"locale": "en"}
    ) as api:
        nested = await api.get("sub/path", params={"v": "3", "flag": True})
        absolute = await api.post(server.url("/echo?x=1"), json={"n": 1})
    assert nested.body == {"query": [["locale", "en"], ["v", "3"], ["flag", "true"]], "json": None}
    assert server.hits[0].path == "/echo/sub/path"
    assert server.hits[0].headers["X-Team"] == "a"
    assert absolute.body == {"query": [["v", "2"], ["locale", "en"], ["x", "1"]], "json": {"n": 1}}


def test_api_client_is_exported_at_the_top() -> None:
    assert isthmus.APIClient is APIClient
    with pytest.raises(OutboundError):
        APIClient("ftp://example.com")
