"""Test helper: databases migrated once per session and copied per test (SQLite and PostgreSQL)."""

from __future__ import annotations

import hashlib
import shutil
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from alertd.config import DatabaseSettings
from alertd.db import open_database
from alertd.revisions import MIGRATIONS_DIR, head_revision


def migrations_key() -> str:
    """A digest of the migration files as they are now: a template is named after it, so one
    built from other migrations (a revision added or edited since) is never used."""
    digest = hashlib.sha256()
    for path in sorted(MIGRATIONS_DIR.rglob("*.py")):
        digest.update(path.relative_to(MIGRATIONS_DIR).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def _version(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


def _migrate(url: str) -> None:
    """Run every migration on ``url`` (the real upgrade) and check it reached the head.

    Raises:
        RuntimeError: the migrations did not end at the head read from the files.
    """
    engine = open_database(DatabaseSettings(url=url))
    try:
        version = _version(engine)
    finally:
        engine.dispose()
    if version is None or version != head_revision():
        raise RuntimeError(f"the template is at {version}, not at the head {head_revision()}")


class SqliteTemplate:
    """A SQLite file migrated once, by the migrations; copied over brand-new databases."""

    def __init__(self, folder: Path) -> None:
        self.key = migrations_key()
        self.path = folder / f"template-{self.key}.db"
        _migrate(f"sqlite:///{self.path}")
        # The last connection closed folded the write-ahead log into the file: one file.
        assert not Path(f"{self.path}-wal").exists()

    def fill(self, engine: Engine) -> bool:
        """Make the brand-new, empty SQLite database of ``engine`` a copy of the template;
        False (nothing done) when it is not one: not SQLite, not a file, not empty, or open
        elsewhere."""
        database = engine.url.database
        if engine.dialect.name != "sqlite" or not database or database == ":memory:":
            return False
        if self.key != migrations_key():
            return False  # the migrations changed during the session: migrate for real
        path = Path(database)
        with engine.connect() as connection:
            tables = connection.exec_driver_sql("SELECT count(*) FROM sqlite_master").scalar()
        engine.dispose()  # the engine reconnects to the copy when next used
        if tables or any(Path(f"{path}{suffix}").exists() for suffix in ("-wal", "-shm")):
            return False  # not empty, or another connection has it open
        shutil.copyfile(self.path, path)  # into the file alertd made (its mode stays)
        return True


DROPS_AT_ONCE = 4


class PostgresDatabases:
    """Databases for tests on one PostgreSQL server: a template migrated once per session,
    and copies of it made (CREATE DATABASE ... TEMPLATE) and dropped in background threads,
    one copy made ahead, so that a test seldom waits for either."""

    def __init__(self, server_url: str) -> None:
        self.server = sa.make_url(server_url)
        self.admin = sa.create_engine(
            self.server,
            isolation_level="AUTOCOMMIT",
            connect_args={"options": "-c synchronous_commit=off"},
            poolclass=NullPool,  # a connection per statement: as many as threads at once
        )
        session = uuid.uuid4().hex[:8]
        # Named after the migrations (never one built from others) and this session (other
        # sessions on the same server have their own).
        self.key = migrations_key()
        self.template = f"alertd_tmpl_{self.key}_{session}"
        # Creating and dropping in threads of their own: a drop (which makes the server
        # write a checkpoint) never holds up the copy the next test waits for. Drops run a
        # few at a time: drops waiting together share one checkpoint.
        self._creating = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pg-create")
        self._dropping = ThreadPoolExecutor(max_workers=DROPS_AT_ONCE, thread_name_prefix="pg-drop")
        self._ahead: deque[Future[str]] = deque()
        self._drops: list[Future[str]] = []
        self._filled: dict[str, str] = {}  # what a template was filled with: its name
        self._create(None, self.template)
        try:
            _migrate(self.url(self.template))
        except BaseException:
            self._execute(f'DROP DATABASE IF EXISTS "{self.template}" WITH (FORCE)')
            raise

    def url(self, name: str) -> str:
        return self.server.set(database=name).render_as_string(hide_password=False)

    def _execute(self, statement: str) -> None:
        with self.admin.connect() as connection:
            connection.exec_driver_sql(statement)

    def _create(self, template: str | None, name: str | None = None) -> str:
        name = name or f"alertd_test_{uuid.uuid4().hex[:12]}"
        clause = f' TEMPLATE "{template}"' if template else ""
        self._execute(f'CREATE DATABASE "{name}"{clause}')
        # Commits need not wait for the disk: nothing here outlives a crash of the server.
        self._execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
        return name

    def migrated(self) -> str:
        """The name of a new database copied from the template (at the newest migration)."""
        if self.key != migrations_key():
            name = self.empty()  # the migrations changed during the session: migrate for real
            _migrate(self.url(name))
            return name
        if not self._ahead:
            self._ahead.append(self._creating.submit(self._create, self.template))
        name = self._ahead.popleft().result()
        self._ahead.append(self._creating.submit(self._create, self.template))
        return name

    def empty(self) -> str:
        """The name of a new, empty database (for tests of the migrations themselves)."""
        return self._create(None)

    def filled(self, what: str, fill: Callable[[str], None]) -> str:
        """A template of its own for data many tests start from: a copy of the migrated
        template that ``fill`` (given its URL) filled, made the first time ``what`` is asked."""
        if what not in self._filled:
            name = self._create(self.template)
            try:
                fill(self.url(name))
            except BaseException:
                self.drop(name)
                raise
            self._filled[what] = name
        return self._filled[what]

    def replace(self, name: str, template: str) -> None:
        """Make database ``name`` a new copy of ``template`` (nobody may be connected to it);
        the old one is dropped in the background."""
        old = f"alertd_old_{uuid.uuid4().hex[:12]}"
        self._execute(f'ALTER DATABASE "{name}" RENAME TO "{old}"')
        self._create(template, name)
        self.drop(old)

    def drop(self, name: str) -> None:
        """Drop ``name`` in the background (FORCE: connections a test left are closed)."""
        self._drops.append(self._dropping.submit(self._drop, name))

    def _drop(self, name: str) -> str:
        self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        return name

    def close(self) -> None:
        """Drop the copies made ahead and the template, after the drops still queued.

        Raises:
            sqlalchemy.exc.SQLAlchemyError: a database could not be made or dropped.
        """
        try:
            while self._ahead:
                self.drop(self._ahead.popleft().result())
        finally:
            for name in [*self._filled.values(), self.template]:
                self.drop(name)
            self._creating.shutdown(wait=True)
            self._dropping.shutdown(wait=True)
            self.admin.dispose()
        for dropped in self._drops:
            dropped.result()
