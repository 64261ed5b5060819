"""Security guarantees of the credential vault, seen through the API.

Here the test plays an attacker with write access to the database (but not to the master
key): it moves sealed values between rows with SQL. Associated data binds each ciphertext to
its tenant, row and field, so a moved value must refuse to open, with a clear error that
names the credential and leaks nothing else.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from isthmus.errors import DecryptionFailed
from isthmus.hub import Hub
from isthmus.store.tables import secrets
from isthmus.vault import KEY_FILE_NAME, KeyFile, Vault, generate_master_key

INTEGRATIONS = "/api/v1/integrations"
LEAKS = ("Traceback", 'File "', "site-packages", "InvalidTag", "cryptography", "sqlalchemy")


async def _create(api: httpx.AsyncClient, name: str, credentials: dict[str, str]) -> str:
    auth = {"type": "basic"} if "password" in credentials else {"type": "bearer"}
    response = await api.post(
        INTEGRATIONS,
        json={
            "name": name,
            "provider": "api_endpoint",
            "config": {"apiEndpoint": "https://api.example.com/v1/contacts", "auth": auth},
            "credentials": credentials,
        },
    )
    assert response.status_code == 201, response.text
    integration_id: str = response.json()["id"]
    return integration_id


async def _copy_sealed(hub: Hub, source: tuple[str, str], target: tuple[str, str]) -> None:
    """Overwrite the sealed value of (integration, field) ``target`` with ``source``'s."""
    (src_id, src_field), (dst_id, dst_field) = source, target
    async with hub.store.transaction() as conn:
        row = (
            await conn.execute(
                sa.select(secrets.c.key_id, secrets.c.nonce, secrets.c.ciphertext).where(
                    secrets.c.owner == f"integration:{src_id}", secrets.c.field == src_field
                )
            )
        ).one()
        done = await conn.execute(
            secrets.update()
            .where(secrets.c.owner == f"integration:{dst_id}", secrets.c.field == dst_field)
            .values(key_id=row.key_id, nonce=row.nonce, ciphertext=row.ciphertext)
        )
        assert done.rowcount == 1


async def _reveal(api: httpx.AsyncClient, integration_id: str, field: str) -> httpx.Response:
    return await api.post(
        f"{INTEGRATIONS}/{integration_id}/credentials/reveal", json={"field": field}
    )


def _assert_refused_as_foreign(response: httpx.Response, field: str) -> None:
    assert response.status_code >= 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == response.status_code
    assert problem["title"] == "Credential cannot be decrypted"
    assert repr(field) in problem["detail"]
    assert "belongs to another record" in problem["detail"]
    for leak in LEAKS:
        assert leak not in response.text


async def test_ciphertext_copied_to_another_integration_does_not_decrypt(
    api: httpx.AsyncClient, hub: Hub
) -> None:
    secret_a = "sk_live_AAAAAAAAAAAAAAAAAAAAAAAA_a"
    secret_b = "sk_live_BBBBBBBBBBBBBBBBBBBBBBBB_b"
    a = await _create(api, "A", {"apiKey": secret_a})
    b = await _create(api, "B", {"apiKey": secret_b})

    await _copy_sealed(hub, (a, "apiKey"), (b, "apiKey"))

    refused = await _reveal(api, b, "apiKey")
    _assert_refused_as_foreign(refused, "apiKey")
    assert secret_a not in refused.text and secret_b not in refused.text

    shown = await api.get(f"{INTEGRATIONS}/{b}")
    assert shown.status_code == 200
    view = shown.json()
    assert view["credentials"] == {"apiKey": "********"}
    assert list(view["credentialErrors"]) == ["apiKey"]
    assert "belongs to another record" in view["credentialErrors"]["apiKey"]
    listed = {i["id"]: i for i in (await api.get(INTEGRATIONS)).json()["data"]}
    assert listed[b]["credentialErrors"].keys() == {"apiKey"}
    assert listed[a]["credentialErrors"] == {}

    # A is untouched: its own value still opens, and the failed attempt was not audited as a
    # reveal.
    assert (await _reveal(api, a, "apiKey")).json() == {"field": "apiKey", "value": secret_a}
    audit = await api.get("/api/v1/audit", params={"action": "integration.credentials.reveal"})
    assert [e["resourceId"] for e in audit.json()["data"]] == [a]


