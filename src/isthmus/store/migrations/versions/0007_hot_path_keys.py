"""hot path keys: no tenant foreign keys on the high-volume tables; deliveries updated in place

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23 09:30:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_TENANT_KEYS = (
    "jobs",
    "events",
    "deliveries",
    "delivery_attempts",
    "integration_requests",
    "contacts",
)


def upgrade() -> None:
    for table in _TENANT_KEYS:
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(f"fk_{table}_tenant_id_tenants", type_="foreignkey")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_index("ix_deliveries_tenant_id_status_created_at")
        batch.create_index("ix_deliveries_tenant_id_created_at", ["tenant_id", "created_at"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE deliveries SET (fillfactor = 70)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE deliveries RESET (fillfactor)")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_index("ix_deliveries_tenant_id_created_at")
        batch.create_index(
            "ix_deliveries_tenant_id_status_created_at", ["tenant_id", "status", "created_at"]
        )
    for table in _TENANT_KEYS:
        with op.batch_alter_table(table) as batch:
            batch.create_foreign_key(
                f"fk_{table}_tenant_id_tenants", "tenants", ["tenant_id"], ["id"]
            )
