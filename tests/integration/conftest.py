"""Fixtures of the sync tests (``test_sync``, ``test_sync_control``); a module that defines
its own ``clock`` or ``worker`` uses its own."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sync_support import Clock, HubSpotLike, person

from isthmus.hub import Hub
from isthmus.store.sync_runs import SYNC_KIND
from isthmus.worker import Worker


@pytest.fixture
async def crm() -> AsyncIterator[HubSpotLike]:
    server = HubSpotLike([person(n) for n in range(25)])
    await server.start()
    try:
        yield server
    finally:
        server.release.set()
        await server.stop()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def worker(local_hub: Hub, clock: Clock) -> Worker:
    worker = Worker(local_hub.store, clock=clock)
    worker.register(SYNC_KIND, local_hub.sync)
    return worker
