"""Rate limits for the HTTP API, as pure ASGI middleware over ``limits.aio``.

Every request under ``/api/`` (the docs pages aside) hits two moving-window buckets:

- the **key** bucket, named by the SHA-256 hex of the bearer token (the hash the store keeps
  for API keys), holding ``default_limit`` or, for a route listed in ``route_limits``, that
  route's own limit. The token is not checked here, authentication runs later; an unknown
  token is counted like a known one.
- the **IP** bucket, named by the client address, holding ``ip_limit``; it bounds clients
  that rotate tokens or send none (those hit the IP bucket only).

If either is spent the request is answered 429 with ``Retry-After`` and never reaches the
app. ``X-RateLimit-Limit/-Remaining/-Reset`` describe the key bucket (the IP bucket when
there is no token) on every limited response, whoever produced it.

The counters live in the given storage (see ``isthmus.ratelimit_storage``); with Redis
storage every process shares them. When the storage cannot be reached the request is let
through unlimited: the limiter guards capacity, it must not take the API down with it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import fastapi.routing
from limits import RateLimitItem, parse
from limits.aio.storage import Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from limits.util import WindowStats
from starlette.routing import BaseRoute, Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from isthmus.api.problems import rate_limited
from isthmus.domain.auth import hash_key

log = logging.getLogger(__name__)

LIMITED_PREFIX = "/api/"
EXEMPT_PREFIXES = ("/api/docs", "/api/redoc", "/api/openapi.json")


@dataclass(frozen=True)
class _Bucket:
    item: RateLimitItem
    identifiers: tuple[str, ...]
    #: How the 429 names it: "API key limit of 5 per 1 minute for POST /x exceeded".
    owner: str
    route: str | None = None

    def describe(self) -> str:
        where = f" for {self.route}" if self.route else ""
        return f"{self.owner} limit of {self.item}{where} exceeded"


class RateLimitMiddleware:
    """Limit ``app`` per API key and per client IP; see the module docstring.

    Limits are strings such as ``"100/minute"``; ``route_limits`` maps
    ``"METHOD /route/{template}"`` (the FastAPI route path, as in ``Settings.rate_limit_routes``)
    to the key limit for that route. All are parsed here, so a bad one fails at start-up.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        storage: Storage,
        default_limit: str,
        ip_limit: str,
        route_limits: dict[str, str],
    ) -> None:
        self.app = app
        self.limiter = MovingWindowRateLimiter(storage)
        self.default_limit = parse(default_limit)
        self.ip_limit = parse(ip_limit)
        self.route_limits = {_route_name(route): parse(lim) for route, lim in route_limits.items()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _is_limited(_route_path(scope)):
            await self.app(scope, receive, send)
            return

        ip_bucket = _Bucket(self.ip_limit, ("ip", _client_ip(scope)), "client IP")
        key_bucket = self._key_bucket(scope)
        shown = key_bucket or ip_bucket
        buckets = [ip_bucket] if key_bucket is None else [key_bucket, ip_bucket]
        try:
            allowed = await asyncio.gather(
                *(self.limiter.hit(b.item, *b.identifiers) for b in buckets)
            )
            denied = [b for b, ok in zip(buckets, allowed, strict=True) if not ok]
            # One stats call per bucket, even when the shown bucket is also a denied one.
            wanted = list(dict.fromkeys([shown, *denied]))
            stats = dict(
                zip(
                    wanted,
                    await asyncio.gather(
                        *(self.limiter.get_window_stats(b.item, *b.identifiers) for b in wanted)
                    ),
                    strict=True,
                )
            )
        except StorageError as exc:
            log.warning(
                "rate limit storage unavailable, request not limited: %s", exc.storage_error
            )
            await self.app(scope, receive, send)
            return

        now = time.time()
        headers = _headers(shown.item, stats[shown], now)
        if denied:
            retry_after = max(_seconds_until(stats[b].reset_time, now) for b in denied)
            await _too_many(scope, receive, send, denied, max(1, retry_after), headers)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *headers]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _key_bucket(self, scope: Scope) -> _Bucket | None:
        token = _bearer_token(scope)
        if token is None:
            return None
        key = hash_key(token)
        route = self._route_of(scope) if self.route_limits else None
        if route is not None and (item := self.route_limits.get(route)) is not None:
            # Braces in a route template would act as a Redis Cluster hash tag and pile
            # every key of that route onto one shard.
            ident = route.replace("{", "<").replace("}", ">")
            return _Bucket(item, ("key", key, ident), "API key", route)
        return _Bucket(self.default_limit, ("key", key), "API key")

    def _route_of(self, scope: Scope) -> str | None:
        """The ``METHOD /template`` of the configured route this request will reach."""
        routes = _routes_of(scope.get("app")) or _routes_of(self.app)
        template = _match_template(routes, scope)
        if template is None:
            return None
        method = scope["method"]
        name = f"{method} {template}"
        # Starlette answers HEAD with the GET route, so a GET limit covers HEAD too.
        if name not in self.route_limits and method == "HEAD":
            return f"GET {template}"
        return name


def _routes_of(app: object) -> Sequence[BaseRoute]:
    routes = getattr(app, "routes", None)
    return routes if isinstance(routes, Sequence) else ()


def _flat(routes: Sequence[BaseRoute]) -> Sequence[Any]:
    """The routes as matched: newer FastAPI keeps an included router as one opaque route,
    and ``iter_route_contexts`` unfolds it into its routes (with their full paths)."""
    unfold = getattr(fastapi.routing, "iter_route_contexts", None)
    return list(unfold(routes)) if unfold is not None else routes


def _match_template(routes: Sequence[BaseRoute], scope: Scope, prefix: str = "") -> str | None:
    for route in _flat(routes):
        match, child_scope = route.matches(scope)
        if match is not Match.FULL:
            continue
        if isinstance(getattr(route, "original_route", route), Mount):
            return _match_template(route.routes, {**scope, **child_scope}, prefix + route.path)
        path = getattr(route, "path", None)
        return prefix + path if isinstance(path, str) else None
    return None


def _route_name(route: str) -> str:
    method, sep, path = route.strip().partition(" ")
    if not sep or not path.strip().startswith("/"):
        raise ValueError(f"route {route!r} must read 'METHOD /path'")
    return f"{method.upper()} {path.strip()}"


def _route_path(scope: Scope) -> str:
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if root_path and path.startswith(root_path):
        return path[len(root_path) :] or "/"
    return path


def _is_limited(path: str) -> bool:
    return path.startswith(LIMITED_PREFIX) and not path.startswith(EXEMPT_PREFIXES)


def _bearer_token(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            token = token.strip()
            return token if scheme.lower() == "bearer" and token else None
    return None


def _client_ip(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def _seconds_until(moment: float, now: float) -> int:
    return max(0, math.ceil(moment - now))


def _headers(item: RateLimitItem, stats: WindowStats, now: float) -> list[tuple[bytes, bytes]]:
    return [
        (b"x-ratelimit-limit", str(item.amount).encode()),
        (b"x-ratelimit-remaining", str(max(0, stats.remaining)).encode()),
        (b"x-ratelimit-reset", str(_seconds_until(stats.reset_time, now)).encode()),
    ]


async def _too_many(
    scope: Scope,
    receive: Receive,
    send: Send,
    denied: list[_Bucket],
    retry_after: int,
    headers: list[tuple[bytes, bytes]],
) -> None:
    detail = "; ".join(b.describe() for b in denied)
    extra = {k.decode(): v.decode() for k, v in headers}
    await rate_limited(detail, retry_after, extra)(scope, receive, send)
