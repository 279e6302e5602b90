"""a feed's state as one column; the days a backfill loaded in their own table

A feed was enabled or not, with "removed" as the reason of a removal: now ``state`` is
active, gone (410) or removed. A backfill recorded each day done as a poll-state row named
"parliament-backfill:YYYY-MM-DD": now a ``backfillday`` row (source, day).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-08
"""

from collections.abc import Sequence
from datetime import UTC, date, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BACKFILL = "-backfill:"


def upgrade() -> None:
    op.add_column(
        "feed", sa.Column("state", sa.String(16), nullable=False, server_default="active")
    )
    op.execute(
        "UPDATE feed SET state = 'removed', disabled_reason = NULL "
        "WHERE disabled_reason = 'removed'"
    )
    op.execute("UPDATE feed SET state = 'gone' WHERE NOT enabled AND state = 'active'")
    # Native DROP COLUMN, as 0002 does: a batch copy of feed is not needed for one column.
    op.drop_column("feed", "enabled")
    days = op.create_table(
        "backfillday",
        sa.Column("source", sa.String(100), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("stored", sa.Integer(), nullable=False),
        sa.Column("done_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("source", "day"),
    )
    assert days is not None
    connection = op.get_bind()
    state = sa.table(
        "sourcestate",
        sa.column("name", sa.String),
        sa.column("last_new_count", sa.Integer),
        sa.column("last_ok_at", sa.DateTime),
        sa.column("last_poll_at", sa.DateTime),
    )
    done = connection.execute(sa.select(state).where(state.c.name.like(f"%{_BACKFILL}%"))).all()
    rows = []
    for row in done:
        source, _, day = row.name.partition(_BACKFILL)
        rows.append(
            {
                "source": source,
                "day": date.fromisoformat(day),
                "stored": row.last_new_count or 0,
                # A day done was recorded as a good poll; its time, else when this ran.
                "done_at": row.last_ok_at or row.last_poll_at or _utc_now(),
            }
        )
    if rows:
        connection.execute(days.insert(), rows)
        connection.execute(sa.delete(state).where(state.c.name.like(f"%{_BACKFILL}%")))


def _utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def downgrade() -> None:
    connection = op.get_bind()
    days = sa.table(
        "backfillday",
        sa.column("source", sa.String),
        sa.column("day", sa.Date),
        sa.column("stored", sa.Integer),
        sa.column("done_at", sa.DateTime),
    )
    state = sa.table(
        "sourcestate",
        sa.column("name", sa.String),
        sa.column("high_water", sa.Date),
        sa.column("last_poll_at", sa.DateTime),
        sa.column("last_ok_at", sa.DateTime),
        sa.column("last_new_count", sa.Integer),
    )
    rows = [
        {
            "name": f"{row.source}{_BACKFILL}{row.day.isoformat()}",
            "high_water": row.day,
            "last_poll_at": row.done_at,
            "last_ok_at": row.done_at,
            "last_new_count": row.stored,
        }
        for row in connection.execute(sa.select(days)).all()
    ]
    if rows:
        connection.execute(state.insert(), rows)
    op.drop_table("backfillday")
    op.add_column(
        "feed", sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true())
    )
    op.execute("UPDATE feed SET enabled = false WHERE state <> 'active'")
    op.execute("UPDATE feed SET disabled_reason = 'removed' WHERE state = 'removed'")
    op.drop_column("feed", "state")
