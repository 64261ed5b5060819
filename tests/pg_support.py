"""Scratch PostgreSQL databases for tests, from ``ISTHMUS_TEST_DATABASE_URL``: skipped with
the reason shown when it is not set, failed under CI (``CI=true``), which must run them."""

from __future__ import annotations

import os
import secrets as _secrets

import asyncpg
import pytest


def _need(env: str, example: str) -> str:
    url = os.environ.get(env)
    if not url:
        reason = f"{env} is not set (e.g. {example})"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI must run these tests")
        pytest.skip(reason)
    return url


def postgres_admin_url() -> str:
    """``ISTHMUS_TEST_DATABASE_URL``: a PostgreSQL database the tests may create others from."""
    return _need("ISTHMUS_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


async def create_postgres_database() -> tuple[str, str]:
    """A fresh, empty database for one test: (its URL, its name)."""
    admin = postgres_admin_url()
    name = f"isthmus_t_{_secrets.token_hex(6)}"
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return admin.rsplit("/", 1)[0] + f"/{name}", name


async def drop_postgres_database(name: str) -> None:
    conn = await asyncpg.connect(postgres_admin_url())
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
