"""Helpers for the delivery tests: a scripted local receiver that verifies every request,
a fake clock, and reads of the delivery tables.

The receiver checks each request as a subscriber would, with the official ``standardwebhooks``
library and with a plain HMAC of the raw body, against every secret it was told about; a
test asserts on ``verified`` (every request verified by at least one secret).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from webhook_support import LocalServer

from isthmus.store.db import Store
from isthmus.store.tables import deliveries, delivery_attempts, jobs, webhook_subscriptions
from isthmus.store.types import utcnow

#: A step of a path's script: a status (optionally with headers), "reset" (close the
#: connection without answering) or ("sleep", seconds) then 200.
Step = int | str | tuple[Any, ...]


@dataclass
class Hit:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    standard_ok: list[str] = field(default_factory=list)
    hex_ok: list[str] = field(default_factory=list)


class ScriptedReceiver(LocalServer):
    """An aiohttp server on 127.0.0.1. Each path answers the next step of its script, then
    200 once the script is used up; ``/slow/<seconds>`` sleeps, then answers 200. While
    ``answering`` is clear, every request is received (and counted in flight) but waits
    for its answer."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: list[str] = []
        self.scripts: dict[str, list[Step]] = {}
        self.hits: list[Hit] = []
        self.in_flight: dict[str, int] = defaultdict(int)
        self.max_in_flight: dict[str, int] = defaultdict(int)
        self.answering = asyncio.Event()
        self.answering.set()

    def script(self, path: str, steps: Iterable[Step]) -> None:
        self.scripts[path] = list(steps)

    def on(self, path: str) -> list[Hit]:
        return [h for h in self.hits if h.path == path]

    def verified(self, hit: Hit) -> bool:
        return bool(hit.standard_ok) and bool(hit.hex_ok)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        hit = Hit(request.path, dict(request.headers), body, time.monotonic())
        for secret in self.secrets:
            try:
                Webhook(secret).verify(body, hit.headers)
                hit.standard_ok.append(secret)
            except WebhookVerificationError:
                pass
            expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
            if hmac.compare_digest(request.headers.get("X-Webhook-Signature", ""), expected):
                hit.hex_ok.append(secret)
        self.hits.append(hit)
        path = request.path
        self.in_flight[path] += 1
        self.max_in_flight[path] = max(self.max_in_flight[path], self.in_flight[path])
        try:
            await self.answering.wait()
            if path.startswith("/slow/"):
                await asyncio.sleep(float(path.rsplit("/", 1)[1]))
                return web.json_response({"ok": True})
            script = self.scripts.get(path)
            step: Step = script.pop(0) if script else 200
            if step == "reset":
                assert request.transport is not None
                request.transport.abort()
                return web.Response(status=200)
            if isinstance(step, tuple) and step[0] == "sleep":
                await asyncio.sleep(step[1])
                return web.json_response({"ok": True})
            status, headers = (step[0], step[1]) if isinstance(step, tuple) else (step, {})
            return web.json_response({"status": status}, status=int(status), headers=headers)
        finally:
            self.in_flight[path] -= 1


class FakeClock:
    """A clock a test moves by hand; starts a little ahead of the wall clock when it is
    first read, so that what the test published before (at wall-clock time) is due, however
    long a busy machine took to publish it."""

    def __init__(self) -> None:
        self._now: datetime | None = None

    @property
    def now(self) -> datetime:
        if self._now is None:
            self._now = utcnow() + timedelta(seconds=2)
        return self._now

    @now.setter
    def now(self, moment: datetime) -> None:
        self._now = moment

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def to(self, moment: datetime) -> None:
        self.now = max(self.now, moment)


async def delivery_rows(store: Store, **where: Any) -> list[dict[str, Any]]:
    query = sa.select(deliveries).order_by(deliveries.c.id)
    for column, value in where.items():
        query = query.where(deliveries.c[column] == value)
    async with store.read() as conn:
        return [dict(r._mapping) for r in await conn.execute(query)]


async def attempt_rows(store: Store, delivery_id: str) -> list[dict[str, Any]]:
    query = (
        sa.select(delivery_attempts)
        .where(delivery_attempts.c.delivery_id == delivery_id)
        .order_by(delivery_attempts.c.attempted_at, delivery_attempts.c.id)
    )
    async with store.read() as conn:
        return [dict(r._mapping) for r in await conn.execute(query)]


async def job_statuses(store: Store) -> list[str]:
    async with store.read() as conn:
        return [r[0] for r in await conn.execute(sa.select(jobs.c.status).order_by(jobs.c.id))]


async def subscription_row(store: Store, sub_id: str) -> dict[str, Any]:
    query = sa.select(webhook_subscriptions).where(webhook_subscriptions.c.id == sub_id)
    async with store.read() as conn:
        return dict((await conn.execute(query)).one()._mapping)
