"""items: one item table for every source; SourceState the only poll state

Questions become items identified by (source, source_id, version); feed items get their
own source and id instead of negative question ids (FeedEntry goes: its items are items);
hits and the ledger point at items; feeds' poll state moves into SourceState.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Columns an answer keeps as they were (question → item).
_KEPT = (
    "heading, question_text, answer_html, answer_text, url, "
    "asking_member_id, asking_member_name, asking_member_party, asking_member_constituency, "
    "answering_member_id, answering_member_name, answering_body_id, answering_body_name, "
    "date_answer_corrected, is_holding, is_withdrawn, date_answered, ingested_at, matched_at"
)
_PARLIAMENT_ONLY = "uin, house, date_tabled"


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    _create_item()
    _copy_questions()
    if postgres:
        _pg_restart_sequence("item")
    _copy_unqueried_feed_entries()
    _rebuild_hit(postgres)
    _rebuild_ledger(postgres)
    op.drop_table("question")
    op.drop_table("feedentry")
    _move_feed_poll_state()
    # Native DROP COLUMN (SQLite ≥ 3.35 too): a batch copy of alert or feed would delete
    # their rows under foreign_keys=ON, which a migration's transaction cannot turn off.
    for column in ("last_poll_at", "last_ok_at", "last_error", "seeded"):
        op.execute(f"ALTER TABLE feed DROP COLUMN {column}")
    op.execute("ALTER TABLE alert DROP COLUMN last_digest_at")


def _create_item() -> None:
    op.create_table(
        "item",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("source", sa.String(length=100), nullable=False),
        sa.Column("source_id", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("version_key", sa.String(length=80), nullable=False),
        sa.Column("heading", sa.Text(), nullable=False),
        sa.Column("question_text", sa.Text(), nullable=False),
        sa.Column("answer_html", sa.Text(), nullable=False),
        sa.Column("answer_text", sa.Text(), nullable=False),
        sa.Column("url", sa.String(length=2000), nullable=False),
        sa.Column("uin", sa.String(length=32), nullable=True),
        sa.Column("house", sa.String(length=16), nullable=True),
        sa.Column("asking_member_id", sa.Integer(), nullable=True),
        sa.Column("asking_member_name", sa.String(length=200), nullable=True),
        sa.Column("asking_member_party", sa.String(length=100), nullable=True),
        sa.Column("asking_member_constituency", sa.String(length=200), nullable=True),
        sa.Column("answering_member_id", sa.Integer(), nullable=True),
        sa.Column("answering_member_name", sa.String(length=200), nullable=True),
        sa.Column("answering_body_id", sa.Integer(), nullable=True),
        sa.Column("answering_body_name", sa.String(length=200), nullable=True),
        sa.Column("date_tabled", sa.Date(), nullable=True),
        sa.Column("date_answer_corrected", sa.Date(), nullable=True),
        sa.Column("is_holding", sa.Boolean(), nullable=False),
        sa.Column("is_withdrawn", sa.Boolean(), nullable=False),
        sa.Column("date_answered", sa.Date(), nullable=True),
        sa.Column("published_at", sa.DateTime(), nullable=True),
        sa.Column("ingested_at", sa.DateTime(), nullable=False),
        sa.Column("matched_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("source", "source_id", "version"),
        sa.UniqueConstraint("source", "source_id", "version_key"),
    )
    for column in ("answering_member_id", "asking_member_id", "ingested_at", "matched_at"):
        op.create_index(f"ix_item_{column}", "item", [column], unique=False)


def _copy_questions() -> None:
    """Every question row becomes the item with the same id, so hits and ledger rows keep
    pointing at it; a feed's (negative api_id = -FeedEntry.id) gets its feed and entry uid."""
    op.execute(
        f"INSERT INTO item (id, kind, source, source_id, version, version_key, "
        f"{_PARLIAMENT_ONLY}, {_KEPT}) "
        f"SELECT id, 'written_question', source, CAST(api_id AS VARCHAR(20)), answer_version, "
        f"version_key, {_PARLIAMENT_ONLY}, {_KEPT} FROM question WHERE api_id >= 0"
    )
    feed_kept = ", ".join(f"q.{column.strip()}" for column in _KEPT.split(","))
    op.execute(
        f"INSERT INTO item (id, kind, source, source_id, version, version_key, {_KEPT}) "
        "SELECT q.id, 'feed_item', 'feed:' || COALESCE(f.name, q.source), "
        "COALESCE(e.uid, 'entry:' || CAST(-q.api_id AS VARCHAR(20))), 1, 'feed', "
        f"{feed_kept} FROM question q "
        "LEFT JOIN feedentry e ON e.id = -q.api_id LEFT JOIN feed f ON f.id = e.feed_id "
        "WHERE q.api_id < 0"
    )


def _copy_unqueried_feed_entries() -> None:
    """Entries seen without an item (none are expected) stay known, so are never alerted."""
    op.execute(
        "INSERT INTO item (kind, source, source_id, version, version_key, heading, "
        "question_text, answer_html, answer_text, url, is_holding, is_withdrawn, "
        "ingested_at, matched_at) "
        "SELECT 'feed_item', 'feed:' || f.name, e.uid, 1, 'feed', '', '', '', '', '', "
        "false, false, e.first_seen_at, e.first_seen_at "
        "FROM feedentry e JOIN feed f ON f.id = e.feed_id "
        "WHERE NOT EXISTS (SELECT 1 FROM question q WHERE q.api_id = -e.id)"
    )


