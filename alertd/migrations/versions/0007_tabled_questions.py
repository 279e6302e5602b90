"""tabled questions: what an alert hears about, and a question's due date and group

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMNs (no table rebuild on SQLite: hits and the ledger point at both).
    # Existing alerts keep hearing about answers only, as before.
    op.add_column(
        "alert", sa.Column("notify_on", sa.String(32), nullable=False, server_default="answered")
    )
    op.add_column("item", sa.Column("date_for_answer", sa.Date(), nullable=True))
    op.add_column(
        "item", sa.Column("is_named_day", sa.Boolean(), nullable=False, server_default=sa.false())
    )
    op.add_column(
        "item", sa.Column("grouped_uins", sa.String(2000), nullable=False, server_default="")
    )


def downgrade() -> None:
    for column in ("grouped_uins", "is_named_day", "date_for_answer"):
        op.drop_column("item", column)
    op.drop_column("alert", "notify_on")
