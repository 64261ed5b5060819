"""Tables of the platform core. Later packages add theirs to the same ``metadata``."""

from __future__ import annotations

import sqlalchemy as sa

from isthmus.store.types import JSONTextType, JSONType, UTCDateTime

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# The high-volume tables (jobs, events, deliveries, delivery_attempts, integration_requests,
# contacts) keep ``tenant_id`` without a foreign key to tenants. Tenants are never deleted
# and every tenant id written comes from an authenticated actor; the key's check would lock
# the one tenant row for every inserted row, from every concurrent transaction (a shared
# lock PostgreSQL records as a new multixact each time), which cost about a third of the
# server's time per delivery. A delivery's event and an attempt's delivery are not foreign
# keys either: PostgreSQL checks a key with a query per inserted row (planned anew each time
# on isthmus's connections), a fifth of its time per delivery. Publishing writes a delivery
# with its event, recording writes an attempt for a delivery it has just read, and retention
# deletes attempts, then deliveries, then the events no delivery refers to: the references
# hold without the checks.
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

# The durable job queue (isthmus.store.queue). ``run_at`` is when a claimer may take the row
# next: the scheduled time of a queued job, the lease expiry of a running one (so rescue of
# expired leases reads the same index as due work), the finish time of a settled one.
jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("tenant_id", sa.String(40), nullable=True),
    sa.Column("kind", sa.String(60), nullable=False),
    sa.Column("payload", JSONType, nullable=False),
    sa.Column("group_key", sa.String(120), nullable=True),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("run_at", UTCDateTime(), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("lease_token", sa.String(64), nullable=True),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Index(None, "status", "run_at"),
)

