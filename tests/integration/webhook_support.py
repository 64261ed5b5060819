"""Helpers for the outbound webhook tests: bodies, and a local receiver that checks signatures.

The receiver verifies every request the way a subscriber would: with the official
``standardwebhooks`` library (``webhook-*`` headers) and with a plain HMAC of the raw body
(``X-Webhook-Signature``), against each secret it was told about.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Any

import httpx
from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

WEBHOOKS = "/api/v1/webhooks"
EVENT_TYPES = "/api/v1/event-types"
#: A public address, so creating a subscription needs no DNS and no allowlist.
PUBLIC_URL = "https://93.184.215.14/hooks/isthmus"


def webhook_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "Contact Notifications",
        "url": PUBLIC_URL,
        "events": ["contact.created", "contact.updated"],
    }
    body.update(overrides)
    return body


async def create_webhook(api: httpx.AsyncClient, **overrides: Any) -> dict[str, Any]:
    response = await api.post(WEBHOOKS, json=webhook_body(**overrides))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


@dataclass
class Received:
    """One request as the receiver saw it, and which known secrets verified it."""

    path: str
    headers: dict[str, str]
    body: bytes
    standard_ok: list[str] = field(default_factory=list)
    hex_ok: list[str] = field(default_factory=list)


class LocalServer:
    """An aiohttp server on 127.0.0.1 and a free port; every path goes to ``_handle``."""

    def __init__(self) -> None:
        self.port = 0
        self._runner: web.AppRunner | None = None

    def url(self, path: str = "/ok") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        raise NotImplementedError


class Receiver(LocalServer):
    """An aiohttp server on 127.0.0.1: ``/ok`` answers 200, ``/fail`` 500; counts everything."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: list[str] = []
        self.received: list[Received] = []

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        got = Received(request.path, dict(request.headers), body)
        for secret in self.secrets:
            try:
                Webhook(secret).verify(body, got.headers)
                got.standard_ok.append(secret)
            except WebhookVerificationError:
                pass
            expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
            if hmac.compare_digest(request.headers.get("X-Webhook-Signature", ""), expected):
                got.hex_ok.append(secret)
        self.received.append(got)
        if request.path == "/fail":
            return web.json_response({"message": "receiver broke"}, status=500)
        return web.json_response({"received": True})
