"""A canary secret goes in through the API and must never come out where it should not.

The server runs as a real process with debug logging, on SQLite and on PostgreSQL. The canary
(and the one that replaces it through PATCH) must appear zero times in the database files, in a
plain ``pg_dump``, in the process's output and in every API response; the audited reveal
returns it exactly once.
"""

from __future__ import annotations

import base64
import secrets
import sqlite3
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from e2e.conftest import GRACEFUL_EXIT, Launcher, Server

pytestmark = pytest.mark.e2e

INTEGRATIONS = "/api/v1/integrations"


def make_canary() -> str:
    return "canary-" + secrets.token_hex(24)


def leak_forms(secret: str) -> list[bytes]:
    """The ways a secret could show up: whole, cut at the edges (what a partial mask or a
    truncated log keeps), hex (a bytea in a dump) and base64 at each alignment."""
    raw = secret.encode()
    forms = [raw, raw[4:-4], raw.hex().encode()]
    for shift in range(3):
        encoded = base64.b64encode(raw[shift:]).rstrip(b"=")
        forms.append(encoded[4:-4])
    return forms


def assert_absent(haystack: bytes, secrets_: Iterable[str], where: str) -> None:
    for secret in secrets_:
        for form in leak_forms(secret):
            assert form not in haystack, f"{secret} leaked into {where} (as {form!r})"


