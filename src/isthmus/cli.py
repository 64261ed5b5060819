"""The ``isthmus`` command. Thin: build the settings once, call services, print."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import sys
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from isthmus import __version__, cli_sync
from isthmus.cli_common import (
    TenantOpt,
    cli_actor,
    command,
    fail,
    settings_of,
    with_hub,
)
from isthmus.config import load_settings
from isthmus.errors import InvalidInput, IsthmusError
from isthmus.hub import Hub
from isthmus.services.transfer import export_integrations, import_integrations
from isthmus.store import migrate as migrations
from isthmus.store.types import utcnow
from isthmus.vault import MasterKey, generate_master_key

log = logging.getLogger("isthmus.cli")

app = typer.Typer(
    help="isthmus: a self-hosted integration hub.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
tenants_app = typer.Typer(help="Create and list tenants.", no_args_is_help=True)
keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
master_app = typer.Typer(help="Rotate the master keys that encrypt secrets.", no_args_is_help=True)
integrations_app = typer.Typer(help="Export and import integrations.", no_args_is_help=True)
app.add_typer(tenants_app, name="tenants")
app.add_typer(keys_app, name="keys")
app.add_typer(master_app, name="master-key")
app.add_typer(integrations_app, name="integrations")


def _describe_runtime(hub: Hub) -> None:
    loop = type(asyncio.get_running_loop())
    log.debug(
        "event loop %s.%s, store %s, worker concurrency %d",
        loop.__module__,
        loop.__qualname__,
        hub.store.dialect,
        hub.settings.worker_concurrency,
    )


@app.callback()
def main_options(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="TOML settings file (or ISTHMUS_CONFIG)."),
    ] = None,
) -> None:
    try:
        ctx.obj = load_settings(config)
    except IsthmusError as exc:
        raise fail(exc.message, 2) from None
    logging.basicConfig(
        level=ctx.obj.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    # Alembic narrates every check at INFO; only applied migrations are news.
    logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Bind address [ISTHMUS_HOST].")] = None,
    port: Annotated[int | None, typer.Option(help="Port [ISTHMUS_PORT].")] = None,
    no_workers: Annotated[
        bool,
        typer.Option(
            "--no-workers",
            help="Serve the API and the sync scheduler only; run `isthmus worker`s for jobs.",
        ),
    ] = False,
) -> None:
    """Migrate the store, then serve the API (and, unless --no-workers, the workers)."""
    import uvicorn

    from isthmus.api.app import create_app
    from isthmus.runtime import tune_process, with_workers

    settings = settings_of(ctx)
    bind_host = host or settings.host
    bind_port = port if port is not None else settings.port

    async def run() -> None:
        hub = Hub.build(settings)
        _describe_runtime(hub)
        try:
            await migrations.upgrade(hub.store)
            issued = await hub.access.bootstrap()
            base = f"http://{bind_host}:{bind_port}"
            if issued is not None:
                typer.echo(
                    "Created tenant 'default' and an admin API key. It is shown this once; "
                    f"store it now:\n\n    {issued.secret}\n"
                )
            typer.echo(f"isthmus {__version__} on {base}  (API docs: {base}/api/docs)")
            app = create_app(settings, hub)
            app = with_workers(app, hub, jobs=not no_workers)
            tune_process(hub.store)
            config = uvicorn.Config(
                app,
                host=bind_host,
                port=bind_port,
                log_level=settings.log_level,
                lifespan="on",
            )
            await uvicorn.Server(config).serve()
        finally:
            await hub.close()

    command(run)()


@app.command()
def worker(
    ctx: typer.Context,
    concurrency: Annotated[
        int | None,
        typer.Option(min=1, max=1000, help="Jobs run at a time [ISTHMUS_WORKER_CONCURRENCY]."),
    ] = None,
) -> None:
    """Migrate the store, then run jobs (webhook deliveries, ...) until SIGTERM or Ctrl-C."""
    from isthmus.runtime import run_workers, tune_process

    settings = settings_of(ctx)
    if concurrency is not None:
        settings = settings.model_copy(update={"worker_concurrency": concurrency})

    async def run() -> None:
        hub = Hub.build(settings)
        _describe_runtime(hub)
        try:
            await migrations.upgrade(hub.store)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            typer.echo(f"isthmus {__version__} worker, concurrency {settings.worker_concurrency}")
            tune_process(hub.store)
            await run_workers(hub, stop)
        finally:
            await hub.close()

    command(run)()


@app.command()
def migrate(ctx: typer.Context) -> None:
    """Apply pending database migrations."""

    async def run() -> None:
        settings = settings_of(ctx)
        await with_hub(settings, lambda hub: _noop())
        typer.echo(f"store is at migration {migrations.head_revision()}")

    command(run)()


async def _noop() -> None:
    return None


# Listed after the process commands (typer lists commands in the order they are added).
app.command("sync")(cli_sync.sync)


# -- tenants ---------------------------------------------------------------------------------


@tenants_app.command("create")
def tenants_create(ctx: typer.Context, name: str) -> None:
    """Create a tenant."""

    async def run() -> None:
        tenant = await with_hub(settings_of(ctx), lambda hub: hub.access.create_tenant(name))
        typer.echo(f"created tenant {tenant.name} ({tenant.id})")

    command(run)()


@tenants_app.command("list")
def tenants_list(ctx: typer.Context) -> None:
    """List tenants."""

    async def run() -> None:
        for tenant in await with_hub(settings_of(ctx), lambda hub: hub.access.list_tenants()):
            typer.echo(f"{tenant.name}\t{tenant.id}\t{tenant.created_at:%Y-%m-%d %H:%M}")

    command(run)()


# -- API keys ----------------------------------------------------------------------------------


def _duration(text: str) -> timedelta:
    match = re.fullmatch(r"(\d+)([mhdw])", text.strip())
    if not match:
        raise InvalidInput.field("expires-in", "must read like 90m, 12h, 30d or 2w")
    amount, unit = int(match.group(1)), match.group(2)
    return timedelta(
        minutes=amount if unit == "m" else 0,
        hours=amount if unit == "h" else 0,
        days=amount if unit == "d" else 7 * amount if unit == "w" else 0,
    )


@keys_app.command("create")
def keys_create(
    ctx: typer.Context,
    tenant: TenantOpt = "default",
    name: Annotated[str, typer.Option(help="A label for the key.")] = "",
    scope: Annotated[
        list[str] | None, typer.Option("--scope", "-s", help="read, write or admin; repeatable.")
    ] = None,
    expires_in: Annotated[
        str | None, typer.Option(help="Lifetime such as 90m, 12h, 30d, 2w.")
    ] = None,
) -> None:
    """Create an API key and print it once."""

    async def run() -> None:
        expires_at = utcnow() + _duration(expires_in) if expires_in else None

        async def work(hub: Hub) -> Any:
            actor = await cli_actor(hub, tenant)
            return await hub.access.create_key(actor, name, scope or ["read"], expires_at)

        issued = await with_hub(settings_of(ctx), work)
        key = issued.key
        until = f", expires {key.expires_at:%Y-%m-%d %H:%M} UTC" if key.expires_at else ""
        typer.echo(f"created {key.id} ({', '.join(key.scopes)}{until}). Shown this once:")
        typer.echo(issued.secret)

    command(run)()


@keys_app.command("list")
def keys_list(ctx: typer.Context, tenant: TenantOpt = "default") -> None:
    """List a tenant's API keys (never the keys themselves)."""

    async def run() -> None:
        async def work(hub: Hub) -> Any:
            return await hub.access.list_keys((await cli_actor(hub, tenant)).tenant_id)

        for key in await with_hub(settings_of(ctx), work):
            state = "revoked" if key.revoked_at else "active"
            if not key.revoked_at and key.expires_at and key.expires_at <= utcnow():
                state = "expired"
            typer.echo(f"{key.id}\t{key.prefix}...\t{','.join(key.scopes)}\t{state}\t{key.name}")

    command(run)()


