"""item index: each stored item's analysed form and a full-text candidate filter

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The table as this revision made it; its rows are the application's to write: the items
# it lacks are indexed after every upgrade (alertd.db.upgrade), by the code that knows them.
_SQLITE_DDL = (
    # The ascii tokenizer splits only on ASCII non-alphanumerics and folds only ASCII case:
    # our tokens (lower-cased runs of letters and digits) come back out one for one.
    # The window's columns live here too: a query never reads the wide item rows.
    "CREATE VIRTUAL TABLE item_index USING fts5(heading, body, stems, heading_stems, fields, "
    "date_answered UNINDEXED, is_holding UNINDEXED, tokenize = 'ascii')",
)
_POSTGRES_DDL = (
    "CREATE TABLE item_index (item_id INTEGER PRIMARY KEY REFERENCES item (id), "
    "heading TEXT NOT NULL, body TEXT NOT NULL, stems TEXT NOT NULL, "
    "heading_stems TEXT NOT NULL, fields TEXT NOT NULL, date_answered DATE, "
    "is_holding BOOLEAN NOT NULL, terms TSVECTOR NOT NULL)",
    "CREATE INDEX ix_item_index_terms ON item_index USING GIN (terms)",
    "CREATE INDEX ix_item_index_date_answered ON item_index (date_answered)",
)


def upgrade() -> None:
    # Previews, estimates and samples window and order by the day answered.
    op.create_index("ix_item_date_answered", "item", ["date_answered"])
    connection = op.get_bind()
    postgres = connection.dialect.name == "postgresql"
    for statement in _POSTGRES_DDL if postgres else _SQLITE_DDL:
        connection.exec_driver_sql(statement)


def downgrade() -> None:
    op.get_bind().exec_driver_sql("DROP TABLE item_index")
    op.drop_index("ix_item_date_answered", table_name="item")
