"""Export integrations to JSON and import them back (secrets only when asked for)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from isthmus.domain.auth import Actor
from isthmus.domain.integrations import IntegrationType
from isthmus.errors import FieldError, InvalidInput
from isthmus.services.integrations import IntegrationService
from isthmus.store import integrations as repo
from isthmus.store.types import utcnow

FORMAT_VERSION = 1


@dataclass(frozen=True)
class ImportResult:
    created: list[str]
    updated: list[str]


async def export_integrations(
    service: IntegrationService, tenant_id: str, *, with_secrets: bool
) -> dict[str, Any]:
    async with service.store.read() as conn:
        items = []
        for integration in await repo.all_for(conn, tenant_id):
            item: dict[str, Any] = {
                "name": integration.name,
                "provider": integration.provider,
                "type": str(integration.type),
                "description": integration.description,
                "config": integration.config,
                "enabled": integration.enabled,
            }
            if with_secrets:
                item["credentials"] = await service.secret_box(tenant_id, integration.id).read(conn)
            items.append(item)
    return {
        "version": FORMAT_VERSION,
        "exportedAt": utcnow().isoformat(),
        "withSecrets": with_secrets,
        "integrations": items,
    }


def _check_document(document: Any) -> list[dict[str, Any]]:
    if not isinstance(document, dict) or document.get("version") != FORMAT_VERSION:
        raise InvalidInput(f"not an isthmus export (expected version {FORMAT_VERSION})")
    items = document.get("integrations")
    if not isinstance(items, list):
        raise InvalidInput.field("integrations", "must be a list")
    errors: list[FieldError] = []
    names: set[str] = set()
    allowed = {"name", "provider", "type", "description", "config", "enabled", "credentials"}
    for i, item in enumerate(items):
        where = f"integrations[{i}]"
        if not isinstance(item, dict):
            errors.append(FieldError(where, "must be an object"))
            continue
        errors += [FieldError(f"{where}.{k}", "is not a known field") for k in set(item) - allowed]
        if not isinstance(item.get("name"), str) or not isinstance(item.get("provider"), str):
            errors.append(FieldError(where, "needs a name and a provider"))
        elif item["name"] in names:
            errors.append(FieldError(f"{where}.name", f"{item['name']!r} appears twice"))
        else:
            names.add(item["name"])
        if "type" in item and item["type"] not in IntegrationType.__members__.values():
            errors.append(FieldError(f"{where}.type", "is not an integration type"))
        for key, kind in (("config", dict), ("credentials", dict), ("enabled", bool)):
            if key in item and not isinstance(item[key], kind):
                errors.append(FieldError(f"{where}.{key}", f"must be a {kind.__name__}"))
        if "description" in item and not isinstance(item["description"], str):
            errors.append(FieldError(f"{where}.description", "must be a string"))
    if errors:
        raise InvalidInput(f"{len(errors)} problems in the import file", errors)
    return items


async def import_integrations(
    service: IntegrationService, actor: Actor, document: Any
) -> ImportResult:
    """Create or update (matched by name) in one transaction: all of it lands or none.

    An export without secrets imports too; its integrations then wait for credentials.
    """
    items = _check_document(document)
    created: list[str] = []
    updated: list[str] = []
    async with service.store.transaction() as conn:
        for i, item in enumerate(items):
            try:
                existing = await repo.by_name(conn, actor.tenant_id, item["name"])
                if existing is None:
                    await service.create_in(
                        conn,
                        actor,
                        name=item["name"],
                        provider=item["provider"],
                        type=IntegrationType(item["type"]) if "type" in item else None,
                        description=item.get("description", ""),
                        config=item.get("config", {}),
                        credentials=item.get("credentials", {}),
                        enabled=item.get("enabled", True),
                        require_credentials=False,
                    )
                    created.append(item["name"])
                else:
                    if existing.provider != item["provider"]:
                        raise InvalidInput.field(
                            "provider",
                            f"{item['name']!r} exists with provider {existing.provider!r}",
                        )
                    changes = {
                        k: IntegrationType(v) if k == "type" else v
                        for k, v in item.items()
                        if k not in ("name", "provider")
                    }
                    changes.setdefault("config", existing.config)
                    await service.update_in(
                        conn, actor, existing, changes, require_credentials=False
                    )
                    updated.append(item["name"])
            except InvalidInput as exc:
                where = f"integrations[{i}]"
                raise InvalidInput(
                    f"{where} ({item['name']}): {exc.message}",
                    [FieldError(f"{where}.{e.field}", e.message) for e in exc.errors],
                ) from exc
    return ImportResult(created, updated)