@keys_app.command("revoke")
def keys_revoke(ctx: typer.Context, key_id: str, tenant: TenantOpt = "default") -> None:
    """Revoke an API key at once."""

    async def run() -> None:
        async def work(hub: Hub) -> Any:
            return await hub.access.revoke_key(await cli_actor(hub, tenant), key_id)

        await with_hub(settings_of(ctx), work)
        typer.echo(f"revoked {key_id}")

    command(run)()


# -- master keys -----------------------------------------------------------------------------


@master_app.command("generate")
def master_generate() -> None:
    """Print a new master key entry (id:base64) for ISTHMUS_MASTER_KEYS."""
    typer.echo(generate_master_key().encode())


@master_app.command("status")
def master_status(ctx: typer.Context) -> None:
    """Show the master keys and how many secrets each one encrypts."""

    async def run() -> None:
        async def work(hub: Hub) -> tuple[list[MasterKey], dict[str, int]]:
            return hub.master_keys.keys(), await hub.master_keys.usage()

        keys, usage = await with_hub(settings_of(ctx), work)
        for i, key in enumerate(keys):
            newest = "  (newest: encrypts)" if i == len(keys) - 1 else ""
            typer.echo(f"{key.id}\t{usage.get(key.id, 0)} secrets{newest}")
        for key_id in sorted(set(usage) - {k.id for k in keys}):
            typer.echo(f"{key_id}\t{usage[key_id]} secrets  (MISSING: cannot decrypt these)")

    command(run)()


