"""delivery keys: deliveries and their attempts refer to their event and delivery without
foreign keys

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 01:40:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_KEYS = (
    ("deliveries", "fk_deliveries_event_id_events", "events", "event_id"),
    (
        "delivery_attempts",
        "fk_delivery_attempts_delivery_id_deliveries",
        "deliveries",
        "delivery_id",
    ),
)


def upgrade() -> None:
    for table, name, _referred, _column in _KEYS:
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(name, type_="foreignkey")


def downgrade() -> None:
    for table, name, referred, column in _KEYS:
        with op.batch_alter_table(table) as batch:
            batch.create_foreign_key(name, referred, [column], ["id"])
