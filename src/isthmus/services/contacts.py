"""Contacts for the API: create, read, change, delete and export them.

Every change is audited, and every contact created or changed is published as a
``contact.created`` / ``contact.updated`` webhook event in the transaction that writes it
(``publish_changes``, which the sync run uses too).
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from isthmus.domain.auth import Actor
from isthmus.domain.contacts import (
    CSV_HEADER,
    MAX_CUSTOM_NAME,
    MAX_LENGTHS,
    Contact,
    ContactFilter,
    clean_text,
    contact_hash,
    contact_json,
    contact_json_text,
    csv_row,
    email_problem,
    normalise_email,
)
from isthmus.domain.ids import new_id
from isthmus.domain.pagination import DEFAULT_LIMIT, decode_cursor
from isthmus.domain.records import Page
from isthmus.errors import FieldError, InvalidInput, NotFound
from isthmus.services.audit import record
from isthmus.store import contacts as repo
from isthmus.store import event_types as event_types_repo
from isthmus.store.db import Store
from isthmus.store.types import utcnow
from isthmus.webhooks.publish import DEFAULT_MAX_PAYLOAD_BYTES, NewEvent, publish_many
from isthmus.webhooks.signing import data_json

RESOURCE = "contact"
CREATED, UPDATED, DELETED = "contact.created", "contact.updated", "contact.deleted"
#: Python name -> API name of the fields a client sets.
_TEXT_FIELDS = {
    "first_name": "firstName",
    "last_name": "lastName",
    "phone": "phone",
    "company": "company",
    "job_title": "jobTitle",
}
_EXPORT_BATCH = 1000


async def publish_changes(
    conn: AsyncConnection,
    tenant_id: str,
    *,
    created: Iterable[Contact] = (),
    updated: Iterable[Contact] = (),
    deleted: Iterable[Contact] = (),
    now: datetime,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
) -> None:
    """Publish ``contact.created`` for each created contact, ``contact.updated`` for each
    updated one and ``contact.deleted`` for each deleted one (as it was), in the caller's
    transaction, with one ``publish_many`` for them all; the event's data is the contact as
    the API shows it. The one place contact events are published. A type the tenant
    archived publishes nothing (and blocks no write)."""
    new_events: list[NewEvent] = []
    changes = ((CREATED, list(created)), (UPDATED, list(updated)), (DELETED, list(deleted)))
    for event_type, items in changes:
        if not items or await _archived(conn, tenant_id, event_type):
            continue
        new_events.extend(
            NewEvent(event_type, text=contact_json_text(contact, data_json)) for contact in items
        )
    if new_events:
        await publish_many(conn, tenant_id, new_events, now, max_payload_bytes=max_payload_bytes)


async def _archived(conn: AsyncConnection, tenant_id: str, event_type: str) -> bool:
    found = await event_types_repo.get(conn, tenant_id, event_type)
    return found is not None and found.archived


class ContactService:
    def __init__(self, store: Store, *, max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> None:
        self.store = store
        self.max_payload_bytes = max_payload_bytes

    # -- reads ---------------------------------------------------------------------------

    async def get(self, tenant_id: str, contact_id: str) -> Contact:
        async with self.store.read() as conn:
            found = await repo.get(conn, tenant_id, contact_id)
        if found is None:
            raise NotFound.of(RESOURCE, contact_id)
        return found

    async def list(
        self,
        tenant_id: str,
        where: ContactFilter,
        *,
        cursor: str | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> Page[Contact]:
        after = decode_cursor(cursor)
        async with self.store.read() as conn:
            return await repo.query(conn, tenant_id, where, after=after, limit=limit)

    async def export_csv(self, tenant_id: str, where: ContactFilter) -> AsyncIterator[str]:
        """The matching contacts as CSV (header first), a chunk per batch read: the whole
        export is never in memory. Columns: ``CSV_HEADER``."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(CSV_HEADER)
        yield out.getvalue()
        async with self.store.read() as conn:
            async for batch in repo.stream(conn, tenant_id, where, batch_size=_EXPORT_BATCH):
                out.seek(0)
                out.truncate()
                writer.writerows(csv_row(c) for c in batch)
                yield out.getvalue()

    # -- writes --------------------------------------------------------------------------

    async def create(
        self,
        actor: Actor,
        *,
        email: str,
        first_name: str | None = None,
        last_name: str | None = None,
        phone: str | None = None,
        company: str | None = None,
        job_title: str | None = None,
        custom: Mapping[str, Any] | None = None,
    ) -> Contact:
        texts = {
            "first_name": first_name,
            "last_name": last_name,
            "phone": phone,
            "company": company,
            "job_title": job_title,
        }
        fields: dict[str, Any] = {
            "email": _email(email),
            **_texts(texts),
            "custom": _custom(custom or {}),
        }
        now = utcnow()
        contact = Contact(
            id=new_id("con"),
            tenant_id=actor.tenant_id,
            sources=(),
            hash="",
            created_at=now,
            updated_at=now,
            **fields,
        )
        contact = replace(contact, hash=contact_hash(contact))
        async with self.store.transaction() as conn:
            await repo.insert(conn, contact)
            diff = {k: v for k, v in contact_json(contact).items() if k in _AUDITED and v}
            await record(conn, actor, "contact.create", RESOURCE, contact.id, diff)
            await publish_changes(
                conn,
                actor.tenant_id,
                created=[contact],
                now=now,
                max_payload_bytes=self.max_payload_bytes,
            )
        return contact

    async def update(self, actor: Actor, contact_id: str, changes: Mapping[str, Any]) -> Contact:
        """Change some fields. A text field given None is cleared; ``custom`` merges: a
        name given a value is set, a name given None removed. A change that changes
        nothing writes, audits and publishes nothing."""
        new: dict[str, Any] = {}
        if "email" in changes:
            new["email"] = _email(changes["email"])
        new.update(_texts({k: changes[k] for k in _TEXT_FIELDS if k in changes}))
        async with self.store.transaction() as conn:
            current = await repo.get(conn, actor.tenant_id, contact_id, for_update=True)
            if current is None:
                raise NotFound.of(RESOURCE, contact_id)
            if changes.get("custom"):
                new["custom"] = _merged_custom(current.custom, changes["custom"])
            candidate = replace(current, **new)
            digest = contact_hash(candidate)
            if digest == current.hash:
                return current
            now = utcnow()
            updated = replace(candidate, hash=digest, updated_at=now)
            await repo.update(conn, updated)
            before, after = contact_json(current), contact_json(updated)
            diff = {
                k: {"from": before[k], "to": after[k]} for k in _AUDITED if before[k] != after[k]
            }
            await record(conn, actor, "contact.update", RESOURCE, contact_id, diff)
            await publish_changes(
                conn,
                actor.tenant_id,
                updated=[updated],
                now=now,
                max_payload_bytes=self.max_payload_bytes,
            )
        return updated

    async def delete(self, actor: Actor, contact_id: str) -> None:
        async with self.store.transaction() as conn:
            current = await repo.get(conn, actor.tenant_id, contact_id, for_update=True)
            if current is None:
                raise NotFound.of(RESOURCE, contact_id)
            await repo.delete(conn, actor.tenant_id, contact_id)
            await record(
                conn, actor, "contact.delete", RESOURCE, contact_id, {"email": current.email}
            )
            await publish_changes(
                conn,
                actor.tenant_id,
                deleted=[current],
                now=utcnow(),
                max_payload_bytes=self.max_payload_bytes,
            )


