"""Bodies of the contacts routes (``/api/v1/contacts``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field, StrictStr

from isthmus.api.schemas import Body, Out, PatchBody
from isthmus.domain.contacts import MAX_LENGTHS, Contact

_CUSTOM_RULE = "Any JSON values by name (1 to 100 characters)."
_MAX_EMAIL_INPUT = 320  # before trimming; the address itself is checked after


class ContactCreate(Body):
    email: StrictStr = Field(
        max_length=_MAX_EMAIL_INPUT,
        description="Trimmed and lower-cased; unique in the tenant.",
        examples=["ada@example.com"],
    )
    first_name: StrictStr | None = Field(None, max_length=MAX_LENGTHS["firstName"])
    last_name: StrictStr | None = Field(None, max_length=MAX_LENGTHS["lastName"])
    phone: StrictStr | None = Field(None, max_length=MAX_LENGTHS["phone"])
    company: StrictStr | None = Field(None, max_length=MAX_LENGTHS["company"])
    job_title: StrictStr | None = Field(None, max_length=MAX_LENGTHS["jobTitle"])
    custom_fields: dict[str, Any] = Field(
        default_factory=dict, description=_CUSTOM_RULE, examples=[{"plan": "pro"}]
    )


class ContactPatch(PatchBody):
    nullable = frozenset({"first_name", "last_name", "phone", "company", "job_title"})

    email: StrictStr | None = Field(None, max_length=_MAX_EMAIL_INPUT)
    first_name: StrictStr | None = Field(None, max_length=MAX_LENGTHS["firstName"])
    last_name: StrictStr | None = Field(None, max_length=MAX_LENGTHS["lastName"])
    phone: StrictStr | None = Field(None, max_length=MAX_LENGTHS["phone"])
    company: StrictStr | None = Field(None, max_length=MAX_LENGTHS["company"])
    job_title: StrictStr | None = Field(None, max_length=MAX_LENGTHS["jobTitle"])
    custom_fields: dict[str, Any] | None = Field(
        None,
        description="Merged: a field given a value is set, `null` removes it. " + _CUSTOM_RULE,
    )

    def service_changes(self) -> dict[str, Any]:
        """The changes by the service's names (``custom`` for ``customFields``)."""
        changes = self.changes()
        if "custom_fields" in changes:
            changes["custom"] = changes.pop("custom_fields")
        return changes


class SourceOut(Out):
    integration_id: str
    external_id: str | None = Field(description="The contact's id in that integration.")


class ContactOut(Out):
    id: str
    email: str
    first_name: str | None
    last_name: str | None
    phone: str | None
    company: str | None
    job_title: str | None
    custom_fields: dict[str, Any]
    sources: list[SourceOut] = Field(description="The integrations it was synced from.")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, contact: Contact) -> ContactOut:
        return cls(
            id=contact.id,
            email=contact.email,
            first_name=contact.first_name,
            last_name=contact.last_name,
            phone=contact.phone,
            company=contact.company,
            job_title=contact.job_title,
            custom_fields=dict(contact.custom),
            sources=[
                SourceOut(integration_id=s.integration_id, external_id=s.external_id)
                for s in contact.sources
            ],
            created_at=contact.created_at,
            updated_at=contact.updated_at,
        )
