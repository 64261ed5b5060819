"""Records the store hands out: plain frozen dataclasses, no ORM objects."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from isthmus.domain.integrations import Health, IntegrationStatus, IntegrationType
from isthmus.domain.webhooks import SubscriptionStatus


@dataclass(frozen=True)
class Tenant:
    id: str
    name: str
    created_at: datetime


@dataclass(frozen=True)
class ApiKey:
    id: str
    tenant_id: str
    name: str
    prefix: str
    scopes: tuple[str, ...]
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None


@dataclass(frozen=True)
class Integration:
    id: str
    tenant_id: str
    name: str
    provider: str
    type: IntegrationType
    description: str
    config: dict[str, Any]
    enabled: bool
    status: IntegrationStatus
    health: Health
    created_at: datetime
    updated_at: datetime
    status_message: str | None = None
    verified_at: datetime | None = None


@dataclass(frozen=True)
class AuditEntry:
    id: str
    tenant_id: str
    at: datetime
    actor: str
    action: str
    resource_type: str
    resource_id: str
    client_ip: str | None = None
    diff: dict[str, Any] = field(default_factory=dict)


T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


@dataclass(frozen=True)
class EventType:
    """A kind of event a tenant publishes; ``name`` (dot notation) is its id in the tenant."""

    tenant_id: str
    name: str
    description: str
    archived: bool
    created_at: datetime
    updated_at: datetime
    schema: dict[str, Any] | None = None


@dataclass(frozen=True)
class WebhookSubscription:
    """An endpoint that receives a tenant's events. Its signing secrets live in the vault
    (owner ``webhook:<id>``), never here; ``retry_schedule`` holds delays in seconds."""

    id: str
    tenant_id: str
    name: str
    url: str
    events: tuple[str, ...]
    is_active: bool
    description: str
    headers: dict[str, str]
    timeout_seconds: int
    retry_schedule: tuple[float, ...]
    status: SubscriptionStatus
    created_at: datetime
    updated_at: datetime
    rate_limit_per_second: int | None = None
    max_concurrency: int | None = None
    disabled_reason: str | None = None
    previous_secret_expires_at: datetime | None = None
    consecutive_failures: int = 0
    first_failure_at: datetime | None = None
