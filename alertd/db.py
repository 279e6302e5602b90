"""The database: engine set-up (SQLite pragmas or PostgreSQL) and Alembic migrations."""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from alertd.config import DatabaseSettings
from alertd.errors import ConfigError, DatabaseUnavailable
from alertd.redact import redact
from alertd.revisions import MIGRATIONS_DIR, head_revision

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig
    from sqlmodel import Session

log = logging.getLogger("alertd.db")
WRITE_OPTION = "alertd_writes"
# Any fixed number: the PostgreSQL advisory lock that lets one process at a time migrate.
MIGRATION_LOCK_KEY = 0x616C657274


def create_db_engine(settings: DatabaseSettings) -> Engine:
    """Create the engine; on SQLite turn on WAL, a busy timeout and foreign keys.

    Raises:
        ConfigError: the SQLite database's folder does not exist.
    """
    url = sa.make_url(settings.url)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    if url.get_backend_name() != "sqlite":
        return sa.create_engine(url, pool_pre_ping=True)
    if url.database and url.database != ":memory:":
        path = Path(url.database)  # ~ is written out already (DatabaseSettings)
        # A mistyped path must not quietly become a new, empty database in new folders.
        folder = path.parent
        if not folder.is_dir():
            raise ConfigError(
                f"database.url: the folder {folder} does not exist (create it, or fix the path)"
            )
        _create_private(path)
    engine = sa.create_engine(url, connect_args={"timeout": settings.busy_timeout_ms / 1000})
    busy_timeout_ms = settings.busy_timeout_ms

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, decide when transactions begin (pysqlite's own
        # BEGIN handling breaks SAVEPOINT and delays locking in surprising ways).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        # Writing transactions take the write lock up front: a deferred one that read first
        # could not upgrade after another process wrote (SQLITE_BUSY, with no waiting).
        writing = connection.get_execution_options().get(WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if writing else "BEGIN")

    return engine


def _create_private(path: Path) -> None:
    """Create the SQLite file readable by its owner only (0600): it holds addresses and link
    secrets. SQLite gives its -wal and -shm files the mode of the database file. An existing
    file is left as it is; its folder must exist (a mistyped path is refused, not created).

    Raises:
        ConfigError: the file cannot be created.
    """
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        pass
    except OSError as exc:
        raise ConfigError(f"cannot create the database file {path}: {exc}") from exc


def alembic_config(engine: Engine) -> AlembicConfig:
    from alembic.config import Config as AlembicConfig

    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    return config


def describe_error(exc: SQLAlchemyError) -> str:
    """One line for a database error: the driver's message, without SQLAlchemy's SQL dump."""
    cause = exc.orig if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None else exc
    lines = redact(str(cause)).strip().splitlines()
    return lines[0] if lines else type(cause).__name__


@contextmanager
def migration_lock(engine: Engine) -> Iterator[None]:
    """Held by one process at a time around the upgrade, so processes started together on a
    fresh database do not race to create the same tables.

    SQLite: an exclusive lock on a file beside the database (its own write lock cannot be
    held across Alembic's several transactions). PostgreSQL: a session advisory lock.
    """
    if is_postgres(engine):
        with engine.connect() as connection:
            connection.execute(sa.select(sa.func.pg_advisory_lock(MIGRATION_LOCK_KEY)))
            connection.commit()
            try:
                yield
            finally:
                connection.execute(sa.select(sa.func.pg_advisory_unlock(MIGRATION_LOCK_KEY)))
                connection.commit()
        return
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    path = Path(database)
    lock_path = path.with_name(path.name + ".migrate-lock")
    with open(os.open(lock_path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600), "a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)  # released when the file closes
        yield


def upgrade(engine: Engine) -> None:
    """Apply every Alembic migration not yet applied (a no-op when up to date), then index
    the stored items the index lacks.

    Raises:
        DatabaseUnavailable: the database cannot be reached (or its lock file made).
        ConfigError: the database cannot be migrated (made by a newer alertd, not a database).
    """
    from alembic import command
    from alembic.util import CommandError

    from alertd.matching.history import index_missing

    try:
        with migration_lock(engine):
            command.upgrade(alembic_config(engine), "head")
            # The index of stored items is derived data: what a migration left unindexed
            # (a new index table, items moved) is indexed by the code that knows the kinds.
            with write_connection(engine) as connection:
                index_missing(connection)
    except CommandError as exc:
        # Most often a database already migrated by a newer alertd (after a rollback).
        raise ConfigError(
            f"cannot migrate database {engine.url!r}: {exc} "
            "(was it upgraded by a newer version of alertd?)"
        ) from exc
    except sa.exc.OperationalError as exc:
        # Down, refusing connections, a file that cannot be opened: not the database's content.
        raise DatabaseUnavailable(
            f"cannot migrate database {engine.url!r}: {describe_error(exc)}"
        ) from exc
    except SQLAlchemyError as exc:
        raise ConfigError(f"cannot migrate database {engine.url!r}: {describe_error(exc)}") from exc
    except OSError as exc:
        raise DatabaseUnavailable(f"cannot migrate database {engine.url!r}: {exc}") from exc


def _at_head(engine: Engine) -> bool:
    head = head_revision()
    if head is None:
        return False
    try:
        with engine.connect() as connection:
            current = connection.execute(sa.text("SELECT version_num FROM alembic_version"))
            return [row[0] for row in current] == [head]
    except SQLAlchemyError:
        return False  # no such table, or no database: the upgrade says what is wrong


def open_database(settings: DatabaseSettings) -> Engine:
    """Create the engine and bring the schema up to date (Alembic runs only when the
    database is not at the newest migration).

    Raises:
        DatabaseUnavailable: the database cannot be reached.
        ConfigError: database.url is unusable, or the database cannot be migrated.
    """
    engine = create_db_engine(settings)
    if not _at_head(engine):
        upgrade(engine)
    return engine


@contextmanager
def transaction(engine: Engine) -> Iterator[Session]:
    """A writing session: commits on success, rolls back on any error."""
    # Here, not at the top: `alertd list` opens the database without sqlmodel and the ORM.
    from sqlmodel import Session

    with Session(
        engine.execution_options(**{WRITE_OPTION: True}), expire_on_commit=False
    ) as session:
        with session.begin():
            yield session


@contextmanager
def write_connection(engine: Engine) -> Iterator[sa.Connection]:
    """Like ``transaction`` (BEGIN IMMEDIATE on SQLite), on a bare connection: for Core
    statements on a hot path, without a Session."""
    with engine.connect() as connection:
        # Cheaper than engine.execution_options(), which builds a new engine per call.
        connection.execution_options(**{WRITE_OPTION: True})
        with connection.begin():
            yield connection


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"
