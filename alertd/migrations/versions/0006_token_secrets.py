"""token secrets: a random link secret per subscriber; SQLite ids of subscriber and alert
never reused (AUTOINCREMENT)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

import re
import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = ("subscriber", "alert")
_BATCH = 1000


def upgrade() -> None:
    bind = op.get_bind()
    with op.batch_alter_table("subscriber") as batch:
        batch.add_column(sa.Column("link_secret", sa.String(length=64), nullable=True))
    subscriber = sa.table("subscriber", sa.column("id"), sa.column("link_secret"))
    ids = [row[0] for row in bind.execute(sa.select(subscriber.c.id))]
    for start in range(0, len(ids), _BATCH):
        # Each row its own random secret: links made before this release stop working.
        bind.execute(
            subscriber.update()
            .where(subscriber.c.id == sa.bindparam("row_id"))
            .values(link_secret=sa.bindparam("secret")),
            [
                {"row_id": row_id, "secret": secrets.token_urlsafe(24)}
                for row_id in ids[start : start + _BATCH]
            ],
        )
    if bind.dialect.name == "sqlite":
        _sqlite_rebuild(bind, autoincrement=True)
    else:
        op.alter_column("subscriber", "link_secret", nullable=False)


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        _sqlite_rebuild(bind, autoincrement=False)
    # Native DROP COLUMN (SQLite ≥ 3.35 too): a batch copy would meet the foreign keys.
    op.execute("ALTER TABLE subscriber DROP COLUMN link_secret")


def _sqlite_rebuild(bind: sa.Connection, *, autoincrement: bool) -> None:
    """Copy subscriber and alert into tables declared with(out) AUTOINCREMENT.

    SQLite's documented way (ALTER TABLE, "other kinds of table schema changes"): foreign
    keys off, which cannot change inside a transaction, so Alembic's is committed first
    (the earlier revisions are done) and this one runs in its own.
    """
    raw = bind.connection.dbapi_connection
    assert raw is not None
    raw.execute("COMMIT")
    raw.execute("PRAGMA foreign_keys=OFF")
    try:
        raw.execute("BEGIN IMMEDIATE")
        for name in _TABLES:
            _rebuild_table(raw, name, autoincrement)
        problems = raw.execute("PRAGMA foreign_key_check").fetchall()
        if problems:
            raise RuntimeError(f"foreign key check failed after the rebuild: {problems[:5]}")
        raw.execute("COMMIT")
    except BaseException:
        raw.execute("ROLLBACK")
        raise
    finally:
        raw.execute("PRAGMA foreign_keys=ON")
        raw.execute("BEGIN")  # Alembic records the revision and commits


def _rebuild_table(raw: object, name: str, autoincrement: bool) -> None:
    execute = raw.execute  # type: ignore[attr-defined]
    (table_sql,) = execute(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
    ).fetchone()
    indexes = [
        row[0]
        for row in execute(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? "
            "AND sql IS NOT NULL",
            (name,),
        )
    ]
    plain, growing = "id INTEGER NOT NULL,", "id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,"
    if autoincrement:
        new_sql, made = re.subn(re.escape(plain), growing, table_sql, count=1)
        # The table constraint goes, wherever it stands among the others.
        new_sql, moved = re.subn(r"\s*PRIMARY KEY \(id\),", "", new_sql, count=1)
        if not moved:
            new_sql, moved = re.subn(r",\s*PRIMARY KEY \(id\)(?=\s*\)\s*$)", "", new_sql)
        # The secrets are filled in: from now on every row has one.
        new_sql = new_sql.replace("link_secret VARCHAR(64)", "link_secret VARCHAR(64) NOT NULL")
    else:
        new_sql, made = re.subn(re.escape(growing), plain, table_sql, count=1)
        new_sql, moved = re.subn(r"\s*\)\s*$", ",\n\tPRIMARY KEY (id)\n)", new_sql, count=1)
    if not (made and moved):
        raise RuntimeError(f"unexpected schema of table {name}: {table_sql}")
    temporary = f"_new_{name}"
    created = re.sub(rf'^CREATE TABLE "?{name}"? \(', f"CREATE TABLE {temporary} (", new_sql)
    execute(created)
    columns = ", ".join(f'"{row[1]}"' for row in execute(f"PRAGMA table_info({name})"))
    execute(f"INSERT INTO {temporary} ({columns}) SELECT {columns} FROM {name}")
    execute(f"DROP TABLE {name}")
    execute(f"ALTER TABLE {temporary} RENAME TO {name}")
    for index_sql in indexes:
        execute(index_sql)
