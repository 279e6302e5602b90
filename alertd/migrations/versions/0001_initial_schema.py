"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "digestrun",
        sa.Column("frequency", sa.String(length=16), nullable=False),
        sa.Column("period_start", sa.DateTime(), nullable=False),
        sa.Column("completed_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("frequency", "period_start"),
    )
    op.create_table(
        "feed",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("url", sa.String(length=2000), nullable=False),
        sa.Column("poll_interval_minutes", sa.Integer(), nullable=True),
        sa.Column("etag", sa.String(length=500), nullable=True),
        sa.Column("last_modified", sa.String(length=100), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("disabled_reason", sa.Text(), nullable=True),
        sa.Column("last_poll_at", sa.DateTime(), nullable=True),
        sa.Column("last_ok_at", sa.DateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("seeded", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "member",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("party", sa.String(length=100), nullable=True),
        sa.Column("constituency", sa.String(length=200), nullable=True),
        sa.Column("house", sa.String(length=16), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("member", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_member_name"), ["name"], unique=False)

    op.create_table(
        "membersearch",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("fetched_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "question",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("api_id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=100), nullable=False),
        sa.Column("answer_version", sa.Integer(), nullable=False),
        sa.Column("version_key", sa.String(length=80), nullable=False),
        sa.Column("uin", sa.String(length=32), nullable=False),
        sa.Column("house", sa.String(length=16), nullable=False),
        sa.Column("heading", sa.Text(), nullable=False),
        sa.Column("question_text", sa.Text(), nullable=False),
        sa.Column("answer_html", sa.Text(), nullable=False),
        sa.Column("answer_text", sa.Text(), nullable=False),
        sa.Column("asking_member_id", sa.Integer(), nullable=True),
        sa.Column("asking_member_name", sa.String(length=200), nullable=True),
        sa.Column("asking_member_party", sa.String(length=100), nullable=True),
        sa.Column("asking_member_constituency", sa.String(length=200), nullable=True),
        sa.Column("answering_member_id", sa.Integer(), nullable=True),
        sa.Column("answering_member_name", sa.String(length=200), nullable=True),
        sa.Column("answering_body_id", sa.Integer(), nullable=True),
        sa.Column("answering_body_name", sa.String(length=200), nullable=True),
        sa.Column("date_tabled", sa.Date(), nullable=False),
        sa.Column("date_answered", sa.Date(), nullable=True),
        sa.Column("date_answer_corrected", sa.Date(), nullable=True),
        sa.Column("is_holding", sa.Boolean(), nullable=False),
        sa.Column("is_correction", sa.Boolean(), nullable=False),
        sa.Column("is_withdrawn", sa.Boolean(), nullable=False),
        sa.Column("url", sa.String(length=2000), nullable=False),
        sa.Column("ingested_at", sa.DateTime(), nullable=False),
        sa.Column("matched_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("api_id", "answer_version"),
        sa.UniqueConstraint("api_id", "version_key"),
    )
    with op.batch_alter_table("question", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_question_answering_member_id"), ["answering_member_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_question_api_id"), ["api_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_question_asking_member_id"), ["asking_member_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_question_ingested_at"), ["ingested_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_question_matched_at"), ["matched_at"], unique=False)

    op.create_table(
        "sourcestate",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("high_water", sa.Date(), nullable=True),
        sa.Column("last_poll_at", sa.DateTime(), nullable=True),
        sa.Column("last_ok_at", sa.DateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_new_count", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(length=100), nullable=True),
        sa.Column("lease_until", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "subscriber",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("consecutive_bounces", sa.Integer(), nullable=False),
        sa.Column("suspended_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("email"),
    )
    op.create_table(
        "alert",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=False),
        sa.Column("query", sa.String(length=500), nullable=False),
        sa.Column("canonical", sa.String(length=1000), nullable=False),
        sa.Column("frequency", sa.String(length=16), nullable=False),
        sa.Column("confirmed", sa.Boolean(), nullable=False),
        sa.Column("confirmed_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("last_digest_at", sa.DateTime(), nullable=True),
        sa.Column("unsubscribed_at", sa.DateTime(), nullable=True),
        sa.Column("paused_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscriber.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("alert", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_alert_canonical"), ["canonical"], unique=False)
        batch_op.create_index(batch_op.f("ix_alert_subscriber_id"), ["subscriber_id"], unique=False)

    op.create_table(
        "feedentry",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("feed_id", sa.Integer(), nullable=False),
        sa.Column("uid", sa.String(length=128), nullable=False),
        sa.Column("first_seen_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["feed_id"],
            ["feed.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("feed_id", "uid"),
    )
    with op.batch_alter_table("feedentry", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_feedentry_feed_id"), ["feed_id"], unique=False)

    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=False),
        sa.Column("recipient", sa.String(length=254), nullable=False),
        sa.Column("message_id", sa.String(length=250), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("message", sa.LargeBinary(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(length=100), nullable=True),
        sa.Column("lease_until", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=False),
        sa.Column("sent_at", sa.DateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscriber.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("message_id"),
    )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index("ix_outbox_due", ["status", "next_attempt_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_outbox_subscriber_id"), ["subscriber_id"], unique=False
        )

    op.create_table(
        "hit",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("alert_id", sa.Integer(), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=False),
        sa.Column("question_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("outbox_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["alert_id"],
            ["alert.id"],
        ),
        sa.ForeignKeyConstraint(
            ["outbox_id"],
            ["outbox.id"],
        ),
        sa.ForeignKeyConstraint(
            ["question_id"],
            ["question.id"],
        ),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscriber.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("alert_id", "question_id"),
    )
    with op.batch_alter_table("hit", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_hit_outbox_id"), ["outbox_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_hit_subscriber_id"), ["subscriber_id"], unique=False)

    op.create_table(
        "ledger",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=False),
        sa.Column("api_id", sa.Integer(), nullable=False),
        sa.Column("answer_version", sa.Integer(), nullable=False),
        sa.Column("question_id", sa.Integer(), nullable=False),
        sa.Column("outbox_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["outbox_id"],
            ["outbox.id"],
        ),
        sa.ForeignKeyConstraint(
            ["question_id"],
            ["question.id"],
        ),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscriber.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("subscriber_id", "api_id", "answer_version"),
    )
    with op.batch_alter_table("ledger", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ledger_outbox_id"), ["outbox_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("ledger", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ledger_outbox_id"))

    op.drop_table("ledger")
    with op.batch_alter_table("hit", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_hit_subscriber_id"))
        batch_op.drop_index(batch_op.f("ix_hit_outbox_id"))

    op.drop_table("hit")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outbox_subscriber_id"))
        batch_op.drop_index("ix_outbox_due")

    op.drop_table("outbox")
    with op.batch_alter_table("feedentry", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_feedentry_feed_id"))

    op.drop_table("feedentry")
    with op.batch_alter_table("alert", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_alert_subscriber_id"))
        batch_op.drop_index(batch_op.f("ix_alert_canonical"))

    op.drop_table("alert")
    op.drop_table("subscriber")
    op.drop_table("sourcestate")
    with op.batch_alter_table("question", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_question_matched_at"))
        batch_op.drop_index(batch_op.f("ix_question_ingested_at"))
        batch_op.drop_index(batch_op.f("ix_question_asking_member_id"))
        batch_op.drop_index(batch_op.f("ix_question_api_id"))
        batch_op.drop_index(batch_op.f("ix_question_answering_member_id"))

    op.drop_table("question")
    op.drop_table("membersearch")
    with op.batch_alter_table("member", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_member_name"))

    op.drop_table("member")
    op.drop_table("feed")
    op.drop_table("digestrun")