class Recorder:
    """An API client that keeps every response, to search them all afterwards."""

    def __init__(self, server: Server, key: str) -> None:
        self.client = server.client(key)
        self.responses: list[httpx.Response] = []

    def __call__(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        response = self.client.request(method, url, **kwargs)
        self.responses.append(response)
        return response

    def raw(self, response: httpx.Response) -> bytes:
        head = "".join(f"{k}: {v}\n" for k, v in response.headers.items())
        return head.encode() + response.content


def drive_the_api(api: Recorder, canaries: tuple[str, str, str]) -> tuple[str, httpx.Response]:
    """Every route that shows an integration or its traces, around a secret that changes.
    Returns the integration id and the reveal's response."""
    first, second, refused = canaries
    body = {
        "name": "Canary CRM",
        "provider": "api_endpoint",
        "description": "holds a canary",
        "config": {"apiEndpoint": "https://api.example.com/v1/contacts"},
        "credentials": {"apiKey": first},
    }
    created = api("POST", INTEGRATIONS, json=body)
    assert created.status_code == 201, created.text
    iid = created.json()["id"]
    assert created.json()["credentials"] == {"apiKey": "cana..." + first[-4:]}

    assert api("GET", f"{INTEGRATIONS}/{iid}").status_code == 200
    assert api("GET", INTEGRATIONS).status_code == 200
    assert api("GET", INTEGRATIONS, params={"provider": "api_endpoint"}).status_code == 200

    patched = api("PATCH", f"{INTEGRATIONS}/{iid}", json={"credentials": {"apiKey": second}})
    assert patched.status_code == 200, patched.text
    assert patched.json()["credentials"] == {"apiKey": "cana..." + second[-4:]}
    assert api("PATCH", f"{INTEGRATIONS}/{iid}", json={"name": "Canary CRM 2"}).status_code == 200
    assert api("POST", f"{INTEGRATIONS}/{iid}/disable").json()["enabled"] is False
    assert api("POST", f"{INTEGRATIONS}/{iid}/enable").json()["enabled"] is True

    # Refused input carrying a secret must not echo it back, log it, or store it.
    bad_create = {**body, "name": "Refused", "credentials": {"apiKey": refused, "token": refused}}
    assert api("POST", INTEGRATIONS, json=bad_create).status_code == 422
    bad_patch = {"config": {"apiEndpoint": "not a url"}, "credentials": {"apiKey": refused}}
    assert api("PATCH", f"{INTEGRATIONS}/{iid}", json=bad_patch).status_code == 422
    malformed = f'{{"name": "x", "credentials": {{"apiKey": "{refused}"'
    response = api(
        "POST", INTEGRATIONS, content=malformed, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400

    assert api("GET", "/api/v1/audit").status_code == 200
    assert api("GET", "/api/v1/audit", params={"resource": f"integration/{iid}"}).is_success
    assert api("GET", f"{INTEGRATIONS}/providers").status_code == 200
    assert api("GET", "/api/v1/api-keys").status_code == 200

    revealed = api.client.post(f"{INTEGRATIONS}/{iid}/credentials/reveal", json={"field": "apiKey"})
    assert revealed.status_code == 200, revealed.text
    # Traces read after the reveal must not carry it either.
    audit = api("GET", "/api/v1/audit", params={"action": "integration.credentials.reveal"})
    [entry] = audit.json()["data"]
    assert (entry["resourceId"], entry["diff"]) == (iid, {"field": "apiKey"})
    assert api("GET", f"{INTEGRATIONS}/{iid}").status_code == 200
    return iid, revealed


def pg_dumps(database_url: str) -> dict[str, bytes]:
    name = urlsplit(database_url).path.lstrip("/")
    dumps = {}
    for label, extra in (
        ("pg_dump --data-only --inserts", ["--data-only", "--inserts"]),
        ("pg_dump", []),
    ):
        done = subprocess.run(
            ["pg_dump", "--no-owner", *extra, "-d", database_url],
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr.decode()
        assert name in database_url
        dumps[label] = done.stdout
    return dumps


def sqlite_files(database: Path) -> dict[str, bytes]:
    """The database file and its -wal and -shm companions, as they are on disk."""
    found = {p.name: p.read_bytes() for p in sorted(database.parent.glob(database.name + "*"))}
    assert database.name in found
    return found


async def test_canary_secret_never_leaks(launcher: Launcher, tmp_path: Path, db_url: str) -> None:
    home = tmp_path / "data"
    on_sqlite = db_url.startswith("sqlite")
    sqlite_path = Path(db_url.removeprefix("sqlite:///"))
    server = launcher.serve(home=home, database_url=db_url, env={"ISTHMUS_LOG_LEVEL": "debug"})
    canaries = (make_canary(), make_canary(), make_canary())
    first, second, refused = canaries
    admin = server.admin_key()
    api = Recorder(server, admin)

    iid, revealed = drive_the_api(api, canaries)

    # The audited reveal is the one place the current secret comes out, exactly once.
    assert revealed.json() == {"field": "apiKey", "value": second}
    assert api.raw(revealed).count(second.encode()) == 1
    assert_absent(api.raw(revealed), [first, refused], "the reveal")

    for response in api.responses:
        where = f"{response.request.method} {response.request.url} -> {response.status_code}"
        assert_absent(api.raw(response), canaries, where)

    def check_storage(moment: str) -> None:
        if on_sqlite:
            files = sqlite_files(sqlite_path)
            everything = b"".join(files.values())
            # The files do hold the integration (control), just never its secret.
            assert b"Canary CRM 2" in everything
            for name, content in files.items():
                assert_absent(content, canaries, f"{name} ({moment})")
        else:
            for label, dump in pg_dumps(db_url).items():
                assert b"Canary CRM 2" in dump and b"secrets" in dump, label
                assert_absent(dump, canaries, f"{label} ({moment})")

    check_storage("server running")
    output = server.output()
    assert b"DEBUG" in output and iid.encode() in output  # debug logging really ran
    assert_absent(output, canaries, "the server's output (running)")

    assert server.stop() in GRACEFUL_EXIT, server.tail()
    check_storage("server stopped")
    assert_absent(server.output(), canaries, "the server's output (stopped)")
    # The admin key itself: printed once at the first start, never logged with the requests.
    assert server.output().count(admin.encode()) == 1
    assert_absent((home / "master.keys").read_bytes(), canaries, "master.keys")

    if on_sqlite:
        # The secret row exists (sealed), so the absence above is not for want of a write.
        with sqlite3.connect(sqlite_path) as conn:
            rows = conn.execute(
                "SELECT field, key_id, length(ciphertext) FROM secrets WHERE owner = ?",
                (f"integration:{iid}",),
            ).fetchall()
        assert [(field, n) for field, _, n in rows] == [("apiKey", len(second) + 16)]
