"""What the ``isthmus`` commands share: the settings, running a command on a hub, errors as
messages, the CLI's actor in a tenant."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from functools import wraps
from typing import Annotated, Any, TypeVar

import typer

from isthmus.config import Settings
from isthmus.domain.auth import Actor
from isthmus.errors import InvalidInput, IsthmusError, NotFound
from isthmus.hub import Hub
from isthmus.store import migrate as migrations

T = TypeVar("T")
TenantOpt = Annotated[str, typer.Option("--tenant", "-t", help="Tenant name.")]


def settings_of(ctx: typer.Context) -> Settings:
    settings: Settings = ctx.find_root().obj
    return settings


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def command(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async command; isthmus errors become a message on stderr and exit code 1."""

    @wraps(fn)
    def run(*args: Any, **kwargs: Any) -> None:
        try:
            asyncio.run(fn(*args, **kwargs))
        except IsthmusError as exc:
            raise fail(describe(exc)) from None

    return run


def describe(exc: IsthmusError) -> str:
    """The message, then one line per field error it does not already say."""
    lines = [exc.message]
    if isinstance(exc, InvalidInput):
        lines += [
            f"  {e.field}: {e.message}"
            for e in exc.errors
            if f"{e.field}: {e.message}" not in exc.message
        ]
    return "\n".join(lines)


async def with_hub(settings: Settings, work: Callable[[Hub], Awaitable[T]]) -> T:
    hub = Hub.build(settings)
    try:
        await migrations.upgrade(hub.store)
        return await work(hub)
    finally:
        await hub.close()


async def cli_actor(hub: Hub, tenant: str) -> Actor:
    """The CLI acting in the tenant named ``tenant``."""
    try:
        found = await hub.access.tenant_named(tenant)
    except NotFound:
        hint = " (`isthmus serve` creates it on first start)" if tenant == "default" else ""
        raise NotFound(
            f"tenant {tenant!r} does not exist{hint}; `isthmus tenants create {tenant}` makes it"
        ) from None
    return Actor(found.id, "cli")
