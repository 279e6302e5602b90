"""Database: migrations build exactly the models' schema, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

from alertd.config import DatabaseSettings
from alertd.db import create_db_engine, open_database, upgrade


def _schema_drift(engine: Engine) -> list[object]:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, SQLModel.metadata))


def test_migrations_match_models(db_engine: Engine) -> None:
    assert _schema_drift(db_engine) == []


def test_upgrade_twice_is_a_no_op(db_engine: Engine) -> None:
    upgrade(db_engine)
    assert _schema_drift(db_engine) == []


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    engine = open_database(DatabaseSettings(url=f"sqlite:///{tmp_path}/a.db"))
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    engine.dispose()


def test_sqlite_folder_is_created(tmp_path: Path) -> None:
    engine = create_db_engine(DatabaseSettings(url=f"sqlite:///{tmp_path}/new/dir/a.db"))
    with engine.connect() as connection:
        assert connection.execute(sa.text("select 1")).scalar() == 1
    engine.dispose()
