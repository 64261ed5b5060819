"""Tables of the platform core. Later packages add theirs to the same ``metadata``."""

from __future__ import annotations

import sqlalchemy as sa

from isthmus.store.types import JSONType, UTCDateTime

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

tenants = sa.Table(
    "tenants",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("name", sa.String(100), nullable=False, unique=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("prefix", sa.String(20), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("scopes", JSONType, nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=True),
    sa.Column("revoked_at", UTCDateTime(), nullable=True),
    sa.Index(None, "tenant_id"),
)

integrations = sa.Table(
    "integrations",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("provider", sa.String(100), nullable=False),
    sa.Column("type", sa.String(30), nullable=False),
    sa.Column("description", sa.Text(), nullable=False),
    sa.Column("config", JSONType, nullable=False),
    sa.Column("enabled", sa.Boolean(), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("health", sa.String(20), nullable=False),
    sa.Column("status_message", sa.Text(), nullable=True),
    sa.Column("verified_at", UTCDateTime(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("tenant_id", "name"),
)

# Every encrypted value of every package lives here, so key rotation has one table to walk.
# ``owner`` names the row a secret belongs to, e.g. ``integration:int_...``.
secrets = sa.Table(
    "secrets",
    metadata,
    sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("owner", sa.String(120), primary_key=True),
    sa.Column("field", sa.String(100), primary_key=True),
    sa.Column("key_id", sa.String(40), nullable=False),
    sa.Column("nonce", sa.LargeBinary(), nullable=False),
    sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Index(None, "key_id"),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("actor", sa.String(60), nullable=False),
    sa.Column("action", sa.String(60), nullable=False),
    sa.Column("resource_type", sa.String(40), nullable=False),
    sa.Column("resource_id", sa.String(60), nullable=False),
    sa.Column("client_ip", sa.String(64), nullable=True),
    sa.Column("diff", JSONType, nullable=False),
    sa.Index(None, "tenant_id", "at"),
)
