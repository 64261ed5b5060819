"""A contact sync run by a real ``isthmus serve`` (SQLite, in-process workers) against a
local contacts API: the handler, the worker and the routes wired together as shipped."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from e2e.conftest import Launcher

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
    headers = {"Authorization": f"Bearer {server.admin_key()}"}
    async with httpx.AsyncClient(
        base_url=server.url, headers=headers, trust_env=False, timeout=60
    ) as api:
        created = await api.post(
            "/api/v1/integrations",
            json={
                "name": "CRM",
                "provider": "api_endpoint",
                "config": {
                    "apiEndpoint": f"http://127.0.0.1:{contacts_api.port}/contacts",
                    "dataSelector": "results",
                    "pagination": {
                        "type": "cursor",
                        "cursorPath": "paging.next.after",
                        "cursorParam": "after",
                    },
                    "fieldMapping": {
                        "email": "properties.email",
                        "firstName": "properties.firstname",
                    },
                },
                "credentials": {"apiKey": TOKEN},
            },
        )
        assert created.status_code == 201, created.text
        integration_id = created.json()["id"]

        run = await api.post(
            f"/api/v1/integrations/{integration_id}/sync", params={"wait": "true", "timeout": 30}
        )

        assert run.status_code == 200, run.text + server.tail(60)
        assert (run.json()["status"], run.json()["created"]) == ("succeeded", 50)
        listed = (await api.get("/api/v1/contacts", params={"limit": 100})).json()["data"]
        assert len(listed) == 50
        assert {c["firstName"] for c in listed} == {f"F{n}" for n in range(50)}
