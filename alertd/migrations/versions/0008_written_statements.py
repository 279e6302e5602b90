"""written statements: a statement's minister role, attachments and links; type: in the index

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from alertd.matching.history import create_index_table, drop_index_table, index_missing

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _reindex() -> None:
    # Every index row gains its item's type (type:question, type:statement): rebuilt once,
    # in the migration's transaction.
    connection = op.get_bind()
    drop_index_table(connection)
    create_index_table(connection)
    index_missing(connection)


def upgrade() -> None:
    with op.batch_alter_table("item") as batch:
        batch.add_column(sa.Column("answering_member_role", sa.String(300), nullable=True))
        batch.add_column(sa.Column("attachments", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("linked_statements", sa.JSON(), nullable=True))
    _reindex()


def downgrade() -> None:
    # Native DROP COLUMN: a batch copy of item would fail (or, with foreign keys off, orphan)
    # the hit and ledger rows that point at it under SQLite's foreign_keys=ON (see 0002).
    for column in ("linked_statements", "attachments", "answering_member_role"):
        op.drop_column("item", column)
    _reindex()