_AUDITED = ("email", *_TEXT_FIELDS.values(), "customFields")


def _email(value: object) -> str:
    if not isinstance(value, str):
        raise InvalidInput.field("email", "must be text")
    email = normalise_email(value)
    if problem := email_problem(email):
        raise InvalidInput.field("email", f"is not a valid address: {problem}")
    return email


def _texts(values: Mapping[str, object]) -> dict[str, str | None]:
    """Text fields trimmed, empty as None; InvalidInput naming each one too long."""
    cleaned: dict[str, str | None] = {}
    errors: list[FieldError] = []
    for name, value in values.items():
        api_name = _TEXT_FIELDS[name]
        limit = MAX_LENGTHS[api_name]
        if value is not None and not isinstance(value, str):
            errors.append(FieldError(api_name, "must be text or null"))
        elif value is not None and len(value.strip()) > limit:
            errors.append(FieldError(api_name, f"at most {limit} characters"))
        else:
            cleaned[name] = clean_text(value, limit)
    if errors:
        raise InvalidInput(_detail(errors), errors)
    return cleaned


def _custom(values: Mapping[str, Any]) -> dict[str, Any]:
    rule = f"names of 1 to {MAX_CUSTOM_NAME} characters"
    errors = [
        FieldError(f"customFields.{name}" if name else "customFields", rule)
        for name in values
        if not 1 <= len(name) <= MAX_CUSTOM_NAME
    ]
    if errors:
        raise InvalidInput(_detail(errors), errors)
    return {name: value for name, value in values.items() if value is not None}


def _merged_custom(current: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    merged = {**current, **_custom(changes)}
    for name, value in changes.items():
        if value is None:
            merged.pop(name, None)
    return merged


def _detail(errors: list[FieldError]) -> str:
    return "; ".join(f"{e.field}: {e.message}" for e in errors)
