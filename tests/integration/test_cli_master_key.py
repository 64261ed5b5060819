"""``isthmus master-key rotate``: every secret re-encrypted under a new key, the old key dropped,
and every secret still readable after a restart, with the key file and with
``ISTHMUS_MASTER_KEYS``, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
import stat
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from cli_support import FreshApp, cli_env, failed, ok, run_cli, run_many

from isthmus.config import Settings, load_settings
from isthmus.hub import Hub
from isthmus.services.access import IssuedKey
from isthmus.store import migrate
from isthmus.store.tables import secrets
from isthmus.vault import KEY_FILE_NAME, generate_master_key, parse_master_keys

#: They start the real `isthmus` command: `-m "not e2e"` leaves them out of a quick run.
pytestmark = pytest.mark.e2e

INTEGRATIONS = "/api/v1/integrations"
ENDPOINT = "https://api.example.com/v1/contacts"

#: Three integrations, five secrets, each of its own kind of auth.
SEEDS: dict[str, tuple[dict[str, Any], dict[str, str]]] = {
    "Bearer": ({"type": "bearer"}, {"apiKey": "sk_live_bearer_0123456789abcdef"}),
    "Basic": ({"type": "basic"}, {"username": "bob", "password": "pa55word-of-some-length"}),
    "OAuth": (
        {"type": "oauth2_client_credentials", "tokenUrl": "https://auth.example.com/token"},
        {"clientId": "client-123", "clientSecret": "client-secret-0123456789"},
    ),
}
SECRET_COUNT = sum(len(credentials) for _, credentials in SEEDS.values())


async def seed(api: httpx.AsyncClient) -> dict[tuple[str, str], str]:
    """The integrations above; returns (integration id, field) -> value in clear."""
    stored: dict[tuple[str, str], str] = {}
    for name, (auth, credentials) in SEEDS.items():
        response = await api.post(
            INTEGRATIONS,
            json={
                "name": name,
                "provider": "api_endpoint",
                "config": {"apiEndpoint": ENDPOINT, "auth": auth},
                "credentials": credentials,
            },
        )
        assert response.status_code == 201, response.text
        for field, value in credentials.items():
            stored[(response.json()["id"], field)] = value
    return stored


async def reveal_all(api: httpx.AsyncClient, expected: dict[tuple[str, str], str]) -> None:
    for (integration_id, field), value in expected.items():
        response = await api.post(
            f"{INTEGRATIONS}/{integration_id}/credentials/reveal", json={"field": field}
        )
        assert response.status_code == 200, (integration_id, field, response.text)
        assert response.json()["value"] == value
        shown = await api.get(f"{INTEGRATIONS}/{integration_id}")
        assert shown.json()["credentialErrors"] == {}


async def key_ids_in_store(settings: Settings) -> set[str]:
    hub = Hub.build(settings)
    try:
        async with hub.store.read() as conn:
            return {r[0] for r in await conn.execute(sa.select(secrets.c.key_id).distinct())}
    finally:
        await hub.close()


def status_lines(env: dict[str, str]) -> dict[str, str]:
    """``master-key status`` as key id -> the rest of its line."""
    lines = ok(run_cli(["master-key", "status"], env)).splitlines()
    return dict(line.split("\t", 1) for line in lines)


async def rotation_audit(api: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await api.get("/api/v1/audit", params={"action": "master_key.rotate"})
    assert response.status_code == 200
    entries: list[dict[str, Any]] = response.json()["data"]
    return entries


async def test_rotate_with_the_key_file_then_prune(
    settings: Settings, api: httpx.AsyncClient, admin_key: IssuedKey
) -> None:
    env = cli_env(settings)
    key_file = settings.home / KEY_FILE_NAME
    stored = await seed(api)
    [old] = parse_master_keys(key_file.read_text())
    assert status_lines(env) == {old.id: f"{SECRET_COUNT} secrets  (newest: encrypts)"}

    rotated = run_cli(["master-key", "rotate"], env)
    out = ok(rotated)
    [new] = [k for k in parse_master_keys(key_file.read_text()) if k.id != old.id]
    # Progress on stderr, from nothing done to all done.
    progress = re.findall(r"re-encrypting secrets: (\d+)/(\d+)", rotated.stderr)
    assert progress[0] == ("0", str(SECRET_COUNT))
    assert progress[-1] == (str(SECRET_COUNT), str(SECRET_COUNT))
    assert f"{SECRET_COUNT} secrets now encrypted with master key {new.id}." in out
    assert f"No stored secret uses {old.id} any more" in out
    assert "isthmus master-key prune" in out
    assert [k.id for k in parse_master_keys(key_file.read_text())] == [old.id, new.id]
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert await key_ids_in_store(settings) == {new.id}

    async with FreshApp(settings, admin_key.secret) as restarted:
        await reveal_all(restarted, stored)
        [entry] = await rotation_audit(restarted)
        assert entry["resourceId"] == new.id
        assert entry["diff"] == {"toKey": new.id, "reencrypted": SECRET_COUNT}
    assert status_lines(env) == {
        old.id: "0 secrets",
        new.id: f"{SECRET_COUNT} secrets  (newest: encrypts)",
    }

    assert ok(run_cli(["master-key", "prune"], env)).strip() == f"removed {old.id}"
    remaining = key_file.read_text()
    assert old.id not in remaining and old.encode().split(":")[1] not in remaining
    assert [k.id for k in parse_master_keys(remaining)] == [new.id]
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

    async with FreshApp(settings, admin_key.secret) as restarted:
        await reveal_all(restarted, stored)
    assert ok(run_cli(["master-key", "prune"], env)).strip() == "no unused old key to remove"


async def test_rotate_with_keys_from_the_environment(db_url: str, tmp_path: Any) -> None:
    k1_out, k2_out = run_many(
        [(["master-key", "generate"], cli_env()), (["master-key", "generate"], cli_env())]
    )
    k1, k2 = ok(k1_out).strip(), ok(k2_out).strip()
    [key1], [key2] = parse_master_keys(k1), parse_master_keys(k2)
    assert key1.id != key2.id and key1.key != key2.key
    home = tmp_path / "home"

    def settings_with(keys: str) -> Settings:
        return load_settings(home=home, database_url=db_url, master_keys=keys)

    first = settings_with(k1)
    hub = Hub.build(first)
    try:
        await migrate.upgrade(hub.store)
        issued = await hub.access.bootstrap()
        assert issued is not None
    finally:
        await hub.close()
    async with FreshApp(first, issued.secret) as api:
        stored = await seed(api)

    # Control: with only the new key, nothing opens yet.
    async with FreshApp(settings_with(k2), issued.secret) as api:
        integration_id, field = next(iter(stored))
        refused = await api.post(
            f"{INTEGRATIONS}/{integration_id}/credentials/reveal", json={"field": field}
        )
        assert refused.status_code == 500
        assert f"master key {key1.id!r}, which is not configured" in refused.json()["detail"]

    both = cli_env(settings_with(f"{k1},{k2}"))
    out = ok(run_cli(["master-key", "rotate"], both))
    assert f"{SECRET_COUNT} secrets now encrypted with master key {key2.id}." in out
    assert f"No stored secret uses {key1.id} any more" in out
    assert "delete them from ISTHMUS_MASTER_KEYS" in out
    assert await key_ids_in_store(first) == {key2.id}

    only_new = settings_with(k2)
    async with FreshApp(only_new, issued.secret) as api:
        await reveal_all(api, stored)
        [entry] = await rotation_audit(api)
        assert entry["diff"] == {"toKey": key2.id, "reencrypted": SECRET_COUNT}
    assert status_lines(cli_env(only_new)) == {
        key2.id: f"{SECRET_COUNT} secrets  (newest: encrypts)"
    }
    # Keys from the environment are pruned there, not by the command; no key file is made.
    assert "remove old keys there instead" in failed(run_cli(["master-key", "prune"], both))
    assert not (home / KEY_FILE_NAME).exists()


def test_rotate_with_one_environment_key_says_to_add_one(tmp_path: Any) -> None:
    key = generate_master_key().encode()
    env = cli_env(ISTHMUS_HOME=str(tmp_path / "home"), ISTHMUS_MASTER_KEYS=key)
    result = run_cli(["master-key", "rotate"], env)
    assert result.returncode == 1
    assert "holds one key" in result.stderr and "master-key generate" in result.stderr
    assert "Traceback" not in result.stderr
