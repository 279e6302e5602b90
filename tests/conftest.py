"""Shared fixtures: settings factory, real databases (SQLite file, PostgreSQL), stand-ins.

Databases start as copies of a template migrated once per session by the real migrations
(db_templates.py): a brand-new SQLite file that alertd opens becomes a copy of the SQLite
template, and each PostgreSQL database is made from the PostgreSQL one. Tests marked
``migrations`` (of the migrations, start-up on a fresh database) migrate for real.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy.engine import Engine

import alertd.db
from alertd.config import Settings
from alertd.db import open_database

from db_templates import PostgresDatabases, SqliteTemplate
from feed_server import FeedServer
from smtp_server import SmtpSink
from standin_api import StandinApi

if TYPE_CHECKING:
    from alertd.pipeline import Runtime

PG_URL_ENV = "ALERTD_TEST_DATABASE_URL"


MAX_WORKERS = 8  # each worker holds a few PostgreSQL connections, and builds its templates


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """The workers of ``-n auto``: one per core and one more, since tests spend much of their
    time waiting (subprocesses starting, PostgreSQL, stalled stand-ins), not computing."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None  # pytest-xdist reads it
    return min(len(os.sched_getaffinity(0)) + 1, MAX_WORKERS)


@pytest.fixture(autouse=True)
def _no_ambient_config(monkeypatch: pytest.MonkeyPatch) -> None:
    # The developer's own ALERTD_* settings must not leak into tests.
    for name in list(os.environ):
        if name.startswith("ALERTD_") and name != PG_URL_ENV:
            monkeypatch.delenv(name)


def _migrates_for_real(request: pytest.FixtureRequest) -> bool:
    return request.node.get_closest_marker("migrations") is not None


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> SqliteTemplate:
    """A SQLite database migrated once for the session, by the migrations."""
    return SqliteTemplate(tmp_path_factory.mktemp("template"))


@pytest.fixture(autouse=True)
def _sqlite_from_template(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    # open_database upgrades a database that is not at the newest migration: a brand-new,
    # empty SQLite file becomes a copy of the template instead; anything else is upgraded
    # for real (a database behind the head, PostgreSQL, an in-memory one).
    if _migrates_for_real(request):
        return
    template: SqliteTemplate = request.getfixturevalue("sqlite_template")
    real_upgrade = alertd.db.upgrade

    def upgrade(engine: Engine) -> None:
        if not template.fill(engine):
            real_upgrade(engine)

    monkeypatch.setattr(alertd.db, "upgrade", upgrade)


@pytest.fixture(scope="session")
def postgres_databases() -> Iterator[PostgresDatabases]:
    """The PostgreSQL server's databases for this session, made from a migrated template."""
    server_url = os.environ.get(PG_URL_ENV)
    if not server_url:
        pytest.skip(f"{PG_URL_ENV} is not set")
    databases = PostgresDatabases(server_url)
    yield databases
    databases.close()


@pytest.fixture
def pg_database_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A new PostgreSQL database for one test, dropped afterwards: a copy of the migrated
    template, or empty for a test marked ``migrations``."""
    databases: PostgresDatabases = request.getfixturevalue("postgres_databases")
    name = databases.empty() if _migrates_for_real(request) else databases.migrated()
    try:
        yield databases.url(name)
    finally:
        databases.drop(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/alertd.db"
    url: str = request.getfixturevalue("pg_database_url")
    return url


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings for a test: a SQLite file and a Maildir in tmp_path, overridable by section."""

    def make(**sections: dict[str, Any]) -> Settings:
        data: dict[str, dict[str, Any]] = {
            "database": {"url": f"sqlite:///{tmp_path}/alertd.db"},
            "mail": {"maildir": str(tmp_path / "mail"), "from": "alerts@alertd.test"},
            "web": {"base_url": "http://localhost:8000", "secret_key": "test-secret"},
            "parliament": {"timeout_s": 5.0},
            # Hansard is polled only where a test serves it (test_hansard), never the real API.
            "hansard": {"enabled": False},
            # Nor the Oral Questions and Motions API (test_oral_questions, test_early_day_motions).
            "oral_questions": {"enabled": False},
        }
        for section, values in sections.items():
            data.setdefault(section, {}).update(values)
        return Settings.model_validate(data)

    return make


@pytest.fixture
def db_engine(database_url: str) -> Iterator[Engine]:
    """A migrated database: a SQLite file, and the real PostgreSQL when configured."""
    from alertd.config import DatabaseSettings

    engine = open_database(DatabaseSettings(url=database_url))
    yield engine
    engine.dispose()


@pytest.fixture
def standin_api() -> Iterator[StandinApi]:
    """The local stand-in for the Parliament API, serving the 469 recorded answers of 1 Feb 2021."""
    with StandinApi.from_fixtures(hang_seconds=10.0) as api:
        yield api


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    """A loopback feed server (routes set per test, faults included)."""
    with FeedServer() as server:
        yield server


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    """A real SMTP server (aiosmtpd) on loopback that records what it accepts."""
    with SmtpSink() as sink:
        yield sink


@pytest.fixture
def standin_runtime(
    make_settings: Callable[..., Settings], database_url: str
) -> Iterator[Callable[[StandinApi], Runtime]]:
    """Makes the pipeline in process over a stand-in API (Parliament and Members), on SQLite
    and PostgreSQL, into a Maildir; a look-back of one day."""
    from alertd.digests.render import build_environment
    from alertd.mail.transports import mailer_factory
    from alertd.pipeline import Runtime

    made: list[Runtime] = []

    def make(api: StandinApi) -> Runtime:
        settings = make_settings(
            database={"url": database_url},
            parliament={"base_url": api.base_url, "lookback_days": 1},
            members={"base_url": api.base_url},
        )
        engine = open_database(settings.database)
        mailer = mailer_factory("maildir", settings.mail.maildir, settings.smtp)
        made.append(Runtime(settings, engine, mailer, build_environment()))
        return made[-1]

    yield make
    for runtime in made:
        runtime.engine.dispose()
