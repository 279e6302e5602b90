"""one item model: columns every kind fills, kind-specific details in JSON

Every kind of business fills the same columns: title, body (text and HTML), secondary text,
the Members involved with their roles (JSON), department, House, day, correction day, link;
its stage is a column, what only its kind has goes to ``details`` (JSON); a source marks an
item that must never alert (``never_alert``). Row ids do not change: hits, the ledger and
the index keep pointing at the same items, and what was matched stays matched.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-08
"""

from collections.abc import Iterator, Sequence
from datetime import date
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_RENAMED = {
    "heading": "title",
    "answer_text": "body_text",
    "answer_html": "body_html",
    "question_text": "secondary_text",
    "date_answered": "day",
    "date_answer_corrected": "corrected_on",
}


def _old_columns() -> list[sa.Column[Any]]:
    """The columns of 0011 that only one kind used: now members, details, stage, never_alert."""
    return [
        sa.Column("uin", sa.String(32), nullable=True),
        sa.Column("asking_member_id", sa.Integer(), nullable=True),
        sa.Column("asking_member_name", sa.String(200), nullable=True),
        sa.Column("asking_member_party", sa.String(100), nullable=True),
        sa.Column("asking_member_constituency", sa.String(200), nullable=True),
        sa.Column("answering_member_id", sa.Integer(), nullable=True),
        sa.Column("answering_member_name", sa.String(200), nullable=True),
        sa.Column("date_tabled", sa.Date(), nullable=True),
        sa.Column("is_holding", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("is_withdrawn", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("date_for_answer", sa.Date(), nullable=True),
        sa.Column("is_named_day", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("grouped_uins", sa.String(2000), nullable=False, server_default=""),
        sa.Column("answering_member_role", sa.String(300), nullable=True),
        sa.Column("attachments", sa.JSON(), nullable=True),
        sa.Column("linked_statements", sa.JSON(), nullable=True),
    ]


_OLD_INDEXES = ("asking_member_id", "answering_member_id")


def _new_columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("stage", sa.String(32), nullable=False, server_default=""),
        sa.Column("members", sa.JSON(), nullable=False, server_default=sa.text("'[]'")),
        sa.Column("details", sa.JSON(), nullable=False, server_default=sa.text("'{}'")),
        sa.Column("never_alert", sa.Boolean(), nullable=False, server_default=sa.false()),
    ]


_BATCH = 500


def _table(*columns: sa.Column[Any]) -> sa.Table:
    return sa.Table(
        "item",
        sa.MetaData(),
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("kind", sa.String(32)),
        sa.Column("version_key", sa.String(80)),
        *(sa.Column(c.name, c.type) for c in columns),
    )


def _batches(table: sa.Table) -> Iterator[list[sa.Row[Any]]]:
    connection = op.get_bind()
    last_id = 0
    while True:
        rows = connection.execute(
            sa.select(table).where(table.c.id > last_id).order_by(table.c.id).limit(_BATCH)
        ).all()
        if not rows:
            return
        yield list(rows)
        last_id = rows[-1].id


def _iso(day: date | None) -> str | None:
    return None if day is None else day.isoformat()


def _day(text: Any) -> date | None:
    return date.fromisoformat(text) if text else None


def _stage(row: sa.Row[Any]) -> str:
    if row.kind == "statement":
        return "made"
    if row.kind == "feed_item":
        return "published"
    # A written question: its version key's prefix ("answer:2021-02-01:-").
    return str(row.version_key).partition(":")[0]


def _member(role: str, member_id: int | None, name: str | None, **more: Any) -> list[Any]:
    if member_id is None:
        return []
    return [{"role": role, "id": member_id, "name": name, **more}]


def _new_values(row: sa.Row[Any]) -> dict[str, Any]:
    answerer = _member(
        "answerer",
        row.answering_member_id,
        row.answering_member_name,
        party=None,
        constituency=None,
    )
    members: list[Any] = []
    details: dict[str, Any] = {}
    if row.kind == "written_question":
        asker = _member(
            "asker",
            row.asking_member_id,
            row.asking_member_name,
            party=row.asking_member_party,
            constituency=row.asking_member_constituency,
        )
        members = asker + answerer
        details = {
            "uin": row.uin or "",
            "date_tabled": _iso(row.date_tabled) or "",
            "date_for_answer": _iso(row.date_for_answer),
            "is_named_day": bool(row.is_named_day),
            "grouped_uins": (row.grouped_uins or "").split(),
        }
    elif row.kind == "statement":
        members = answerer
        details = {
            "uin": row.uin or "",
            "role": row.answering_member_role,
            "attachments": row.attachments or [],
            "linked_statements": row.linked_statements or [],
        }
    return {
        "b_id": row.id,
        "stage": _stage(row),
        "members": members,
        "details": details,
        # Holding answers were stored matched already; they stay never alerted.
        "never_alert": bool(row.is_holding),
    }


def upgrade() -> None:
    op.drop_index("ix_item_date_answered", table_name="item")
    for old_name, new_name in _RENAMED.items():
        op.execute(f"ALTER TABLE item RENAME COLUMN {old_name} TO {new_name}")
    op.create_index("ix_item_day", "item", ["day"])
    for column in _new_columns():
        op.add_column("item", column)
    old = _table(*_old_columns())
    new = _table(*_new_columns())
    update = (
        sa.update(new)
        .where(new.c.id == sa.bindparam("b_id"))
        .values({c.name: sa.bindparam(c.name) for c in _new_columns()})
    )
    connection = op.get_bind()
    for rows in _batches(old):
        connection.execute(update, [_new_values(row) for row in rows])
    for name in _OLD_INDEXES:
        op.drop_index(f"ix_item_{name}", table_name="item")
    # Native DROP COLUMN: a batch copy of item would fail under SQLite's foreign_keys=ON,
    # as hit and ledger rows point at it (see 0002).
    for column in _old_columns():
        op.drop_column("item", column.name)


def _old_values(row: sa.Row[Any]) -> dict[str, Any]:
    members = {member["role"]: member for member in row.members or []}
    asker, answerer = members.get("asker", {}), members.get("answerer", {})
    details = row.details or {}
    return {
        "b_id": row.id,
        "uin": details.get("uin") or None,
        "asking_member_id": asker.get("id"),
        "asking_member_name": asker.get("name"),
        "asking_member_party": asker.get("party"),
        "asking_member_constituency": asker.get("constituency"),
        "answering_member_id": answerer.get("id"),
        "answering_member_name": answerer.get("name"),
        "date_tabled": _day(details.get("date_tabled")),
        "is_holding": row.stage == "holding",
        "is_withdrawn": row.stage == "withdrawn",
        "date_for_answer": _day(details.get("date_for_answer")),
        "is_named_day": bool(details.get("is_named_day")),
        "grouped_uins": " ".join(details.get("grouped_uins") or [])[:2000],
        "answering_member_role": details.get("role"),
        "attachments": details.get("attachments") if row.kind == "statement" else None,
        "linked_statements": details.get("linked_statements") if row.kind == "statement" else None,
    }


def downgrade() -> None:
    for column in _old_columns():
        op.add_column("item", column)
    for name in _OLD_INDEXES:
        op.create_index(f"ix_item_{name}", "item", [name])
    old = _table(*_old_columns())
    new = _table(*_new_columns())
    update = (
        sa.update(old)
        .where(old.c.id == sa.bindparam("b_id"))
        .values({c.name: sa.bindparam(c.name) for c in _old_columns()})
    )
    connection = op.get_bind()
    for rows in _batches(new):
        connection.execute(update, [_old_values(row) for row in rows])
    for column in _new_columns():
        op.drop_column("item", column.name)
    op.drop_index("ix_item_day", table_name="item")
    for old_name, new_name in _RENAMED.items():
        op.execute(f"ALTER TABLE item RENAME COLUMN {new_name} TO {old_name}")
    op.create_index("ix_item_date_answered", "item", ["date_answered"])
