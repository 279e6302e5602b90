"""Database: migrations build exactly the models' schema, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

from alertd.config import DatabaseSettings
from alertd.db import alembic_config, create_db_engine, open_database, upgrade
from alertd.errors import ConfigError, DatabaseUnavailable
from alertd.matching.history import outside_models
from alertd.revisions import head_revision

# Migrations and start-up on new databases: these migrate for real, never from a template.
pytestmark = pytest.mark.migrations


def _schema_drift(engine: Engine) -> list[object]:
    with engine.connect() as connection:
        opts = {
            "compare_type": True,
            "include_name": lambda name, kind, parents: not outside_models(name, kind, parents),
        }
        context = MigrationContext.configure(connection, opts=opts)
        return list(compare_metadata(context, SQLModel.metadata))


def test_migrations_match_models(db_engine: Engine) -> None:
    assert _schema_drift(db_engine) == []


def test_upgrade_twice_is_a_no_op(db_engine: Engine) -> None:
    upgrade(db_engine)
    assert _schema_drift(db_engine) == []


def test_the_head_read_without_alembic_is_alembics_head(db_engine: Engine) -> None:
    assert (
        head_revision() == ScriptDirectory.from_config(alembic_config(db_engine)).get_current_head()
    )


def test_a_database_behind_the_head_is_upgraded_on_open(database_url: str) -> None:
    engine = create_db_engine(DatabaseSettings(url=database_url))
    command.upgrade(alembic_config(engine), "0001")
    engine.dispose()
    engine = open_database(DatabaseSettings(url=database_url))
    with engine.connect() as connection:
        version = connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    assert version == head_revision() and _schema_drift(engine) == []
    engine.dispose()


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    engine = open_database(DatabaseSettings(url=f"sqlite:///{tmp_path}/a.db"))
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    engine.dispose()


def test_a_mistyped_sqlite_folder_is_refused_not_created(tmp_path: Path) -> None:
    code, err = _finish(_alertd(["db", "upgrade"], f"sqlite:///{tmp_path}/new/dir/a.db"))
    assert code == 2 and "the folder" in err and "does not exist" in err
    assert not (tmp_path / "new").exists()


def test_a_sqlite_path_under_the_home_folder_is_opened_there(tmp_path: Path) -> None:
    # "~" is the home folder, as in a shell, not a folder named "~" under the current one.
    env = {**os.environ, "HOME": str(tmp_path)}
    process = subprocess.run(
        [sys.executable, "-m", "alertd", "db", "upgrade"],
        env={**env, "ALERTD_DATABASE__URL": "sqlite:///~/alertd.db"},
        cwd=tmp_path.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert process.returncode == 0, process.stderr
    with sqlite3.connect(tmp_path / "alertd.db") as connection:
        (version,) = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    connection.close()
    assert version == head_revision()


def _alertd(args: list[str], database_url: str) -> subprocess.Popen[str]:
    env = {**os.environ, "ALERTD_DATABASE__URL": database_url}
    return subprocess.Popen(
        [sys.executable, "-m", "alertd", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    _, err = process.communicate(timeout=120)
    return process.returncode, err


@pytest.mark.slow
def test_eight_processes_migrate_a_fresh_database_at_once(database_url: str) -> None:
    # Half upgrade, half subscribe: each opens (and so migrates) the database first.
    processes = [
        _alertd(["db", "upgrade"], database_url)
        if n % 2
        else _alertd(["subscribe", f"r{n}@example.org", "schools", "--confirmed"], database_url)
        for n in range(8)
    ]
    outcomes = [_finish(p) for p in processes]
    assert [code for code, _ in outcomes] == [0] * 8, outcomes
    engine = create_db_engine(DatabaseSettings(url=database_url))
    assert _schema_drift(engine) == []
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM subscriber").scalar() == 4
    engine.dispose()


@pytest.mark.parametrize(
    "where",
    [
        "sqlite:///{tmp_path}/blocked/alertd.db",  # a file where its folder should be
        "sqlite:///{tmp_path}/folder",  # a folder where the database should be
        "postgresql+psycopg://postgres@127.0.0.1:1/alertd",  # nothing listens there
    ],
)
def test_a_database_that_cannot_be_opened_is_one_line(tmp_path: Path, where: str) -> None:
    (tmp_path / "blocked").write_text("")
    (tmp_path / "folder").mkdir()
    code, err = _finish(_alertd(["db", "upgrade"], where.format(tmp_path=tmp_path)))
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert err.startswith("alertd: error: ") and "Traceback" not in err


def test_an_unreachable_database_is_unavailable_and_a_foreign_one_a_config_error(
    tmp_path: Path,
) -> None:
    (tmp_path / "folder").mkdir()
    (tmp_path / "text").write_bytes(b"not a database, but a text file " * 100)
    for unreachable in (
        "postgresql+psycopg://postgres@127.0.0.1:1/alertd",  # nothing listens there
        f"sqlite:///{tmp_path}/folder",  # a folder where the database should be
    ):
        with pytest.raises(DatabaseUnavailable, match="cannot migrate database"):
            open_database(DatabaseSettings(url=unreachable))
    # Reached, but no database alertd can migrate: retrying will not help.
    with pytest.raises(ConfigError, match="file is not a database"):
        open_database(DatabaseSettings(url=f"sqlite:///{tmp_path}/text"))


def test_a_database_error_mid_command_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path}/alertd.db"
    open_database(DatabaseSettings(url=url)).dispose()
    # Another process holds the write lock for longer than the busy timeout.
    holder = sqlite3.connect(tmp_path / "alertd.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        monkeypatch.setenv("ALERTD_DATABASE__BUSY_TIMEOUT_MS", "200")
        code, err = _finish(_alertd(["subscribe", "a@example.org", "schools"], url))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert code == 1
    assert err == "alertd: error: database error: database is locked\n", err


def test_a_database_from_a_newer_alertd_is_one_line(tmp_path: Path) -> None:
    # After a rollback: the database is at a migration this version does not know.
    url = f"sqlite:///{tmp_path}/alertd.db"
    open_database(DatabaseSettings(url=url)).dispose()
    with sqlite3.connect(tmp_path / "alertd.db") as connection:
        connection.execute("UPDATE alembic_version SET version_num = '0099'")
    code, err = _finish(_alertd(["list"], url))
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert "newer version of alertd" in err and "Traceback" not in err
