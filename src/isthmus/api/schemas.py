"""Request and response bodies: camelCase on the wire, unknown request fields refused."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr
from pydantic.alias_generators import to_camel

from isthmus.domain.integrations import Health, IntegrationStatus, IntegrationType
from isthmus.domain.records import ApiKey, AuditEntry
from isthmus.services.integrations import IntegrationView

T = TypeVar("T")


class Body(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class Out(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class PageOut(Out, Generic[T]):
    data: list[T]
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page.")


class IntegrationCreate(Body):
    name: StrictStr = Field(min_length=1, max_length=200, examples=["Contacts API"])
    provider: StrictStr = Field(examples=["api_endpoint"])
    type: IntegrationType | None = Field(None, description="Defaults to the provider's category.")
    description: StrictStr = Field("", max_length=2000)
    config: dict[str, Any] = Field(
        default_factory=dict,
        examples=[{"apiEndpoint": "https://api.example.com/v1/contacts"}],
    )
    credentials: dict[str, StrictStr] = Field(
        default_factory=dict, examples=[{"apiKey": "sk_live_..."}]
    )
    enabled: StrictBool = True


class IntegrationPatch(Body):
    name: StrictStr | None = Field(None, min_length=1, max_length=200)
    type: IntegrationType | None = None
    description: StrictStr | None = Field(None, max_length=2000)
    config: dict[str, Any] | None = Field(None, description="Replaces the whole config.")
    credentials: dict[str, StrictStr | None] | None = Field(
        None, description="Merged: a field given a value is replaced, null removes it."
    )
    enabled: StrictBool | None = None


class IntegrationOut(Out):
    id: str
    name: str
    provider: str
    type: IntegrationType
    description: str
    config: dict[str, Any]
    credentials: dict[str, str] = Field(description="Masked: at most the first and last 4.")
    credential_errors: dict[str, str] = Field(
        default_factory=dict, description="Credentials that cannot be decrypted, and why."
    )
    enabled: bool
    status: IntegrationStatus
    health: Health
    status_message: str | None
    verified_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, view: IntegrationView) -> IntegrationOut:
        i = view.integration
        return cls(
            id=i.id,
            name=i.name,
            provider=i.provider,
            type=i.type,
            description=i.description,
            config=i.config,
            credentials=view.credentials,
            credential_errors=view.credential_errors,
            enabled=i.enabled,
            status=i.status,
            health=i.health,
            status_message=i.status_message,
            verified_at=i.verified_at,
            created_at=i.created_at,
            updated_at=i.updated_at,
        )


class RevealIn(Body):
    field: StrictStr = Field(min_length=1, examples=["apiKey"])


class RevealOut(Out):
    field: str
    value: str


class CredentialFieldOut(Out):
    name: str
    label: str
    description: str
    secret: bool


class ProviderOut(Out):
    name: str
    display_name: str
    category: IntegrationType
    description: str
    credentials: list[CredentialFieldOut]
    auth_types: dict[str, list[str]] = Field(
        description="Auth type (config.auth.type) -> credential fields it requires."
    )
    default_auth_type: str
    config_schema: dict[str, Any] = Field(description="JSON Schema of the config object.")


class ApiKeyCreate(Body):
    name: StrictStr = Field("", max_length=200)
    scopes: list[StrictStr] = Field(min_length=1, examples=[["read", "write"]])
    expires_at: datetime | None = None


class ApiKeyOut(Out):
    id: str
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, key: ApiKey) -> ApiKeyOut:
        return cls(
            id=key.id,
            name=key.name,
            prefix=key.prefix,
            scopes=list(key.scopes),
            created_at=key.created_at,
            expires_at=key.expires_at,
            revoked_at=key.revoked_at,
        )


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The key itself. Shown this once; only its hash is kept.")


class AuditOut(Out):
    id: str
    at: datetime
    actor: str
    action: str
    resource_type: str
    resource_id: str
    client_ip: str | None
    diff: dict[str, Any]

    @classmethod
    def of(cls, entry: AuditEntry) -> AuditOut:
        return cls(
            id=entry.id,
            at=entry.at,
            actor=entry.actor,
            action=entry.action,
            resource_type=entry.resource_type,
            resource_id=entry.resource_id,
            client_ip=entry.client_ip,
            diff=entry.diff,
        )
