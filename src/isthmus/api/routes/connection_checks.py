"""Connection tests: a saved integration's, or a config's before it is saved."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import Field, StrictBool, StrictStr

from isthmus.api.deps import HubDep, Writer
from isthmus.api.schemas import Body, Out
from isthmus.domain.contact_mapping import Skipped
from isthmus.domain.contacts import Mapped
from isthmus.domain.integrations import IntegrationType
from isthmus.services.connections import ConnectionCheck

router = APIRouter(prefix="/api/v1/integrations", tags=["integrations"])


_UNUSED = "Accepted, so that a create body can be sent as it is; not used."


class ConnectionCheckIn(Body):
    provider: StrictStr = Field("api_endpoint", examples=["api_endpoint"])
    config: dict[str, Any] = Field(
        default_factory=dict,
        examples=[{"apiEndpoint": "https://api.example.com/v1/contacts", "dataSelector": "data"}],
    )
    credentials: dict[str, StrictStr] = Field(
        default_factory=dict, examples=[{"apiKey": "sk_live_..."}]
    )
    # A setup form's body for POST /integrations, sent here first as it is: these name and
    # describe the integration to be, and change nothing about the call tried.
    name: StrictStr | None = Field(None, description=_UNUSED)
    type: IntegrationType | None = Field(None, description=_UNUSED)
    description: StrictStr | None = Field(None, description=_UNUSED)
    enabled: StrictBool | None = Field(None, description=_UNUSED)


class FieldOut(Out):
    name: str = Field(description="Dotted path of the field in a record.")
    type: str = Field(description="JSON type(s): string, integer, number, boolean, ...")


class MappedOut(Out):
    """A previewed record as the sync would take it."""

    skipped: str | None = Field(
        None, description="Why the sync would skip the record; the fields below are then null."
    )
    external_id: str | None = Field(None, description="The record's id at the source.")
    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    phone: str | None = None
    company: str | None = None
    job_title: str | None = None
    custom_fields: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def of(cls, result: Mapped | Skipped) -> MappedOut:
        if isinstance(result, Skipped):
            return cls(skipped=result.reason, external_id=result.external_id)
        return cls(
            external_id=result.external_id,
            email=result.email,
            first_name=result.first_name,
            last_name=result.last_name,
            phone=result.phone,
            company=result.company,
            job_title=result.job_title,
            custom_fields=dict(result.custom),
        )


class ConnectionCheckOut(Out):
    success: bool
    message: str = Field(description="What happened, in words; on failure, what to check.")
    status_code: int | None = Field(None, description="The API's HTTP status, when it answered.")
    latency_ms: float | None = None
    preview: list[dict[str, Any]] = Field(description="The first records (at most 10).")
    records_count: int | None = Field(None, description="Records on the first page.")
    total: int | None = Field(None, description="All records, when the API says.")
    fields: list[FieldOut] = Field(description="Fields found in the preview, with their types.")
    contacts: list[MappedOut] = Field(
        description="The preview's records as the sync would take them: the contact the field "
        "mapping (or auto-matching) makes of each, or why it would be skipped."
    )
    error_class: str | None = Field(
        None, description="Why it failed: auth, dns, refused, timeout, bad_response, ..."
    )

    @classmethod
    def of(cls, check: ConnectionCheck) -> ConnectionCheckOut:
        return cls(
            success=check.success,
            message=check.message,
            status_code=check.status_code,
            latency_ms=check.latency_ms,
            preview=check.preview,
            records_count=check.records_count,
            total=check.total,
            fields=[FieldOut(**f) for f in check.fields],
            contacts=[MappedOut.of(c) for c in check.contacts],
            error_class=check.error_class,
        )


@router.post(
    "/test",
    summary="Test a config before saving it",
    description="Fetches the first page with the given config and credentials; saves nothing.",
)
async def check_config(body: ConnectionCheckIn, hub: HubDep, actor: Writer) -> ConnectionCheckOut:
    check = await hub.connections.check_config(
        actor, body.provider, body.config, dict(body.credentials)
    )
    return ConnectionCheckOut.of(check)


@router.post(
    "/{integration_id}/test",
    summary="Test a saved integration",
    description="Fetches the first page; the integration's status becomes active or error.",
)
async def check(integration_id: str, hub: HubDep, actor: Writer) -> ConnectionCheckOut:
    return ConnectionCheckOut.of(await hub.connections.check(actor, integration_id))