# Outbound webhooks. An event type's name is its id within the tenant (the API addresses it
# by name), so (tenant_id, name) is the key. ``schema`` is the payload's JSON Schema, if any.
event_types = sa.Table(
    "event_types",
    metadata,
    sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id"), primary_key=True),
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("description", sa.Text(), nullable=False),
    sa.Column("schema", JSONType, nullable=True),
    sa.Column("archived", sa.Boolean(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

# Signing secrets live in ``secrets`` (owner ``webhook:<id>``: fields ``secret`` and, during a
# rotation's grace period, ``previous_secret``), never in this row. ``status`` is the delivery
# engine's verdict (active, or disabled with a reason); ``is_active`` is the subscriber's switch.
webhook_subscriptions = sa.Table(
    "webhook_subscriptions",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("url", sa.Text(), nullable=False),
    sa.Column("events", JSONType, nullable=False),
    sa.Column("is_active", sa.Boolean(), nullable=False),
    sa.Column("description", sa.Text(), nullable=False),
    sa.Column("headers", JSONType, nullable=False),
    sa.Column("rate_limit_per_second", sa.Integer(), nullable=True),
    sa.Column("max_concurrency", sa.Integer(), nullable=True),
    sa.Column("timeout_seconds", sa.Integer(), nullable=False),
    sa.Column("retry_schedule", JSONType, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("disabled_reason", sa.Text(), nullable=True),
    sa.Column("previous_secret_expires_at", UTCDateTime(), nullable=True),
    sa.Column("consecutive_failures", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("first_failure_at", UTCDateTime(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    # Fan-out reads a tenant's subscriptions; lists page through them by id.
    sa.Index(None, "tenant_id", "id"),
)

# A published event: written with its deliveries (and their jobs) in one transaction.
# ``idempotency_key`` repeats within 24 h return the first event; ``payload_hash`` tells a
# repeat from a different payload under the same key (empty for an event without a key).
events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("tenant_id", sa.String(40), nullable=False),
    sa.Column("type", sa.String(100), nullable=False),
    # Written once, read whole to be sent: kept as the text published (see JSONTextType).
    sa.Column("data", JSONTextType, nullable=False),
    sa.Column("idempotency_key", sa.String(200), nullable=True),
    sa.Column("payload_hash", sa.String(64), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    # Keyed events only: most events (every contact a sync publishes) have no key, and an
    # index entry each would be written for nothing.
    sa.Index(
        "uq_events_tenant_id_idempotency_key",
        "tenant_id",
        "idempotency_key",
        unique=True,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
        sqlite_where=sa.text("idempotency_key IS NOT NULL"),
    ),
    sa.Index(None, "tenant_id", "created_at"),
)

# One event to one subscription. status: pending (queued or waiting for a retry), delivered,
# failed (attempts spent; kept and replayable), cancelled (subscription gone or disabled).
deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("tenant_id", sa.String(40), nullable=False),
    sa.Column("event_id", sa.String(40), nullable=False),
    sa.Column("subscription_id", sa.String(40), nullable=False),
    sa.Column("event_type", sa.String(100), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
    sa.Column("last_status_code", sa.Integer(), nullable=True),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Column("delivered_at", UTCDateTime(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    # The delivery log pages one subscription's deliveries by id; recover and retention scan
    # by time; retention deletes events, whose foreign-key check looks deliveries up by event.
    # No index holds a column an attempt changes, and pages keep room: recording an attempt
    # is a heap-only update, no index entry written (PostgreSQL).
    sa.Index(None, "subscription_id", "id"),
    sa.Index(None, "event_id"),
    sa.Index(None, "tenant_id", "created_at"),
    postgresql_with={"fillfactor": 70},
)

# Every try of a delivery: when, what came back (body cut at 4 KB), how long, which error.
delivery_attempts = sa.Table(
    "delivery_attempts",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("delivery_id", sa.String(40), nullable=False),
    sa.Column("tenant_id", sa.String(40), nullable=False),
    sa.Column("attempted_at", UTCDateTime(), nullable=False),
    sa.Column("status_code", sa.Integer(), nullable=True),
    sa.Column("response_body", sa.Text(), nullable=True),
    sa.Column("latency_ms", sa.Float(), nullable=True),
    sa.Column("error_class", sa.String(30), nullable=True),
    sa.Column("error_message", sa.Text(), nullable=True),
    sa.Index(None, "delivery_id", "attempted_at"),
)

# -- connectors -------------------------------------------------------------------------------

# An OAuth2 authorization in flight: the state sent to the provider, bound to one tenant and
# integration, with its PKCE verifier; used once, short-lived.
oauth_states = sa.Table(
    "oauth_states",
    metadata,
    sa.Column("state", sa.String(100), primary_key=True),
    sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column(
        "integration_id",
        sa.String(40),
        sa.ForeignKey("integrations.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("code_verifier", sa.String(200), nullable=False),
    sa.Column("redirect_uri", sa.Text(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
    sa.Index(None, "expires_at"),
)

# An integration's OAuth2 tokens: the values are sealed in ``secrets`` (owner
# ``oauth:<integration id>``); this row holds what is not secret and is the row a refresh
# locks, so one process at a time refreshes (``version`` counts the refreshes).
oauth_tokens = sa.Table(
    "oauth_tokens",
    metadata,
    sa.Column(
        "integration_id",
        sa.String(40),
        sa.ForeignKey("integrations.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("token_type", sa.String(40), nullable=False),
    sa.Column("scope", sa.Text(), nullable=True),
    sa.Column("expires_at", UTCDateTime(), nullable=True),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

# Every outbound call an integration made: what was asked (URL with secrets redacted), what
# came back, how long it took; kept for the retention window.
integration_requests = sa.Table(
    "integration_requests",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("tenant_id", sa.String(40), nullable=False),
    sa.Column(
        "integration_id",
        sa.String(40),
        sa.ForeignKey("integrations.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("level", sa.String(10), nullable=False),
    sa.Column("method", sa.String(10), nullable=False),
    sa.Column("url", sa.Text(), nullable=False),
    sa.Column("status_code", sa.Integer(), nullable=True),
    sa.Column("duration_ms", sa.Float(), nullable=False),
    sa.Column("bytes", sa.Integer(), nullable=False),
    sa.Column("error_class", sa.String(40), nullable=True),
    sa.Column("message", sa.Text(), nullable=True),
    sa.Index(None, "integration_id", "at"),
    sa.Index(None, "at"),
)

# -- contacts and scheduled sync ----------------------------------------------------------------

# The canonical contact; ``hash`` is over the mapped fields, so a re-sync of unchanged data
# writes nothing. ``sources``: [{"integrationId", "externalId"}, ...].
contacts = sa.Table(
    "contacts",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("tenant_id", sa.String(40), nullable=False),
    sa.Column("email", sa.String(320), nullable=False),
    sa.Column("first_name", sa.String(200), nullable=True),
    sa.Column("last_name", sa.String(200), nullable=True),
    sa.Column("phone", sa.String(100), nullable=True),
    sa.Column("company", sa.String(300), nullable=True),
    sa.Column("job_title", sa.String(300), nullable=True),
    sa.Column("custom", JSONType, nullable=False),
    sa.Column("sources", JSONType, nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("tenant_id", "email"),
    sa.Index(None, "tenant_id", "id"),
)

# One sync of one integration: counts, outcome, and the checkpoint an interrupted run resumes
# from (the paginator's position after the last page written).
sync_runs = sa.Table(
    "sync_runs",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column(
        "integration_id",
        sa.String(40),
        sa.ForeignKey("integrations.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("trigger", sa.String(20), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("started_at", UTCDateTime(), nullable=True),
    sa.Column("finished_at", UTCDateTime(), nullable=True),
    sa.Column("fetched", sa.Integer(), nullable=False),
    sa.Column("created", sa.Integer(), nullable=False),
    sa.Column("updated", sa.Integer(), nullable=False),
    sa.Column("unchanged", sa.Integer(), nullable=False),
    sa.Column("skipped", sa.Integer(), nullable=False),
    sa.Column("skipped_reasons", JSONType, nullable=False),
    sa.Column("error", sa.Text(), nullable=True),
    sa.Column("error_class", sa.String(40), nullable=True),
    sa.Column("checkpoint", JSONType, nullable=True),
    sa.Column("attempt", sa.Integer(), nullable=False),
    sa.Index(None, "integration_id", "id"),
    sa.Index(None, "tenant_id", "status"),
    # At most one queued or running run per integration, whichever process asks.
    sa.Index(
        "uq_sync_runs_active_integration",
        "integration_id",
        unique=True,
        postgresql_where=sa.text("status IN ('queued', 'running')"),
        sqlite_where=sa.text("status IN ('queued', 'running')"),
    ),
)

# Polling settings of one integration, and where its schedule stands.
polling_settings = sa.Table(
    "polling_settings",
    metadata,
    sa.Column(
        "integration_id",
        sa.String(40),
        sa.ForeignKey("integrations.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("enabled", sa.Boolean(), nullable=False),
    sa.Column("frequency", sa.String(20), nullable=False),
    sa.Column("cron", sa.String(120), nullable=True),
    sa.Column("time_of_day", sa.String(5), nullable=True),
    sa.Column("day_of_week", sa.Integer(), nullable=True),
    sa.Column("day_of_month", sa.Integer(), nullable=True),
    sa.Column("timezone", sa.String(64), nullable=False),
    sa.Column("max_retries", sa.Integer(), nullable=False),
    sa.Column("retry_count", sa.Integer(), nullable=False),
    sa.Column("next_poll_at", UTCDateTime(), nullable=True),
    sa.Column("last_poll_at", UTCDateTime(), nullable=True),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Index(None, "enabled", "next_poll_at"),
)

# Where an incremental sync picks up: the saved cursor or updated-since value.
sync_state = sa.Table(
    "sync_state",
    metadata,
    sa.Column(
        "integration_id",
        sa.String(40),
        sa.ForeignKey("integrations.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("state", JSONType, nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)
