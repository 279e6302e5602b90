"""tabled questions: what an alert hears about, and a question's due date and group

Revision ID: 0006_tabled_questions
Revises: 0005
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_tabled_questions"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("alert") as batch:
        # Existing alerts keep hearing about answers only, as before.
        batch.add_column(
            sa.Column("notify_on", sa.String(32), nullable=False, server_default="answered")
        )
    with op.batch_alter_table("item") as batch:
        batch.add_column(sa.Column("date_for_answer", sa.Date(), nullable=True))
        batch.add_column(
            sa.Column("is_named_day", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(
            sa.Column("grouped_uins", sa.String(2000), nullable=False, server_default="")
        )


def downgrade() -> None:
    with op.batch_alter_table("item") as batch:
        batch.drop_column("grouped_uins")
        batch.drop_column("is_named_day")
        batch.drop_column("date_for_answer")
    with op.batch_alter_table("alert") as batch:
        batch.drop_column("notify_on")
