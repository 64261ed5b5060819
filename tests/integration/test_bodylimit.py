from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI, Request
from starlette.types import Message, Receive, Scope, Send

from isthmus.api.bodylimit import BodyLimitMiddleware
from isthmus.errors import PayloadTooLarge

CAP = 1024 * 1024
PROBLEM = {
    "type": "about:blank",
    "title": "Payload too large",
    "status": 413,
    "detail": "request body is over the 1048576-byte limit",
}


class Seen:
    """What the handlers got to see, so a test can prove they saw no partial body."""

    def __init__(self) -> None:
        self.calls = 0
        self.bodies: list[int] = []
        self.errors: list[str] = []


def build_app(seen: Seen, max_bytes: int = CAP) -> FastAPI:
    app = FastAPI()

    @app.post("/api/v1/echo")
    async def echo(request: Request) -> dict[str, int]:
        seen.calls += 1
        body = await request.body()
        seen.bodies.append(len(body))
        return {"size": len(body)}

    @app.post("/api/v1/careless")
    async def careless(request: Request) -> dict[str, int]:
        # A handler that swallows every error must still not turn an oversized body into a 200.
        seen.calls += 1
        try:
            body = await request.body()
        except Exception as exc:
            seen.errors.append(type(exc).__name__)
            return {"size": -1}
        seen.bodies.append(len(body))
        return {"size": len(body)}

    app.add_middleware(BodyLimitMiddleware, max_bytes=max_bytes)
    return app


def client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


async def chunks(total: int, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        n = min(size, total - sent)
        sent += n
        yield b"x" * n


async def test_declared_length_over_the_cap_is_refused_unread() -> None:
    seen = Seen()
    async with client(build_app(seen)) as c:
        r = await c.post("/api/v1/echo", content=b"x" * (CAP + 1))
    assert r.status_code == 413
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["connection"] == "close"
    assert r.json() == PROBLEM
    assert seen.calls == 0


async def test_declared_length_refusal_never_reads_the_body() -> None:
    reads = 0
    app_called = False

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal app_called
        app_called = True

    async def receive() -> Message:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": b"", "more_body": False}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": [(b"content-length", b"11")]}
    await BodyLimitMiddleware(app, max_bytes=10)(scope, receive, send)
    assert (reads, app_called) == (0, False)
    assert sent[0]["status"] == 413


async def test_chunked_body_over_the_cap_is_refused() -> None:
    seen = Seen()
    async with client(build_app(seen)) as c:
        r = await c.post("/api/v1/echo", content=chunks(CAP + 1))
    assert r.status_code == 413
    assert r.json() == PROBLEM
    # The handler ran (the length was unknown) but never got a body to work with.
    assert seen.calls == 1
    assert seen.bodies == []


async def test_a_handler_swallowing_the_error_still_answers_413() -> None:
    seen = Seen()
    async with client(build_app(seen)) as c:
        r = await c.post("/api/v1/careless", content=chunks(CAP + 10))
    assert r.status_code == 413
    assert r.json() == PROBLEM
    assert seen.errors == ["PayloadTooLarge"]
    assert seen.bodies == []


async def test_understated_content_length_is_still_counted() -> None:
    seen = Seen()
    async with client(build_app(seen, max_bytes=10)) as c:
        r = await c.post(
            "/api/v1/echo", content=chunks(11, size=4), headers={"Content-Length": "4"}
        )
    assert r.status_code == 413
    assert seen.bodies == []


@pytest.mark.parametrize("chunked", [False, True])
async def test_body_at_the_cap_passes(chunked: bool) -> None:
    seen = Seen()
    content = chunks(CAP) if chunked else b"x" * CAP
    async with client(build_app(seen)) as c:
        r = await c.post("/api/v1/echo", content=content)
    assert r.status_code == 200
    assert r.json() == {"size": CAP}
    assert seen.bodies == [CAP]


async def test_overflow_after_the_response_started_aborts_the_request() -> None:
    # Too late for a 413: the error propagates so the server drops the connection.
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        while (await receive()).get("more_body"):
            pass

    messages = iter(
        [
            {"type": "http.request", "body": b"x" * 6, "more_body": True},
            {"type": "http.request", "body": b"x" * 6, "more_body": False},
        ]
    )

    async def receive() -> Message:
        return next(messages)

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": []}
    with pytest.raises(PayloadTooLarge):
        await BodyLimitMiddleware(app, max_bytes=10)(scope, receive, send)
    assert [m["status"] for m in sent] == [200]


def test_cap_must_be_positive() -> None:
    with pytest.raises(ValueError):
        BodyLimitMiddleware(build_app(Seen()), max_bytes=0)
