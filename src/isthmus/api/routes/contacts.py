"""/api/v1/contacts: thin: parse, call the service, shape the answer."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi.responses import StreamingResponse

from isthmus.api.contact_schemas import ContactCreate, ContactOut, ContactPatch
from isthmus.api.deps import CursorQ, HubDep, LimitQ, Reader, Writer, utc_instant
from isthmus.api.schemas import PageOut
from isthmus.domain.contacts import ContactFilter
from isthmus.domain.pagination import DEFAULT_LIMIT

router = APIRouter(prefix="/api/v1/contacts", tags=["contacts"])

_EmailQ = Annotated[str | None, Query(description="Exactly this address (case ignored).")]
_CompanyQ = Annotated[str | None, Query(description="Exactly this company (case ignored).")]
_IntegrationQ = Annotated[
    str | None, Query(alias="integrationId", description="Synced from this integration.")
]
_SinceQ = Annotated[
    datetime | None,
    Query(alias="updatedSince", description="Changed at or after this time (with a zone)."),
]
_SearchQ = Annotated[
    str | None, Query(description="Text in the email, the name or the company (case ignored).")
]


def _filter(
    email: str | None,
    company: str | None,
    integration_id: str | None,
    updated_since: datetime | None,
    q: str | None,
) -> ContactFilter:
    return ContactFilter(
        email=email,
        company=company,
        integration_id=integration_id,
        updated_since=utc_instant("updatedSince", updated_since),
        q=q,
    )


@router.get("", summary="List contacts")
async def list_contacts(
    hub: HubDep,
    actor: Reader,
    email: _EmailQ = None,
    company: _CompanyQ = None,
    integration_id: _IntegrationQ = None,
    updated_since: _SinceQ = None,
    q: _SearchQ = None,
    cursor: CursorQ = None,
    limit: LimitQ = DEFAULT_LIMIT,
) -> PageOut[ContactOut]:
    where = _filter(email, company, integration_id, updated_since, q)
    page = await hub.contacts.list(actor.tenant_id, where, cursor=cursor, limit=limit)
    return PageOut(data=[ContactOut.of(c) for c in page.items], next_cursor=page.next_cursor)


# Before /{contact_id}, which would otherwise take "export.csv" for an id.
@router.get(
    "/export.csv",
    summary="Export contacts as CSV (streamed; the list's filters)",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}, "description": "One row per contact."}},
)
async def export_csv(
    hub: HubDep,
    actor: Reader,
    email: _EmailQ = None,
    company: _CompanyQ = None,
    integration_id: _IntegrationQ = None,
    updated_since: _SinceQ = None,
    q: _SearchQ = None,
) -> StreamingResponse:
    where = _filter(email, company, integration_id, updated_since, q)
    return StreamingResponse(
        hub.contacts.export_csv(actor.tenant_id, where),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="contacts.csv"'},
    )


@router.post("", status_code=201, summary="Create a contact")
async def create(body: ContactCreate, hub: HubDep, actor: Writer) -> ContactOut:
    contact = await hub.contacts.create(
        actor,
        email=body.email,
        first_name=body.first_name,
        last_name=body.last_name,
        phone=body.phone,
        company=body.company,
        job_title=body.job_title,
        custom=body.custom_fields,
    )
    return ContactOut.of(contact)


@router.get("/{contact_id}", summary="Get a contact")
async def get(contact_id: str, hub: HubDep, actor: Reader) -> ContactOut:
    return ContactOut.of(await hub.contacts.get(actor.tenant_id, contact_id))


@router.patch("/{contact_id}", summary="Change a contact")
async def patch(contact_id: str, body: ContactPatch, hub: HubDep, actor: Writer) -> ContactOut:
    return ContactOut.of(await hub.contacts.update(actor, contact_id, body.service_changes()))


@router.delete("/{contact_id}", status_code=204, summary="Delete a contact")
async def delete(contact_id: str, hub: HubDep, actor: Writer) -> Response:
    await hub.contacts.delete(actor, contact_id)
    return Response(status_code=204)
