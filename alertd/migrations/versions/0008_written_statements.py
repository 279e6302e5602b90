"""written statements: a statement's minister role, attachments and links; type: in the index

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The type: field value each item kind of this revision is indexed under.
_TYPES = {"written_question": "question", "statement": "statement"}


def _set_types(add: bool) -> None:
    """Add each indexed item's type field (typequestion, typestatement), or take it away."""
    connection = op.get_bind()
    postgres = connection.dialect.name == "postgresql"
    key = "item_id" if postgres else "rowid"
    for kind, name in _TYPES.items():
        value = f"type{name}"
        if add:
            fields = "fields || ' ' || :value"
            terms = "terms || array_to_tsvector(ARRAY[CAST(:lexeme AS TEXT)])"
        else:
            fields = "trim(replace(' ' || fields || ' ', ' ' || :value || ' ', ' '))"
            terms = "ts_delete(terms, CAST(:lexeme AS TEXT))"
        assignments = f"fields = {fields}" + (f", terms = {terms}" if postgres else "")
        connection.execute(
            sa.text(
                f"UPDATE item_index SET {assignments} "
                f"WHERE {key} IN (SELECT id FROM item WHERE kind = :kind)"
            ),
            {"value": value, "lexeme": f"f:{value}", "kind": kind},
        )


def upgrade() -> None:
    with op.batch_alter_table("item") as batch:
        batch.add_column(sa.Column("answering_member_role", sa.String(300), nullable=True))
        batch.add_column(sa.Column("attachments", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("linked_statements", sa.JSON(), nullable=True))
    _set_types(add=True)


def downgrade() -> None:
    # Native DROP COLUMN: a batch copy of item would fail (or, with foreign keys off, orphan)
    # the hit and ledger rows that point at it under SQLite's foreign_keys=ON (see 0002).
    for column in ("linked_statements", "attachments", "answering_member_role"):
        op.drop_column("item", column)
    _set_types(add=False)
