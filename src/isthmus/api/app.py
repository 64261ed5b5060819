"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from isthmus import __version__
from isthmus.api import problems
from isthmus.api.bodylimit import BodyLimitMiddleware
from isthmus.api.ratelimit import RateLimitMiddleware
from isthmus.api.routes import (
    api_keys,
    audit,
    connection_checks,
    contacts,
    deliveries,
    event_types,
    events,
    health,
    integration_activity,
    integrations,
    oauth,
    polling,
    sync_runs,
    webhooks,
)
from isthmus.config import Settings
from isthmus.hub import Hub

DESCRIPTION = """
The isthmus REST API. Authenticate with an API key: `Authorization: Bearer isk_...`
(press **Authorize**). Errors are `application/problem+json` documents (RFC 9457).
Lists are cursor paginated: pass the `nextCursor` of one page as `cursor` for the next.
"""


def create_app(settings: Settings, hub: Hub | None = None) -> FastAPI:
    """Build the app around a hub; a hub built here is closed when the app shuts down."""
    owned = hub is None
    the_hub = hub or Hub.build(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if owned:
            await the_hub.close()

    # Swagger UI and ReDoc assets are served by the hub itself: no CDN, works offline.
    app = FastAPIOffline(
        static_url="/api/docs/static",
        title="isthmus",
        version=__version__,
        description=DESCRIPTION,
        docs_url="/api/docs",
        redoc_url="/api/redoc",
        openapi_url="/openapi.json",
        lifespan=lifespan,
        swagger_ui_parameters={"persistAuthorization": True, "tryItOutEnabled": True},
    )
    app.state.hub = the_hub
    problems.install(app)
    # deliveries before webhooks: /webhooks/deliveries/{id} is not /webhooks/{id}.
    for module in (
        health,
        connection_checks,
        integration_activity,
        polling,
        integrations,
        api_keys,
        audit,
        event_types,
        events,
        deliveries,
        webhooks,
        contacts,
        oauth,
        sync_runs,
    ):
        app.include_router(module.router)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    # Outermost, so every answer (413s included) carries the rate-limit headers.
    app.add_middleware(
        RateLimitMiddleware,
        storage=the_hub.limiter_storage,
        default_limit=settings.rate_limit,
        ip_limit=settings.rate_limit_ip,
        route_limits=settings.rate_limit_routes,
    )
    return app