@master_app.command("rotate")
def master_rotate(ctx: typer.Context) -> None:
    """Add a new master key and re-encrypt every stored secret with it."""

    def progress(done: int, total: int) -> None:
        typer.echo(f"re-encrypting secrets: {done}/{total}", err=True)

    async def run() -> None:
        settings = settings_of(ctx)
        report = await with_hub(settings, lambda hub: hub.master_keys.rotate(on_progress=progress))
        typer.echo(f"{report.reencrypted} secrets now encrypted with master key {report.key_id}.")
        for problem in report.unreadable:
            typer.secho(f"could not re-encrypt {problem}", fg=typer.colors.YELLOW, err=True)
        if report.still_used:
            used = ", ".join(f"{k} ({n})" for k, n in report.still_used.items())
            typer.echo(f"Old keys still in use, keep them: {used}. Run rotate again.")
        if report.retirable:
            where = (
                "delete them from ISTHMUS_MASTER_KEYS"
                if settings.master_keys is not None
                else "run `isthmus master-key prune`"
            )
            typer.echo(
                f"No stored secret uses {', '.join(report.retirable)} any more. Restart every "
                f"running isthmus process so it encrypts with {report.key_id}, then {where}."
            )
        if report.unreadable or report.still_used:
            raise typer.Exit(1)

    command(run)()


@master_app.command("prune")
def master_prune(ctx: typer.Context) -> None:
    """Remove from the key file the old master keys that no stored secret uses."""

    async def run() -> None:
        dropped = await with_hub(settings_of(ctx), lambda hub: hub.master_keys.prune())
        typer.echo(f"removed {', '.join(dropped)}" if dropped else "no unused old key to remove")

    command(run)()


# -- integrations ------------------------------------------------------------------------------


@integrations_app.command("export")
def integrations_export(
    ctx: typer.Context,
    tenant: TenantOpt = "default",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write (default stdout).")
    ] = None,
    with_secrets: Annotated[
        bool, typer.Option("--with-secrets", help="Include credentials in clear.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Export a tenant's integrations as JSON; secrets are left out unless --with-secrets."""
    if with_secrets and not yes:
        typer.confirm(
            "The export will hold every credential in clear text. Continue?",
            abort=True,
            err=True,
        )

    async def run() -> None:
        async def work(hub: Hub) -> dict[str, Any]:
            actor = await cli_actor(hub, tenant)
            return await export_integrations(
                hub.integrations, actor.tenant_id, with_secrets=with_secrets
            )

        text = json.dumps(await with_hub(settings_of(ctx), work), indent=2) + "\n"
        if output is None:
            sys.stdout.write(text)
            return
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # the mode above is only for a new file; an old one may be 0644
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        typer.echo(f"wrote {output}", err=True)

    command(run)()


@integrations_app.command("import")
def integrations_import(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="An export file, or - for stdin.")],
    tenant: TenantOpt = "default",
) -> None:
    """Import integrations (create, or update those with the same name); all or nothing."""

    async def run() -> None:
        raw = sys.stdin.read() if str(file) == "-" else file.read_text()
        try:
            document = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"{file} is not JSON: {exc}") from exc

        async def work(hub: Hub) -> Any:
            actor = await cli_actor(hub, tenant)
            return await import_integrations(hub.integrations, actor, document)

        result = await with_hub(settings_of(ctx), work)
        typer.echo(f"created {len(result.created)}, updated {len(result.updated)}")
        for name in result.created:
            typer.echo(f"  + {name}")
        for name in result.updated:
            typer.echo(f"  ~ {name}")

    command(run)()


def main() -> None:
    app()