async def test_ciphertext_moved_to_another_field_of_the_same_row_does_not_decrypt(
    api: httpx.AsyncClient, hub: Hub
) -> None:
    c = await _create(api, "C", {"username": "alice", "password": "hunter2-but-longer"})

    await _copy_sealed(hub, (c, "password"), (c, "username"))

    _assert_refused_as_foreign(await _reveal(api, c, "username"), "username")
    assert (await _reveal(api, c, "password")).json()["value"] == "hunter2-but-longer"
    view = (await api.get(f"{INTEGRATIONS}/{c}")).json()
    assert view["credentialErrors"].keys() == {"username"}
    assert view["credentials"] == {"password": "hunt...nger", "username": "********"}


async def test_an_undecryptable_credential_can_be_replaced(
    api: httpx.AsyncClient, hub: Hub
) -> None:
    """The way out of the error: set the credential anew (or change other fields meanwhile)."""
    a = await _create(api, "A", {"apiKey": "sk_live_AAAAAAAAAAAAAAAAAAAAAAAA_a"})
    b = await _create(api, "B", {"apiKey": "sk_live_BBBBBBBBBBBBBBBBBBBBBBBB_b"})
    await _copy_sealed(hub, (a, "apiKey"), (b, "apiKey"))

    renamed = await api.patch(
        f"{INTEGRATIONS}/{b}",
        json={"name": "B2", "config": {"apiEndpoint": "https://api.example.com/v2/contacts"}},
    )
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["credentialErrors"].keys() == {"apiKey"}

    fresh = "sk_live_CCCCCCCCCCCCCCCCCCCCCCCC_c"
    fixed = await api.patch(f"{INTEGRATIONS}/{b}", json={"credentials": {"apiKey": fresh}})
    assert fixed.status_code == 200, fixed.text
    assert fixed.json()["credentialErrors"] == {}
    assert (await _reveal(api, b, "apiKey")).json()["value"] == fresh
    audit = await api.get(
        "/api/v1/audit",
        params={"action": "integration.credentials.update", "resource": f"integration/{b}"},
    )
    [entry] = audit.json()["data"]
    assert entry["diff"] == {"apiKey": {"from": "********", "to": "sk_l...CC_c"}}


def test_a_vault_on_the_key_file_picks_up_a_key_added_since(tmp_path: Path) -> None:
    """What lets a running server read what ``master-key rotate`` re-encrypted beside it."""
    old, new = generate_master_key(), generate_master_key()
    key_file = KeyFile(tmp_path)
    key_file.write([old])
    running = Vault(key_file.load(), reload=key_file.load)
    by_rotate = Vault([old, new]).seal("s3cret", "t|o|f")

    key_file.write([old, new])
    assert running.open(by_rotate, "t|o|f") == "s3cret"
    assert running.newest_key_id == new.id  # and from now on it seals with the new key

    # A key the file does not hold is still refused, and a vanished file costs no key held.
    stranger = Vault([generate_master_key()]).seal("x", "t|o|f")
    key_file.path.unlink()
    with pytest.raises(DecryptionFailed, match="not configured"):
        running.open(stranger, "t|o|f")
    assert running.open(by_rotate, "t|o|f") == "s3cret"


def test_processes_creating_the_key_file_at_once_end_with_one_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes starting on a new data dir both find no key file; the one that writes
    second must not replace the first one's key (secrets sealed under it would be lost)."""
    key_file = KeyFile(tmp_path)
    first = key_file.load_or_create()
    with monkeypatch.context() as m:
        m.setattr(Path, "exists", lambda self: False)  # the second looked before the first wrote
        second = key_file.load_or_create()
    assert second == first
    assert key_file.load() == first
    assert [p.name for p in tmp_path.iterdir()] == [KEY_FILE_NAME]  # no temporary file left
