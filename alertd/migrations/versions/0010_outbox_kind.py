"""outbox kind: transactional mails (confirmation, manage link) apart from digests

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        # Every row queued before this revision is a digest or a mail sent with one's rules.
        batch.add_column(
            sa.Column("kind", sa.String(length=16), nullable=False, server_default="digest")
        )
        batch.create_index("ix_outbox_kind_due", ["kind", "status", "next_attempt_at"])


def downgrade() -> None:
    # Native DROP COLUMN: a batch copy of outbox fails under SQLite's foreign_keys=ON, as
    # hit and ledger rows point at it (see 0002).
    op.drop_index("ix_outbox_kind_due", table_name="outbox")
    op.drop_column("outbox", "kind")
