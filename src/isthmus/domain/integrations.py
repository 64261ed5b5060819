"""Integration vocabulary and the credential masking rule."""

from __future__ import annotations

from enum import StrEnum


class IntegrationStatus(StrEnum):
    CONFIGURING = "configuring"
    TESTING = "testing"
    ACTIVE = "active"
    INACTIVE = "inactive"
    ERROR = "error"


class Health(StrEnum):
    HEALTHY = "healthy"
    WARNING = "warning"
    ERROR = "error"
    UNKNOWN = "unknown"


class IntegrationType(StrEnum):
    REST_API = "rest_api"
    GRAPHQL = "graphql"
    WEBHOOK = "webhook"
    DATABASE = "database"
    STORAGE = "storage"
    MESSAGING = "messaging"
    PAYMENT = "payment"
    EMAIL = "email"
    SMS = "sms"
    ANALYTICS = "analytics"
    CRM = "crm"
    CUSTOM = "custom"


FULL_MASK = "********"
#: Below this length even 4 + 4 visible characters would give away too much of the secret.
MIN_PARTIAL_LENGTH = 16


def mask_secret(value: str) -> str:
    """``sk_live_abc...9fQ2`` -> ``sk_l...9fQ2``; short values are masked entirely."""
    if len(value) < MIN_PARTIAL_LENGTH:
        return FULL_MASK
    return f"{value[:4]}...{value[-4:]}"
