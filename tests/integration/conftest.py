"""Fixtures of the integration tests that call servers on this machine."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from isthmus.api.app import create_app
from isthmus.config import Settings
from isthmus.hub import Hub
from isthmus.services.access import IssuedKey


@pytest.fixture
async def local_hub(hub: Hub, settings: Settings) -> AsyncIterator[Hub]:
    """A second hub over the (already migrated) store of ``hub``, allowed to reach loopback
    (``hub`` itself keeps the default allowlist, which refuses it)."""
    built = Hub.build(settings.model_copy(update={"outbound_allowlist": ["127.0.0.0/8"]}))
    try:
        yield built
    finally:
        await built.close()


@pytest.fixture
async def local_api(
    local_hub: Hub, settings: Settings, admin_key: IssuedKey
) -> AsyncIterator[httpx.AsyncClient]:
    """The API of ``local_hub``, as the admin."""
    transport = httpx.ASGITransport(app=create_app(settings, local_hub), client=("127.0.0.1", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        client.headers["Authorization"] = f"Bearer {admin_key.secret}"
        yield client
