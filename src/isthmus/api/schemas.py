"""Request and response bodies: camelCase on the wire, unknown request fields refused."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Generic, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr
from pydantic.alias_generators import to_camel

from isthmus.domain.integrations import Health, IntegrationStatus, IntegrationType
from isthmus.domain.records import ApiKey, AuditEntry, EventType, WebhookSubscription
from isthmus.domain.webhooks import SubscriptionStatus
from isthmus.errors import FieldError, InvalidInput
from isthmus.http import redact_headers
from isthmus.services.integrations import IntegrationView
from isthmus.webhooks.probe import ProbeResult

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


# -- outbound webhooks: event types and subscriptions -------------------------------------------


class PatchBody(Body):
    """A partial update: only the fields sent change; ``null`` only where a field allows it."""

    nullable: ClassVar[frozenset[str]] = frozenset()

    def changes(self) -> dict[str, Any]:
        """The fields sent, by Python name; InvalidInput naming any null a field refuses."""
        changes = self.model_dump(exclude_unset=True)
        nulls = [
            type(self).model_fields[k].alias or k
            for k, v in changes.items()
            if v is None and k not in self.nullable
        ]
        if nulls:
            raise InvalidInput(
                "fields that cannot be null: " + ", ".join(nulls),
                [FieldError(k, "must not be null") for k in nulls],
            )
        return changes


_NAME_RULE = (
    "Dot notation: two or more segments of a-z, 0-9 and _, e.g. `contact.created`; "
    "at most 60 characters. The name is the event type's id and cannot change."
)
_SCHEMA_RULE = "JSON Schema of the event's `data` (2020-12 unless `$schema` says otherwise)."


class EventTypeCreate(Body):
    name: StrictStr = Field(description=_NAME_RULE, examples=["invoice.paid"])
    description: StrictStr = Field("", max_length=2000)
    payload_schema: dict[str, Any] | None = Field(
        None,
        alias="schema",
        description=_SCHEMA_RULE,
        examples=[{"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}}],
    )
    archived: StrictBool = False


class EventTypePatch(PatchBody):
    nullable = frozenset({"payload_schema"})

    description: StrictStr | None = Field(None, max_length=2000)
    payload_schema: dict[str, Any] | None = Field(
        None, alias="schema", description=_SCHEMA_RULE + " `null` removes it."
    )
    archived: StrictBool | None = None


class EventTypeOut(Out):
    name: str
    description: str
    payload_schema: dict[str, Any] | None = Field(alias="schema")
    archived: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, event_type: EventType) -> EventTypeOut:
        return cls(
            name=event_type.name,
            description=event_type.description,
            payload_schema=event_type.schema,
            archived=event_type.archived,
            created_at=event_type.created_at,
            updated_at=event_type.updated_at,
        )


_FILTERS_RULE = "Event type names, prefix wildcards (`contact.*`) or `*` for every event."
_SCHEDULE_RULE = (
    "A preset (`default`: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h; `seed`: "
    "immediately, 2, 4, 8, 16 s) or a list of delays in seconds, one per attempt, the first "
    "before the first attempt. Stored as the list. Default: `default`."
)
_HEADERS_RULE = (
    "Extra headers sent with every delivery. The signature, id, timestamp, event, "
    "Content-Type, User-Agent and connection headers cannot be set."
)


class WebhookCreate(Body):
    name: StrictStr = Field("", max_length=200, examples=["Contact Notifications"])
    url: StrictStr = Field(
        max_length=2000,
        description="http(s); addresses that are not public are refused unless allowlisted.",
        examples=["https://example.com/webhook"],
    )
    events: list[StrictStr] = Field(
        min_length=1, description=_FILTERS_RULE, examples=[["contact.created", "lead.*"]]
    )
    is_active: StrictBool = True
    description: StrictStr = Field("", max_length=2000)
    headers: dict[str, StrictStr] = Field(default_factory=dict, description=_HEADERS_RULE)
    rate_limit_per_second: StrictInt | None = Field(None, ge=1, le=1000)
    max_concurrency: StrictInt | None = Field(None, ge=1, le=100)
    timeout_seconds: StrictInt = Field(10, ge=1, le=30)
    # Any, not a union: the rule (and its one error, on retrySchedule) is parse_schedule's.
    retry_schedule: Any = Field(
        None, description=_SCHEDULE_RULE, examples=["default", [0, 5, 300, 1800]]
    )


class WebhookPatch(PatchBody):
    nullable = frozenset({"rate_limit_per_second", "max_concurrency", "retry_schedule"})

    name: StrictStr | None = Field(None, max_length=200)
    url: StrictStr | None = Field(None, max_length=2000)
    events: list[StrictStr] | None = Field(None, min_length=1, description=_FILTERS_RULE)
    is_active: StrictBool | None = Field(
        None, description="`true` also re-enables a subscription disabled after failures."
    )
    description: StrictStr | None = Field(None, max_length=2000)
    headers: dict[str, StrictStr | None] | None = Field(
        None, description="Merged: a header given a value is set, `null` removes it."
    )
    rate_limit_per_second: StrictInt | None = Field(None, ge=1, le=1000)
    max_concurrency: StrictInt | None = Field(None, ge=1, le=100)
    timeout_seconds: StrictInt | None = Field(None, ge=1, le=30)
    retry_schedule: Any = Field(None, description=_SCHEDULE_RULE + " `null`: the default.")


class WebhookOut(Out):
    id: str
    name: str
    url: str
    events: list[str]
    is_active: bool
    description: str
    headers: dict[str, str] = Field(description="Values of secret-looking headers are masked.")
    rate_limit_per_second: int | None
    max_concurrency: int | None
    timeout_seconds: int
    retry_schedule: list[float]
    status: SubscriptionStatus
    disabled_reason: str | None
    consecutive_failures: int
    previous_secret_expires_at: datetime | None = Field(
        description="Until then the secret before the last rotation still signs too."
    )
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, sub: WebhookSubscription, **extra: Any) -> Self:
        return cls(
            id=sub.id,
            name=sub.name,
            url=sub.url,
            events=list(sub.events),
            is_active=sub.is_active,
            description=sub.description,
            headers=redact_headers(sub.headers),
            rate_limit_per_second=sub.rate_limit_per_second,
            max_concurrency=sub.max_concurrency,
            timeout_seconds=sub.timeout_seconds,
            retry_schedule=list(sub.retry_schedule),
            status=sub.status,
            disabled_reason=sub.disabled_reason,
            consecutive_failures=sub.consecutive_failures,
            previous_secret_expires_at=sub.previous_secret_expires_at,
            created_at=sub.created_at,
            updated_at=sub.updated_at,
            **extra,
        )


class WebhookWithSecret(WebhookOut):
    secret: str = Field(description="The signing secret. Shown this once; keep it safe.")


class RotateIn(Body):
    grace_hours: StrictInt | None = Field(
        None, ge=0, le=168, description="How long the old secret keeps signing (default 24)."
    )


class WebhookTestOut(Out):
    success: bool
    status_code: int | None = Field(description="The endpoint's status, if it answered.")
    latency_ms: float
    error: str | None = Field(
        None, description="Why it failed: blocked, refused, timeout, dns, unavailable, ..."
    )
    error_message: str | None = None

    @classmethod
    def of(cls, result: ProbeResult) -> WebhookTestOut:
        return cls(
            success=result.success,
            status_code=result.status_code,
            latency_ms=result.latency_ms,
            error=result.error,
            error_message=result.error_message,
        )
