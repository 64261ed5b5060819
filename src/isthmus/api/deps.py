"""Request dependencies: the hub, and the actor behind the bearer key with its scope."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator
from contextlib import suppress
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from isthmus.api.strict_query import refuse_unknown_query
from isthmus.domain.auth import Actor, Scope
from isthmus.domain.pagination import MAX_LIMIT
from isthmus.errors import FieldError, InvalidInput, Unauthenticated
from isthmus.hub import Hub

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="apiKey",
    description="An isthmus API key: `isk_...`",
)


def get_hub(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub


HubDep = Annotated[Hub, Depends(get_hub)]


async def get_actor(
    request: Request,
    hub: HubDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Actor:
    if credentials is None:
        header = request.headers.get("authorization")
        raise Unauthenticated(
            "missing API key: send 'Authorization: Bearer isk_...'"
            if not header
            else "the Authorization header must read 'Bearer isk_...'"
        )
    client_ip = request.client.host if request.client else None
    return await hub.access.authenticate(credentials.credentials, client_ip)


def require(scope: Scope) -> Callable[..., Awaitable[Actor]]:
    async def dependency(
        request: Request, actor: Annotated[Actor, Depends(get_actor)], hub: HubDep
    ) -> Actor:
        hub.access.require(actor, scope)
        await refuse_nul(request)
        refuse_unknown_query(request)
        return actor

    return dependency


_NUL_MESSAGE = "must not contain NUL (U+0000) characters"


async def refuse_nul(request: Request) -> None:
    """PostgreSQL text cannot hold U+0000 (SQLite can): refuse it in any path parameter,
    query parameter or JSON body string, on every store alike, naming where it is."""
    fields = [name for name, value in request.path_params.items() if "\x00" in str(value)]
    fields += [name for name, value in request.query_params.multi_items() if "\x00" in value]
    body = await request.body()
    if b"\\u0000" in body:  # only then can the parsed JSON hold a NUL
        with suppress(ValueError):  # not JSON: the body's own validation says so
            fields += _nul_paths(json.loads(body), "")
    if fields:
        fields = list(dict.fromkeys(fields))
        raise InvalidInput(
            f"{', '.join(fields)}: {_NUL_MESSAGE}", [FieldError(f, _NUL_MESSAGE) for f in fields]
        )


def _nul_paths(value: Any, path: str) -> Iterator[str]:
    if isinstance(value, str):
        if "\x00" in value:
            yield path or "body"
    elif isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            yield from [where] if "\x00" in key else _nul_paths(item, where)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _nul_paths(item, f"{path}.{index}" if path else str(index))


def utc_instant(field: str, value: datetime | None) -> datetime | None:
    """A time given by a client, in UTC; one without a zone, or beyond what UTC can
    hold (year 1 to 9999), is the client's error, named by ``field``."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise InvalidInput.field(field, "needs a time zone, e.g. 2026-01-31T12:00:00Z")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise InvalidInput.field(field, "is out of range") from None


Reader = Annotated[Actor, Depends(require(Scope.READ))]
Writer = Annotated[Actor, Depends(require(Scope.WRITE))]
Admin = Annotated[Actor, Depends(require(Scope.ADMIN))]

# Every list route pages the same way (its default limit beside the parameter).
CursorQ = Annotated[
    str | None, Query(description="The `nextCursor` of the page before; none for the first.")
]
LimitQ = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"Items per page, 1 to {MAX_LIMIT}.")]
