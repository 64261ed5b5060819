"""A contact sync run by a real ``isthmus serve`` (SQLite, in-process workers) against a
local contacts API: the handler, the worker and the routes wired together as shipped."""

from __future__ import annotations

import asyncio
import re
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from e2e.conftest import Launcher, clean_env, isthmus_executable

pytestmark = pytest.mark.e2e

TOKEN = "pat-na1-e2e-0000-1111-2222"


class ContactsAPI:
    def __init__(self, count: int) -> None:
        self.people = [
            {"id": str(n), "properties": {"email": f"p{n}@example.com", "firstname": f"F{n}"}}
            for n in range(count)
        ]
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/contacts", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]

    async def _handle(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({"message": "bad token"}, status=401)
        start = int(request.query.get("after", "0"))
        body: dict[str, Any] = {"results": self.people[start : start + 20]}
        if start + 20 < len(self.people):
            body["paging"] = {"next": {"after": str(start + 20)}}
        return web.json_response(body)


@pytest.fixture
async def contacts_api() -> AsyncIterator[ContactsAPI]:
    server = ContactsAPI(50)
    await server.start()
    try:
        yield server
    finally:
        assert server._runner is not None
        await server._runner.cleanup()


async def test_serve_runs_a_sync_to_its_end(
    launcher: Launcher, tmp_path: Path, contacts_api: ContactsAPI
) -> None:
    server = launcher.serve(
        home=tmp_path / "home", env={"ISTHMUS_OUTBOUND_ALLOWLIST": "127.0.0.0/8"}
    )
    async with _api(server.url, server.admin_key()) as api:
        integration_id = await _create(api, "CRM", contacts_api.port, TOKEN)

        run = await api.post(
            f"/api/v1/integrations/{integration_id}/sync", params={"wait": "true", "timeout": 30}
        )

        assert run.status_code == 200, run.text + server.tail(60)
        assert (run.json()["status"], run.json()["created"]) == ("succeeded", 50)
        listed = (await api.get("/api/v1/contacts", params={"limit": 100})).json()["data"]
        assert len(listed) == 50
        assert {c["firstName"] for c in listed} == {f"F{n}" for n in range(50)}


async def test_the_sync_command_follows_a_run_to_its_end(
    launcher: Launcher, tmp_path: Path, contacts_api: ContactsAPI
) -> None:
    home = tmp_path / "home"
    server = launcher.serve(home=home, env={"ISTHMUS_OUTBOUND_ALLOWLIST": "127.0.0.0/8"})
    env = clean_env(ISTHMUS_HOME=str(home))
    async with _api(server.url, server.admin_key()) as api:
        good = await _create(api, "CRM", contacts_api.port, TOKEN)
        await _create(api, "Stale token", contacts_api.port, "pat-na1-expired")

        # In a thread: this test's event loop serves the contacts API meanwhile.
        done = await asyncio.to_thread(_cli, ["sync", "CRM"], env)

        assert done.returncode == 0, done.stdout + done.stderr + server.tail(40)
        lines = done.stdout.splitlines()
        assert lines[0].startswith("queued run_"), lines
        assert lines[0].endswith(f" of 'CRM' ({good})"), lines
        assert re.fullmatch(
            r"succeeded in [\d.]+ s: fetched 50( \([\d,]+/s\))?, created 50, updated 0, "
            r"unchanged 0, skipped 0",
            lines[-1],
        ), lines
        [run] = (await api.get(f"/api/v1/integrations/{good}/runs")).json()["data"]
        assert (run["trigger"], run["status"], run["id"]) == (
            "manual",
            "succeeded",
            lines[0].split()[1],
        )

        refused = await asyncio.to_thread(_cli, ["sync", "Stale token"], env)

        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert re.match(
            r"failed in [\d.]+ s: fetched 0, created 0", refused.stdout.splitlines()[-1]
        )
        [reason] = refused.stderr.splitlines()
        assert reason.startswith("error: run run_") and "answered 401" in reason, reason

    # The server's log says how each run ended.
    logged = server.output().decode(errors="replace")
    assert re.search(
        rf"INFO isthmus\.polling sync run {run['id']} of CRM \({good}\) succeeded in "
        r"[\d.]+ s: fetched 50, created 50, updated 0, unchanged 0, skipped 0",
        logged,
    ), server.tail(20)
    stale = reason.split()[2]
    assert re.search(
        rf"sync run {stale} of Stale token \(int_\w+\) failed in [\d.]+ s: fetched 0", logged
    )


def _api(url: str, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, trust_env=False, timeout=60
    )


async def _create(api: httpx.AsyncClient, name: str, port: int, token: str) -> str:
    """An integration reading the local contacts API with ``token``; its id."""
    created = await api.post(
        "/api/v1/integrations",
        json={
            "name": name,
            "provider": "api_endpoint",
            "config": {
                "apiEndpoint": f"http://127.0.0.1:{port}/contacts",
                "dataSelector": "results",
                "pagination": {
                    "type": "cursor",
                    "cursorPath": "paging.next.after",
                    "cursorParam": "after",
                },
                "fieldMapping": {"email": "properties.email", "firstName": "properties.firstname"},
            },
            "credentials": {"apiKey": token},
        },
    )
    assert created.status_code == 201, created.text
    integration_id: str = created.json()["id"]
    return integration_id


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [isthmus_executable(), *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