def _rebuild_hit(postgres: bool) -> None:
    op.create_table(
        "hit_new",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("alert_id", sa.Integer(), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("outbox_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["alert_id"], ["alert.id"]),
        sa.ForeignKeyConstraint(["item_id"], ["item.id"]),
        sa.ForeignKeyConstraint(["outbox_id"], ["outbox.id"]),
        sa.ForeignKeyConstraint(["subscriber_id"], ["subscriber.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("alert_id", "item_id"),
    )
    op.execute(
        "INSERT INTO hit_new (id, alert_id, subscriber_id, item_id, created_at, outbox_id) "
        "SELECT id, alert_id, subscriber_id, question_id, created_at, outbox_id FROM hit"
    )
    _replace("hit", postgres)
    op.create_index("ix_hit_outbox_id", "hit", ["outbox_id"], unique=False)
    op.create_index("ix_hit_subscriber_id", "hit", ["subscriber_id"], unique=False)


def _rebuild_ledger(postgres: bool) -> None:
    op.create_table(
        "ledger_new",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=100), nullable=False),
        sa.Column("source_id", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("outbox_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["item_id"], ["item.id"]),
        sa.ForeignKeyConstraint(["outbox_id"], ["outbox.id"]),
        sa.ForeignKeyConstraint(["subscriber_id"], ["subscriber.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("subscriber_id", "source", "source_id", "version"),
    )
    # The ledger's (api_id, answer_version) is its question's: the item carries both on.
    op.execute(
        "INSERT INTO ledger_new "
        "(id, subscriber_id, source, source_id, version, item_id, outbox_id, created_at) "
        "SELECT l.id, l.subscriber_id, i.source, i.source_id, i.version, l.question_id, "
        "l.outbox_id, l.created_at FROM ledger l JOIN item i ON i.id = l.question_id"
    )
    _replace("ledger", postgres)
    op.create_index("ix_ledger_outbox_id", "ledger", ["outbox_id"], unique=False)


def _replace(table: str, postgres: bool) -> None:
    """Drop ``table`` and give ``table``_new its name (and, on PostgreSQL, its names)."""
    op.drop_table(table)
    op.rename_table(f"{table}_new", table)
    if not postgres:
        return
    bind = op.get_bind()
    names = bind.execute(
        sa.text("SELECT conname FROM pg_constraint WHERE conrelid = CAST(:t AS regclass)"),
        {"t": table},
    ).scalars()
    prefix = f"{table}_new_"
    for name in list(names):
        if name.startswith(prefix):
            renamed = f"{table}_{name.removeprefix(prefix)}"
            op.execute(f'ALTER TABLE {table} RENAME CONSTRAINT "{name}" TO "{renamed}"')
    op.execute(f"ALTER SEQUENCE {table}_new_id_seq RENAME TO {table}_id_seq")
    _pg_restart_sequence(table)


def _pg_restart_sequence(table: str) -> None:
    # Rows were copied with their ids: the next id is past the largest.
    op.execute(
        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
        f"COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)"
    )


def _move_feed_poll_state() -> None:
    """Each feed's last poll/ok/error joins its SourceState ("feed:<name>"), the later wins."""
    feed = sa.table(
        "feed",
        sa.column("name", sa.String),
        sa.column("last_poll_at", sa.DateTime),
        sa.column("last_ok_at", sa.DateTime),
        sa.column("last_error", sa.Text),
        sa.column("seeded", sa.Boolean),
    )
    state = sa.table(
        "sourcestate",
        sa.column("name", sa.String),
        sa.column("last_poll_at", sa.DateTime),
        sa.column("last_ok_at", sa.DateTime),
        sa.column("last_error", sa.Text),
        sa.column("last_new_count", sa.Integer),
    )
    bind = op.get_bind()
    for row in bind.execute(sa.select(feed)).all():
        name = f"feed:{row.name}"
        # A seeded feed had a good fetch, which is what seeding now reads.
        ok_at = row.last_ok_at or (row.last_poll_at if row.seeded else None)
        known = bind.execute(sa.select(state).where(state.c.name == name)).first()
        if known is None:
            if row.last_poll_at is not None or ok_at is not None:
                bind.execute(
                    sa.insert(state).values(
                        name=name,
                        last_poll_at=row.last_poll_at,
                        last_ok_at=ok_at,
                        last_error=row.last_error,
                        last_new_count=0,
                    )
                )
            continue
        values: dict[str, object] = {}
        if row.last_poll_at is not None and (
            known.last_poll_at is None or row.last_poll_at > known.last_poll_at
        ):
            values.update(last_poll_at=row.last_poll_at, last_error=row.last_error)
        if ok_at is not None and (known.last_ok_at is None or ok_at > known.last_ok_at):
            values["last_ok_at"] = ok_at
        if values:
            bind.execute(sa.update(state).where(state.c.name == name).values(**values))


def downgrade() -> None:
    raise NotImplementedError(
        "0002 does not downgrade: feed items have no question form to go back to; "
        "restore the backup taken before upgrading"
    )
