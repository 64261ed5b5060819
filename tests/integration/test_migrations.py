"""The migrations build exactly the tables the code declares, on both databases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection

from isthmus.api.app import create_app
from isthmus.config import load_settings
from isthmus.hub import Hub
from isthmus.store import migrate
from isthmus.store.tables import metadata


async def test_migrated_schema_matches_the_tables(hub: Hub) -> None:
    def diff(conn: Connection) -> list[Any]:
        return list(compare_metadata(MigrationContext.configure(conn), metadata))

    async with hub.store.engine.connect() as conn:
        assert await conn.run_sync(diff) == []
    assert await migrate.is_current(hub.store)


async def test_upgrade_twice_is_harmless(hub: Hub) -> None:
    await migrate.upgrade(hub.store)
    assert await migrate.current_revision(hub.store) == migrate.head_revision()


async def test_readyz_says_not_ready_until_migrated(fresh_db_url: str, tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path / "home", database_url=fresh_db_url)
    hub = Hub.build(settings)
    try:
        app = create_app(settings, hub)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            before = await client.get("/readyz")
            assert before.status_code == 503
            assert before.json()["checks"] == {"store": "ok", "migrations": "pending"}
            await migrate.upgrade(hub.store)
            after = await client.get("/readyz")
            assert after.status_code == 200
            assert after.json()["checks"] == {"store": "ok", "migrations": "current"}
    finally:
        await hub.close()


async def test_readyz_says_not_ready_when_the_store_is_gone(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path, database_url="postgresql://nobody@127.0.0.1:1/none")
    hub = Hub.build(settings)
    try:
        transport = httpx.ASGITransport(app=create_app(settings, hub))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            ready = await client.get("/readyz")
            live = await client.get("/healthz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["store"] == "unreachable"
        assert live.status_code == 200
    finally:
        await hub.close()
