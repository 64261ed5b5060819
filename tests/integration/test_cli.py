"""The ``isthmus`` command as an operator uses it: a real subprocess on the real store.

Each test points the command at the test's store (SQLite, then PostgreSQL) through
``ISTHMUS_HOME`` / ``ISTHMUS_DATABASE_URL`` and checks the effect through the API or the
services, as the operator would see it.
"""

from __future__ import annotations

import asyncio
import json
import re
import stat
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from cli_support import (
    cli_env,
    failed,
    isthmus_executable,
    ok,
    printed_key,
    run_cli,
    run_many,
)
from typer.testing import CliRunner

from isthmus.cli import app as cli_app
from isthmus.config import Settings, load_settings
from isthmus.domain.auth import Actor
from isthmus.hub import Hub
from isthmus.services.access import IssuedKey
from isthmus.store import migrate, sync_state
from isthmus.store.sync_runs import RunStatus, Trigger
from isthmus.store.types import utcnow

#: For tests whose subject does not depend on the database: the store on SQLite only.
sqlite_only = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

#: They start the real `isthmus` command: `-m "not e2e"` leaves them out of a quick run.
pytestmark = pytest.mark.e2e

INTEGRATIONS = "/api/v1/integrations"
ENDPOINT = "https://api.example.com/v1/contacts"
SECRET = "sk_live_cli_0123456789abcdefWXYZ"
PASSWORD = "correct-horse-battery-staple"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def body(name: str, **credentials: str) -> dict[str, Any]:
    auth = {"type": "basic"} if "password" in credentials else {"type": "bearer"}
    return {
        "name": name,
        "provider": "api_endpoint",
        "config": {"apiEndpoint": ENDPOINT, "auth": auth},
        "credentials": credentials,
    }


# -- every command answers --help ---------------------------------------------------------


