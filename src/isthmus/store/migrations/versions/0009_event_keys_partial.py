"""event keys: the idempotency-key index holds keyed events only

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 06:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_NAME = "uq_events_tenant_id_idempotency_key"
_KEYED = sa.text("idempotency_key IS NOT NULL")


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.drop_constraint(_NAME, type_="unique")
    op.create_index(
        _NAME,
        "events",
        ["tenant_id", "idempotency_key"],
        unique=True,
        postgresql_where=_KEYED,
        sqlite_where=_KEYED,
    )


def downgrade() -> None:
    op.drop_index(_NAME, table_name="events")
    with op.batch_alter_table("events") as batch:
        batch.create_unique_constraint(_NAME, ["tenant_id", "idempotency_key"])
