"""Request dependencies: the hub, and the actor behind the bearer key with its scope."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from isthmus.domain.auth import Actor, Scope
from isthmus.errors import Unauthenticated
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
    async def dependency(actor: Annotated[Actor, Depends(get_actor)], hub: HubDep) -> Actor:
        hub.access.require(actor, scope)
        return actor

    return dependency


Reader = Annotated[Actor, Depends(require(Scope.READ))]
Writer = Annotated[Actor, Depends(require(Scope.WRITE))]
Admin = Annotated[Actor, Depends(require(Scope.ADMIN))]
