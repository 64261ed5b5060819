"""event data: kept as the JSON text published (PostgreSQL json, not jsonb)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 08:55:00.000000

An event's data is written once and read back whole to be sent; nothing searches inside it.
``jsonb`` built a binary form at every write (a third of the cost of writing an event) and
turned it back into text at every delivery. SQLite stores JSON as text already.
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE events ALTER COLUMN data TYPE json USING data::json")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE events ALTER COLUMN data TYPE jsonb USING data::jsonb")
