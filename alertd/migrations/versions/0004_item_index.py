"""item index: each stored item's analysed form and a full-text candidate filter

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from collections.abc import Sequence

from alembic import op

from alertd.matching.history import create_index_table, drop_index_table, index_missing

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Previews, estimates and samples window and order by the day answered.
    op.create_index("ix_item_date_answered", "item", ["date_answered"])
    connection = op.get_bind()
    create_index_table(connection)
    # Items stored before the index existed are indexed here, in the migration's transaction.
    index_missing(connection)


def downgrade() -> None:
    drop_index_table(op.get_bind())
    op.drop_index("ix_item_date_answered", table_name="item")
