"""Alembic migrations, run in process against the store's own engine."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text

from isthmus.store.db import Store

MIGRATIONS = Path(__file__).parent / "migrations"
#: The advisory lock that serializes migrations on PostgreSQL (any constant of our own).
_LOCK_KEY = 0x15_7A_05


def _config(conn: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if conn is not None:
        cfg.attributes["connection"] = conn
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(_config()).get_current_head()


async def upgrade(store: Store) -> None:
    """Apply every pending migration."""

    def run(conn: Connection) -> None:
        command.upgrade(_config(conn), "head")

    async with store.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Processes started together on one database: one migrates, the others wait for
            # its commit and find nothing left to do. (SQLite's BEGIN IMMEDIATE does the same.)
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
        await conn.run_sync(run)


async def current_revision(store: Store) -> str | None:
    def read(conn: Connection) -> str | None:
        return MigrationContext.configure(conn).get_current_revision()

    async with store.engine.connect() as conn:
        return await conn.run_sync(read)


async def is_current(store: Store) -> bool:
    return await current_revision(store) == head_revision()
