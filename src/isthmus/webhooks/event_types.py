"""Event types: the kinds of events a tenant publishes and subscribers filter on.

Every tenant starts with the preloaded types of ``PRELOADED_EVENT_TYPES``. They are seeded
lazily: the first time a process touches a tenant's event types (any read or write here, and
every subscription check), one idempotent ``INSERT ... ON CONFLICT DO NOTHING`` adds the ones
the tenant lacks. Tenants made before this package existed get them too, no migration has to
know about tenants, and concurrent processes cannot create duplicates or overwrite a type the
tenant changed or archived since. Seeding is the system's doing, so it writes no audit rows.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from jsonschema.exceptions import SchemaError
from jsonschema.validators import Draft202012Validator, validator_for
from sqlalchemy.ext.asyncio import AsyncConnection

from isthmus.domain.auth import Actor
from isthmus.domain.pagination import DEFAULT_LIMIT, decode_name_cursor
from isthmus.domain.records import EventType, Page
from isthmus.domain.webhooks import (
    MAX_EVENT_TYPE_NAME,
    PRELOADED_EVENT_TYPES,
    is_event_type_name,
)
from isthmus.errors import InvalidInput, NotFound
from isthmus.services.audit import record
from isthmus.store import event_types as repo
from isthmus.store.db import Store
from isthmus.store.types import utcnow

RESOURCE = "event_type"
_EDITABLE = ("description", "schema", "archived")
MAX_DESCRIPTION = 2000


def check_name(name: str) -> str:
    if not is_event_type_name(name):
        raise InvalidInput.field(
            "name",
            "must be dot notation of lower-case letters, digits and _ (e.g. contact.created), "
            f"at most {MAX_EVENT_TYPE_NAME} characters",
        )
    return name


def check_schema(schema: Any) -> dict[str, Any] | None:
    """``schema`` if it is a valid JSON Schema object (any draft jsonschema knows, 2020-12
    when ``$schema`` is absent); ``None`` stays ``None`` (no schema)."""
    if schema is None:
        return None
    if not isinstance(schema, dict):
        raise InvalidInput.field("schema", "must be a JSON Schema object")
    declared = schema.get("$schema")
    if declared is not None and not isinstance(declared, str):
        raise InvalidInput.field("schema", "$schema must be a URI string")
    cls = validator_for(schema, default=Draft202012Validator)
    if declared is not None:
        # validator_for falls back to the default for a $schema it does not know; a schema
        # written for a draft we cannot check must not pass as a 2020-12 one.
        known = str(cls.META_SCHEMA.get("$id", cls.META_SCHEMA.get("id", "")))
        if declared.rstrip("#") != known.rstrip("#"):
            raise InvalidInput.field("schema", f"unknown $schema {declared!r}")
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path)
        at = f" at /{where}" if where else ""
        raise InvalidInput.field("schema", f"not a valid JSON Schema{at}: {exc.message}") from exc
    return schema


def _check_description(description: str) -> str:
    if len(description) > MAX_DESCRIPTION:
        raise InvalidInput.field("description", f"at most {MAX_DESCRIPTION} characters")
    return description


class EventTypeService:
    def __init__(self, store: Store) -> None:
        self.store = store
        # Tenants this process has seeded; only saves the write, seeding is idempotent anyway.
        self._seeded: set[str] = set()

    async def ensure_seeded(self, tenant_id: str) -> None:
        """Give the tenant the preloaded event types it lacks (once per process)."""
        if tenant_id in self._seeded:
            return
        async with self.store.transaction() as conn:
            await self.seed_in(conn, tenant_id)
        self._seeded.add(tenant_id)

    @staticmethod
    async def seed_in(conn: AsyncConnection, tenant_id: str) -> None:
        """The same, inside the caller's write transaction."""
        await repo.insert_missing(conn, tenant_id, PRELOADED_EVENT_TYPES, utcnow())

    # -- reads ---------------------------------------------------------------------------

    async def get(self, tenant_id: str, name: str) -> EventType:
        await self.ensure_seeded(tenant_id)
        async with self.store.read() as conn:
            found = await repo.get(conn, tenant_id, name)
        if found is None:
            raise NotFound.of("event type", name)
        return found

    async def list(
        self,
        tenant_id: str,
        *,
        archived: bool | None = None,
        cursor: str | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> Page[EventType]:
        await self.ensure_seeded(tenant_id)
        async with self.store.read() as conn:
            return await repo.query(
                conn, tenant_id, archived=archived, after=decode_name_cursor(cursor), limit=limit
            )

    # -- writes --------------------------------------------------------------------------

    async def create(
        self,
        actor: Actor,
        *,
        name: str,
        description: str = "",
        schema: dict[str, Any] | None = None,
        archived: bool = False,
    ) -> EventType:
        """A new event type; Conflict if the tenant has one of that name (preloaded ones too)."""
        check_name(name)
        description = _check_description(description)
        schema = check_schema(schema)
        await self.ensure_seeded(actor.tenant_id)
        now = utcnow()
        created = EventType(
            tenant_id=actor.tenant_id,
            name=name,
            description=description,
            schema=schema,
            archived=archived,
            created_at=now,
            updated_at=now,
        )
        async with self.store.transaction() as conn:
            await repo.insert(conn, created)
            diff = {"description": description, "schema": schema, "archived": archived}
            await record(conn, actor, "event_type.create", RESOURCE, name, diff)
        return created

    async def update(self, actor: Actor, name: str, changes: dict[str, Any]) -> EventType:
        """Change description, schema (None removes it) or archived; the name is the id."""
        new_values = {k: changes[k] for k in _EDITABLE if k in changes}
        if "description" in new_values:
            new_values["description"] = _check_description(new_values["description"])
        if "schema" in new_values:
            new_values["schema"] = check_schema(new_values["schema"])
        await self.ensure_seeded(actor.tenant_id)
        async with self.store.transaction() as conn:
            current = await repo.get(conn, actor.tenant_id, name, for_update=True)
            if current is None:
                raise NotFound.of("event type", name)
            updated = replace(current, **new_values)
            diff = {
                k: {"from": getattr(current, k), "to": getattr(updated, k)}
                for k in _EDITABLE
                if getattr(current, k) != getattr(updated, k)
            }
            if not diff:
                return current  # no phantom updates: updated_at and the audit stay as they are
            updated = replace(updated, updated_at=utcnow())
            await repo.update(conn, updated)
            await record(conn, actor, "event_type.update", RESOURCE, name, diff)
        return updated
