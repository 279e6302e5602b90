"""address case: subscribers compared by a lower-cased address, duplicates by case merged

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Rows that belong to a subscriber: a merged duplicate's rows move to the one kept.
_OWNED = ("alert", "hit", "outbox", "ledger")


def _merge(connection: sa.Connection, keep: int, duplicate: int) -> None:
    # The ledger says once per subscriber what was sent: a row both had stays once.
    connection.execute(
        sa.text(
            "DELETE FROM ledger WHERE subscriber_id = :dup AND EXISTS (SELECT 1 FROM ledger k "
            "WHERE k.subscriber_id = :keep AND k.source = ledger.source "
            "AND k.source_id = ledger.source_id AND k.version = ledger.version)"
        ),
        {"keep": keep, "dup": duplicate},
    )
    for table in _OWNED:
        connection.execute(
            sa.text(f"UPDATE {table} SET subscriber_id = :keep WHERE subscriber_id = :dup"),
            {"keep": keep, "dup": duplicate},
        )
    connection.execute(
        sa.text("DELETE FROM composefailure WHERE subscriber_id = :dup"), {"dup": duplicate}
    )
    connection.execute(sa.text("DELETE FROM subscriber WHERE id = :dup"), {"dup": duplicate})


def upgrade() -> None:
    # Native ADD COLUMN and CREATE INDEX: a batch copy of subscriber would delete the rows
    # that point at it under SQLite's foreign_keys=ON (see 0002). The default is filled in
    # below; alertd always sets the column itself.
    op.execute("ALTER TABLE subscriber ADD COLUMN email_key VARCHAR(254) NOT NULL DEFAULT ''")
    connection = op.get_bind()
    rows = connection.execute(sa.text("SELECT id, email FROM subscriber ORDER BY id")).all()
    kept: dict[str, int] = {}
    for subscriber_id, email in rows:
        key = email.lower()
        if key in kept:
            # The same person signed up twice in different case: the first row (its
            # address as first typed) keeps every alert and every record of what was sent.
            _merge(connection, kept[key], subscriber_id)
            continue
        kept[key] = subscriber_id
        connection.execute(
            sa.text("UPDATE subscriber SET email_key = :key WHERE id = :id"),
            {"key": key, "id": subscriber_id},
        )
    if connection.dialect.name == "postgresql":
        op.alter_column("subscriber", "email_key", server_default=None)
    op.create_index("ix_subscriber_email_key", "subscriber", ["email_key"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_subscriber_email_key", table_name="subscriber")
    op.execute("ALTER TABLE subscriber DROP COLUMN email_key")
