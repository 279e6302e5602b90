"""alerts version: a change marker, so a running daemon reloads only the alerts that changed

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    table = op.create_table(
        "alertsversion",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.bulk_insert(table, [{"id": 1, "version": 0}])
    for name in ("alert", "subscriber"):
        with op.batch_alter_table(name) as batch:
            batch.add_column(
                sa.Column("changed_version", sa.Integer(), nullable=False, server_default="0")
            )
            batch.create_index(f"ix_{name}_changed_version", ["changed_version"])


def downgrade() -> None:
    for name in ("alert", "subscriber"):
        with op.batch_alter_table(name) as batch:
            batch.drop_index(f"ix_{name}_changed_version")
            batch.drop_column("changed_version")
    op.drop_table("alertsversion")
