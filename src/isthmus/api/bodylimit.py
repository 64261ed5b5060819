"""Request-body cap as pure ASGI middleware.

A declared ``Content-Length`` over the cap is refused before the app runs, without reading
the body. A body of unknown length (chunked) is counted as the app receives it; the chunk
that crosses the cap is never handed over, the app's ``receive`` raises ``PayloadTooLarge``
instead, so no handler ever sees a truncated body as a complete one.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from isthmus.api.problems import problem
from isthmus.errors import PayloadTooLarge


class BodyLimitMiddleware:
    """Answer 413 to any HTTP request whose body is over ``max_bytes``."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await _refuse(scope, receive, send, self.max_bytes)
            return
        await _Guard(self.app, self.max_bytes, receive, send).run(scope)


class _Guard:
    """One request's byte count and response state."""

    def __init__(self, app: ASGIApp, max_bytes: int, receive: Receive, send: Send) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.inner_receive = receive
        self.inner_send = send
        self.received = 0
        self.exceeded = False
        self.response_started = False

    async def run(self, scope: Scope) -> None:
        try:
            await self.app(scope, self.receive, self.send)
        except PayloadTooLarge:
            if not self.exceeded or self.response_started:
                raise
        if self.exceeded and not self.response_started:
            await _refuse(scope, self.inner_receive, self.inner_send, self.max_bytes)

    async def receive(self) -> Message:
        if self.exceeded:
            raise _too_large(self.max_bytes)
        message = await self.inner_receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.max_bytes:
                self.exceeded = True
                raise _too_large(self.max_bytes)
        return message

    async def send(self, message: Message) -> None:
        # Once the cap is crossed the 413 is ours to send; whatever the app answers after
        # catching the error (a 500, or a 4xx of its own) must not reach the client.
        if self.exceeded and not self.response_started:
            return
        if message["type"] == "http.response.start":
            self.response_started = True
        await self.inner_send(message)


def _too_large(max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"request body is over the {max_bytes}-byte limit")


async def _refuse(scope: Scope, receive: Receive, send: Send, max_bytes: int) -> None:
    error = _too_large(max_bytes)
    # The unread rest of the body would otherwise be parsed as the next request.
    response = problem(413, error.title, error.message, headers={"Connection": "close"})
    await response(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                # Servers reject a malformed length before we see it; if one slips through,
                # counting the streamed bytes still enforces the cap.
                return None
    return None
