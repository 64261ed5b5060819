"""``isthmus serve`` as a user runs it: the installed entry point, real HTTP, real files."""

from __future__ import annotations

import secrets
import stat
import subprocess
from pathlib import Path

import pytest

from e2e.conftest import GRACEFUL_EXIT, Launcher, clean_env, isthmus_executable

pytestmark = pytest.mark.e2e

INTEGRATIONS = "/api/v1/integrations"


def _body(name: str, api_key: str) -> dict[str, object]:
    return {
        "name": name,
        "provider": "api_endpoint",
        "config": {"apiEndpoint": "https://api.example.com/v1/contacts"},
        "credentials": {"apiKey": api_key},
    }


def test_serve_on_sqlite_creates_reads_and_reveals(launcher: Launcher, tmp_path: Path) -> None:
    home = tmp_path / "data"
    server = launcher.serve(home=home)

    admin = server.admin_key()
    docs_url = f"{server.url}/api/docs"
    assert server.stdout().count(docs_url) == 1, server.tail()
    assert stat.S_IMODE((home / "master.keys").stat().st_mode) == 0o600
    assert stat.S_IMODE(home.stat().st_mode) & 0o077 == 0  # the data dir is the owner's only
    assert (home / "isthmus.db").is_file()

    with server.client() as anonymous:
        docs = anonymous.get("/api/docs")
        assert docs.status_code == 200
        assert "text/html" in docs.headers["content-type"]
        assert anonymous.get("/openapi.json").json()["info"]["title"] == "isthmus"
        assert anonymous.get("/readyz").json()["status"] == "ready"
        assert anonymous.get(INTEGRATIONS).status_code == 401

    canary = "canary-" + secrets.token_hex(24)
    with server.client(admin) as api:
        created = api.post(INTEGRATIONS, json=_body("CRM", canary))
        assert created.status_code == 201, created.text
        integration_id = created.json()["id"]
        assert canary not in created.text

        got = api.get(f"{INTEGRATIONS}/{integration_id}")
        assert got.status_code == 200
        assert got.json()["credentials"] == {"apiKey": f"{canary[:4]}...{canary[-4:]}"}
        assert got.json()["status"] == "configuring"

        revealed = api.post(
            f"{INTEGRATIONS}/{integration_id}/credentials/reveal", json={"field": "apiKey"}
        )
        assert revealed.status_code == 200, revealed.text
        assert revealed.json() == {"field": "apiKey", "value": canary}

        audit = api.get("/api/v1/audit", params={"action": "integration.credentials.reveal"})
        [entry] = audit.json()["data"]
        assert entry["resourceId"] == integration_id
        assert entry["clientIp"] == "127.0.0.1"

    assert server.stop() in GRACEFUL_EXIT, server.tail()
    assert "Application shutdown complete" in server.stderr()


def test_second_start_on_the_same_data_dir_prints_no_new_key(
    launcher: Launcher, tmp_path: Path
) -> None:
    home = tmp_path / "data"
    first = launcher.serve(home=home)
    admin = first.admin_key()
    assert first.stop() in GRACEFUL_EXIT

    second = launcher.serve(home=home)
    assert second.admin_keys() == []
    assert second.stdout().count(f"{second.url}/api/docs") == 1
    with second.client(admin) as api:
        assert api.get(INTEGRATIONS).status_code == 200


def test_settings_from_a_toml_file(launcher: Launcher, tmp_path: Path) -> None:
    """``--config FILE`` and ``ISTHMUS_CONFIG`` both load it; an environment variable beats it."""
    config = tmp_path / "isthmus.toml"
    config.write_text('rate_limit = "7/minute"\nlog_level = "warning"\n')

    by_option = launcher.serve(home=tmp_path / "a", options=["--config", str(config)])
    by_env = launcher.serve(home=tmp_path / "b", env={"ISTHMUS_CONFIG": str(config)})
    overridden = launcher.serve(
        home=tmp_path / "c",
        env={"ISTHMUS_CONFIG": str(config), "ISTHMUS_RATE_LIMIT": "9/minute"},
    )
    for server, limit in ((by_option, "7"), (by_env, "7"), (overridden, "9")):
        with server.client(server.admin_key()) as api:
            response = api.get(INTEGRATIONS)
        assert response.status_code == 200
        assert response.headers["x-ratelimit-limit"] == limit
        assert response.headers["x-ratelimit-remaining"] == str(int(limit) - 1)
    # log_level = "warning" from the file: uvicorn's INFO lines are not written.
    assert "Uvicorn running" not in by_option.stderr()


def test_master_key_rotate_beside_a_running_server(launcher: Launcher, tmp_path: Path) -> None:
    """Rotating with the key file while ``serve`` runs: the server goes on reading every
    secret (it picks the new key up from the file), and after ``prune`` too."""
    home = tmp_path / "data"
    server = launcher.serve(home=home)
    secret = "sk_live_" + secrets.token_hex(16)
    with server.client(server.admin_key()) as api:
        created = api.post(INTEGRATIONS, json=_body("CRM", secret))
        assert created.status_code == 201
        iid = created.json()["id"]

        env = clean_env(ISTHMUS_HOME=str(home))
        for command in (["master-key", "rotate"], ["master-key", "prune"]):
            done = subprocess.run(
                [isthmus_executable(), *command],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert done.returncode == 0, done.stdout + done.stderr

            shown = api.get(f"{INTEGRATIONS}/{iid}").json()
            assert shown["credentialErrors"] == {}, (command, shown)
            revealed = api.post(
                f"{INTEGRATIONS}/{iid}/credentials/reveal", json={"field": "apiKey"}
            )
            assert revealed.status_code == 200, (command, revealed.text)
            assert revealed.json()["value"] == secret
        assert "removed" in done.stdout