def _command_paths(group: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path under a (Typer's own) click group, the group itself first."""
    paths = [prefix]
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            paths += _command_paths(command, (*prefix, name))
        else:
            paths.append((*prefix, name))
    return paths


def test_every_command_and_subcommand_answers_help(tmp_path: Path) -> None:
    paths = _command_paths(typer.main.get_command(cli_app))
    names = {" ".join(p) for p in paths}
    assert {
        "serve",
        "migrate",
        "tenants create",
        "tenants list",
        "keys create",
        "keys list",
        "keys revoke",
        "master-key rotate",
        "integrations export",
        "integrations import",
        "sync",
    } <= names
    home = tmp_path / "never-created"
    env = cli_env(ISTHMUS_HOME=str(home))
    # Every path in process (a start of the command costs a second), the entry point itself
    # for a few.
    runner = CliRunner()
    for path in paths:
        result = runner.invoke(cli_app, [*path, "--help"], env=env, prog_name="isthmus")
        assert result.exit_code == 0, (path, result.output)
        assert "Usage: isthmus " + " ".join(path) in " ".join(result.output.split())
    for path in [(), ("master-key", "rotate"), ("integrations", "export")]:
        out = ok(run_cli([*path, "--help"], env))
        assert "Usage: isthmus " + " ".join(path) in " ".join(out.split())
    # Asking for help touches nothing.
    assert not home.exists()


# -- migrate, tenants -------------------------------------------------------------------


async def test_migrate_creates_the_store_and_is_idempotent(
    fresh_db_url: str, tmp_path: Path
) -> None:
    settings = load_settings(home=tmp_path / "home", database_url=fresh_db_url)
    env = cli_env(settings)
    for _ in range(2):
        assert "store is at migration" in ok(run_cli(["migrate"], env))
    hub = Hub.build(settings)
    try:
        assert await migrate.is_current(hub.store)
    finally:
        await hub.close()


async def test_tenants_create_list_and_duplicate(settings: Settings) -> None:
    env = cli_env(settings)
    assert "created tenant acme" in ok(run_cli(["tenants", "create", "acme"], env))
    duplicate, other = run_many(
        [(["tenants", "create", "acme"], env), (["tenants", "create", "globex"], env)]
    )
    assert failed(duplicate).strip() == "error: tenant 'acme' already exists"
    assert "created tenant globex" in ok(other)
    listed = ok(run_cli(["tenants", "list"], env)).splitlines()
    assert [line.split("\t")[0] for line in listed] == ["acme", "globex"]


# -- API keys ----------------------------------------------------------------------------------


@sqlite_only
async def test_keys_create_list_revoke_against_the_api(
    settings: Settings, api: httpx.AsyncClient, admin_key: IssuedKey
) -> None:
    env = cli_env(settings)
    created = await api.post(INTEGRATIONS, json=body("Default CRM", apiKey=SECRET))
    assert created.status_code == 201
    default_id = created.json()["id"]

    reader_run, writer_run, _ = run_many(
        [
            (["keys", "create", "--name", "reader", "--scope", "read"], env),
            (["keys", "create", "-s", "write", "-s", "read", "--expires-in", "30d"], env),
            (["tenants", "create", "acme"], env),
        ]
    )
    reader, writer = printed_key(ok(reader_run)), printed_key(ok(writer_run))
    assert "(read)" in reader_run.stdout
    assert "(write, read, expires " in writer_run.stdout

    assert (await api.get(INTEGRATIONS, headers=bearer(reader))).status_code == 200
    refused = await api.post(INTEGRATIONS, json=body("R", apiKey=SECRET), headers=bearer(reader))
    assert refused.status_code == 403
    assert "lacks the write scope" in refused.json()["detail"]
    made = await api.post(INTEGRATIONS, json=body("W", apiKey=SECRET), headers=bearer(writer))
    assert made.status_code == 201
    reveal = f"{INTEGRATIONS}/{default_id}/credentials/reveal"
    refused = await api.post(reveal, json={"field": "apiKey"}, headers=bearer(writer))
    assert refused.status_code == 403

    # A key of another tenant sees that tenant only; the default tenant's ids are 404 to it.
    acme_run, listed_run = run_many(
        [(["keys", "create", "--tenant", "acme", "-s", "admin"], env), (["keys", "list"], env)]
    )
    acme = printed_key(ok(acme_run))
    assert (await api.get(INTEGRATIONS, headers=bearer(acme))).json()["data"] == []
    assert (await api.get(f"{INTEGRATIONS}/{default_id}", headers=bearer(acme))).status_code == 404

    listed = ok(listed_run)
    rows = {line.split("\t")[0]: line.split("\t") for line in listed.splitlines()}
    assert len(rows) == 3  # bootstrap admin, reader, writer; acme's key is acme's
    for key in (reader, writer, acme, admin_key.secret):
        assert key not in listed  # the list never shows a key, only its prefix
    reader_id = next(k for k, row in rows.items() if row[-1] == "reader")
    assert rows[reader_id][1] == reader[:12] + "..."
    assert rows[reader_id][3] == "active"

    writer_id = next(k for k, row in rows.items() if row[1] == writer[:12] + "...")
    revoke, cross_tenant = run_many(
        [
            (["keys", "revoke", reader_id], env),
            # Revoking is per tenant: acme cannot revoke the default tenant's key.
            (["keys", "revoke", writer_id, "--tenant", "acme"], env),
        ]
    )
    assert f"revoked {reader_id}" in ok(revoke)
    assert f"API key '{writer_id}' does not exist" in failed(cross_tenant)
    after = await api.get(INTEGRATIONS, headers=bearer(reader))
    assert after.status_code == 401
    assert after.json()["detail"] == "the API key has been revoked"
    revoked_row = next(
        line for line in ok(run_cli(["keys", "list"], env)).splitlines() if reader_id in line
    )
    assert revoked_row.split("\t")[3] == "revoked"
    assert (await api.get(INTEGRATIONS, headers=bearer(writer))).status_code == 200


@sqlite_only
async def test_keys_create_refuses_bad_input(settings: Settings, admin_key: IssuedKey) -> None:
    env = cli_env(settings)
    cases = {
        "expires-in: must read like 90m, 12h, 30d or 2w": ["--expires-in", "5x"],
        "each scope must be read, write or admin": ["--scope", "root"],
        "tenant 'nope' does not exist": ["--tenant", "nope"],
    }
    results = run_many([(["keys", "create", *args], env) for args in cases.values()])
    for message, result in zip(cases, results, strict=True):
        assert message in failed(result)
    listed = ok(run_cli(["keys", "list"], env)).splitlines()
    assert [row.split("\t")[-1] for row in listed] == ["bootstrap admin"]  # nothing created


# -- export and import -----------------------------------------------------------------------


async def _seed(api: httpx.AsyncClient) -> dict[str, dict[str, str]]:
    """Two integrations in the default tenant; returns name -> credentials in clear."""
    seeded = {
        "CRM": {"apiKey": SECRET},
        "Mailer": {"username": "mailer-user", "password": PASSWORD},
    }
    for name, credentials in seeded.items():
        response = await api.post(INTEGRATIONS, json=body(name, **credentials))
        assert response.status_code == 201, response.text
    return seeded


async def _credentials_by_name(hub: Hub, tenant: str) -> dict[str, dict[str, str]]:
    tenant_id = (await hub.access.tenant_named(tenant)).id
    page = await hub.integrations.list(tenant_id)
    return {
        v.integration.name: await hub.integrations.credentials(tenant_id, v.integration.id)
        for v in page.items
    }


@sqlite_only  # the secrets' round trip through PostgreSQL: the import tests below
async def test_export_leaves_secrets_out_unless_confirmed(
    settings: Settings, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    env = cli_env(settings)
    seeded = await _seed(api)
    clear = [SECRET, PASSWORD, "mailer-user"]
    declined_file, accepted_file = tmp_path / "declined.json", tmp_path / "accepted.json"
    # A file that exists already, readable by all: once it holds secrets, it is not.
    accepted_file.write_text("old content\n")
    accepted_file.chmod(0o644)
    export = ["integrations", "export"]
    plain, declined, unanswered, accepted, unattended = run_many(
        [
            (export, env),
            ([*export, "--with-secrets", "-o", str(declined_file)], env, "n\n"),
            ([*export, "--with-secrets"], env, ""),
            ([*export, "--with-secrets", "-o", str(accepted_file)], env, "y\n"),
            ([*export, "--with-secrets", "--yes"], env, ""),
        ]
    )

    document = json.loads(ok(plain))
    assert document["version"] == 1 and document["withSecrets"] is False
    assert [i["name"] for i in document["integrations"]] == sorted(seeded)
    assert all("credentials" not in i for i in document["integrations"])
    assert document["integrations"][0]["config"]["apiEndpoint"] == ENDPOINT
    for value in clear:
        assert value not in plain.stdout

    # Answering no, or not answering at all (stdin closed), writes nothing.
    for refused in (declined, unanswered):
        assert refused.returncode == 1
        assert "every credential in clear text" in refused.stderr
        assert "Aborted" in refused.stderr
        assert "{" not in refused.stdout
        for value in clear:
            assert value not in refused.stdout + refused.stderr
    assert not declined_file.exists()

    ok(accepted)
    assert "every credential in clear text" in accepted.stderr
    assert stat.S_IMODE(accepted_file.stat().st_mode) == 0o600
    exported = json.loads(accepted_file.read_text())
    assert exported["withSecrets"] is True
    assert {i["name"]: i["credentials"] for i in exported["integrations"]} == seeded

    # --yes asks nothing.
    assert "every credential" not in unattended.stderr
    with_secrets = json.loads(ok(unattended))
    assert {i["name"]: i["credentials"] for i in with_secrets["integrations"]} == seeded


async def test_sync_detached_queues_a_manual_run_by_name_or_id(
    settings: Settings, api: httpx.AsyncClient, hub: Hub
) -> None:
    env = cli_env(settings)
    await _seed(api)
    tenant_id = (await hub.access.tenant_named("default")).id
    crm = await hub.integrations.find(tenant_id, "CRM")

    first = ok(run_cli(["sync", "CRM", "--detach"], env))
    [run_id] = re.findall(r"run_\w+", first)
    assert first.strip() == f"queued {run_id} of 'CRM' ({crm.id})"
    run = await hub.sync_runs.get(tenant_id, run_id)
    assert (run.trigger, run.status, run.integration_id) == (
        Trigger.MANUAL,
        RunStatus.QUEUED,
        crm.id,
    )
    # Asked again, by id, while that run waits: the same run, not a second one.
    again = ok(run_cli(["sync", crm.id, "--detach"], env))
    assert again.strip() == f"joined the run already under way: {run_id} of 'CRM' ({crm.id})"
    assert [r.id for r in (await hub.sync_runs.list(tenant_id, crm.id)).items] == [run_id]
    # --full while it waits: the same run, and it will walk the whole listing.
    async with hub.store.transaction() as conn:
        await sync_state.put(conn, tenant_id, crm.id, {"since": "2026-11-01"}, utcnow())
    full = ok(run_cli(["sync", "CRM", "--detach", "--full"], env))
    assert run_id in full
    async with hub.store.read() as conn:
        assert await sync_state.get(conn, crm.id) == {}

    unknown = failed(run_cli(["sync", "Nope"], env))
    assert "no integration has the id or the name 'Nope'" in unknown


async def test_sync_following_a_run_that_gets_cancelled_exits_1(
    settings: Settings, api: httpx.AsyncClient, hub: Hub
) -> None:
    env = cli_env(settings)
    await _seed(api)
    tenant_id = (await hub.access.tenant_named("default")).id
    queued = ok(run_cli(["sync", "CRM", "--detach"], env))
    [run_id] = re.findall(r"run_\w+", queued)
    follower = subprocess.Popen(
        [isthmus_executable(), "sync", "CRM"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert follower.stdout is not None
        joined = await asyncio.wait_for(asyncio.to_thread(follower.stdout.readline), 60)
        assert joined.startswith(f"joined the run already under way: {run_id}")

        await hub.sync_runs.cancel(Actor(tenant_id, "test"), run_id)

        out, err = await asyncio.to_thread(follower.communicate, timeout=60)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert follower.returncode == 1, (out, err)
    assert out.splitlines()[-1].startswith("cancelled")
    assert f"run {run_id} was cancelled" in err


async def test_import_into_another_tenant_then_again_updates(
    settings: Settings, api: httpx.AsyncClient, hub: Hub, tmp_path: Path
) -> None:
    env = cli_env(settings)
    seeded = await _seed(api)
    export = tmp_path / "export.json"
    for result in run_many(
        [
            (["integrations", "export", "--with-secrets", "--yes", "-o", str(export)], env),
            (["tenants", "create", "acme"], env),
        ]
    ):
        ok(result)

    first = ok(run_cli(["integrations", "import", str(export), "--tenant", "acme"], env))
    assert first.splitlines()[0] == "created 2, updated 0"
    assert await _credentials_by_name(hub, "acme") == seeded

    # Importing again matches by name: the same two, updated, none duplicated.
    document = json.loads(export.read_text())
    document["integrations"][0]["description"] = "changed"
    again = ok(
        run_cli(["integrations", "import", "-", "-t", "acme"], env, input=json.dumps(document))
    )
    assert again.splitlines()[0] == "created 0, updated 2"
    acme_id = (await hub.access.tenant_named("acme")).id
    views = (await hub.integrations.list(acme_id)).items
    assert sorted(v.integration.name for v in views) == sorted(seeded)
    assert {v.integration.name: v.integration.description for v in views}["CRM"] == "changed"
    # The source tenant is as it was.
    assert await _credentials_by_name(hub, "default") == seeded


@sqlite_only
async def test_import_into_a_fresh_data_dir(
    settings: Settings, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    seeded = await _seed(api)
    export = tmp_path / "export.json"
    ok(
        run_cli(
            ["integrations", "export", "--with-secrets", "--yes", "-o", str(export)],
            cli_env(settings),
        )
    )

    fresh = load_settings(home=tmp_path / "fresh")
    fresh_env = cli_env(fresh)
    ok(run_cli(["tenants", "create", "default"], fresh_env))
    result = ok(run_cli(["integrations", "import", str(export)], fresh_env))
    assert result.splitlines()[0] == "created 2, updated 0"

    # Sealed again under the fresh data dir's own master key.
    assert (fresh.home / "master.keys").read_text() != (settings.home / "master.keys").read_text()
    hub = Hub.build(fresh)
    try:
        assert await _credentials_by_name(hub, "default") == seeded
    finally:
        await hub.close()


def _document(*items: dict[str, Any]) -> dict[str, Any]:
    return {"version": 1, "withSecrets": True, "integrations": list(items)}


GOOD = {"name": "Good", "provider": "api_endpoint", "config": {"apiEndpoint": ENDPOINT}}
ALSO_GOOD = {**GOOD, "name": "Also good", "credentials": {"apiKey": SECRET}}


#: Import files that must be refused whole: (file content, what the error must name).
BAD_IMPORTS = {
    "not JSON": ("this is { not json", "is not JSON"),
    "wrong version": (json.dumps({**_document(GOOD), "version": 2}), "not an isthmus export"),
    "not a document": (json.dumps([GOOD]), "not an isthmus export"),
    "bad type": (
        json.dumps(_document(GOOD, {**ALSO_GOOD, "type": "bogus"})),
        "integrations[1].type: is not an integration type",
    ),
    # These pass the file check and fail in the store's transaction, after the items before
    # them were written (GOOD updates the integration that exists): all must roll back.
    "unknown provider": (
        json.dumps(_document(GOOD, ALSO_GOOD, {**GOOD, "name": "Bad", "provider": "nope"})),
        "integrations[2] (Bad): provider: unknown provider 'nope'",
    ),
    "bad URL": (
        json.dumps(_document(GOOD, {**ALSO_GOOD, "config": {"apiEndpoint": "ftp://x.example"}})),
        "integrations[1].config.apiEndpoint: must be an http or https URL",
    ),
    "unknown credential": (
        json.dumps(_document(GOOD, {**ALSO_GOOD, "credentials": {"token": SECRET}})),
        "integrations[1].credentials.token: is not a credential",
    ),
}


#: The cases that reach the store, whose rollback is worth seeing on each database.
IN_TRANSACTION = ("unknown provider", "bad URL", "unknown credential")


async def test_a_bad_import_file_imports_nothing(
    settings: Settings, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    env = cli_env(settings)
    existing = await api.post(INTEGRATIONS, json={**GOOD, "credentials": {"apiKey": SECRET}})
    assert existing.status_code == 201
    before = (await api.get(INTEGRATIONS)).json()["data"]
    audit_before = (await api.get("/api/v1/audit")).json()["data"]
    cases = {
        case: bad
        for case, bad in BAD_IMPORTS.items()
        if settings.is_sqlite or case in IN_TRANSACTION
    }
    files = []
    for i, (content, _) in enumerate(cases.values()):
        files.append(tmp_path / f"bad-{i}.json")
        files[-1].write_text(content)

    results = run_many([(["integrations", "import", str(f)], env) for f in files])

    for (case, (_, message)), result in zip(cases.items(), results, strict=True):
        stderr = failed(result)
        assert stderr.startswith("error: "), case
        assert message in stderr, (case, stderr)
        assert SECRET not in stderr, case
    assert (await api.get(INTEGRATIONS)).json()["data"] == before
    assert (await api.get("/api/v1/audit")).json()["data"] == audit_before


# -- settings -----------------------------------------------------------------------------------


def test_settings_from_a_toml_file(tmp_path: Path) -> None:
    """--config and ISTHMUS_CONFIG both load the file; an environment variable beats it."""
    from_file, from_env = tmp_path / "from-file", tmp_path / "from-env"
    config = tmp_path / "isthmus.toml"
    config.write_text(f'home = "{from_file}"\nrate_limit = "10/minute"\n')

    for result in run_many(
        [
            (["--config", str(config), "tenants", "create", "one"], cli_env()),
            (
                ["tenants", "create", "two"],
                cli_env(ISTHMUS_CONFIG=str(config), ISTHMUS_HOME=str(from_env)),
            ),
        ]
    ):
        ok(result)
    assert (from_file / "isthmus.db").is_file() and (from_env / "isthmus.db").is_file()

    by_env, by_option = run_many(
        [
            (["tenants", "list"], cli_env(ISTHMUS_CONFIG=str(config))),
            (["--config", str(config), "tenants", "list"], cli_env(ISTHMUS_HOME=str(from_env))),
        ]
    )
    assert [line.split("\t")[0] for line in ok(by_env).splitlines()] == ["one"]
    assert [line.split("\t")[0] for line in ok(by_option).splitlines()] == ["two"]


#: Settings that cannot work: (environment, TOML file or None, what the error must say).
BAD_SETTINGS = {
    "bad rate limit": ({"ISTHMUS_RATE_LIMIT": "lots"}, None, "'lots' is not a rate limit"),
    "bad port": ({"ISTHMUS_PORT": "eighty"}, None, "port"),
    "bad log level": (
        {"ISTHMUS_LOG_LEVEL": "chatty"},
        None,
        "must be debug, info, warning or error",
    ),
    "bad value in TOML": ({}, 'rate_limit = "often"\n', "'often' is not a rate limit"),
    "unknown key in TOML": ({}, "colour = 'blue'\n", "colour"),
    "TOML syntax": ({}, "rate_limit = \n", "invalid settings"),
    "missing file": ({"ISTHMUS_CONFIG": "/nonexistent/isthmus.toml"}, None, "does not exist"),
}


def test_a_bad_setting_is_a_clear_error(tmp_path: Path) -> None:
    home = tmp_path / "home"
    calls = []
    for i, (env, toml, _) in enumerate(BAD_SETTINGS.values()):
        args = ["tenants", "list"]
        if toml is not None:
            config = tmp_path / f"isthmus-{i}.toml"
            config.write_text(toml)
            args = ["--config", str(config), *args]
        calls.append((args, cli_env(ISTHMUS_HOME=str(home), **env)))

    for (case, (_, _, message)), result in zip(BAD_SETTINGS.items(), run_many(calls), strict=True):
        stderr = failed(result, 2)
        assert stderr.startswith("error: "), case
        assert message in stderr, (case, stderr)
    assert not home.exists()
