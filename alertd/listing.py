"""`alertd list`: the active alerts, read with one SQL statement; on an up-to-date SQLite
database through the standard library's sqlite3, so the command imports no SQLAlchemy."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from alertd.addresses import email_key, normalise_email
from alertd.revisions import head_revision
from alertd.schedule import Frequency
from alertd.subscriptions.vocabulary import AlertState, NotifyOn, alert_state

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from alertd.config import DatabaseSettings

# One statement for both paths: sqlite3 and SQLAlchemy's text() both take :name parameters.
# The tables and columns are the models' (alertd.models), brought there by the migrations.
_ACTIVE_ALERTS = """
SELECT alert.id, alert.query, alert.frequency, alert.notify_on, alert.confirmed,
       alert.paused_at IS NOT NULL, subscriber.email, subscriber.suspended_at IS NOT NULL
FROM alert JOIN subscriber ON subscriber.id = alert.subscriber_id
WHERE alert.unsubscribed_at IS NULL{of_address}
ORDER BY alert.id
"""
_OF_ADDRESS = " AND subscriber.email_key = :email_key"
_SQLITE_PREFIXES = ("sqlite:///", "sqlite+pysqlite:///")


@dataclass(frozen=True)
class AlertRow:
    """One alert with its owner, as `alertd list` shows it."""

    id: int
    email: str
    query: str
    frequency: Frequency
    # Printed as `subscribe --on` takes it: "answered" or "tabled,answered".
    notify_on: NotifyOn
    confirmed: bool
    paused: bool
    suspended: bool

    @property
    def status(self) -> AlertState:
        return alert_state(confirmed=self.confirmed, paused=self.paused, suspended=self.suspended)


def list_alerts(engine: Engine, email: str | None = None) -> list[AlertRow]:
    """Active alerts, oldest first, optionally of one address."""
    import sqlalchemy as sa

    sql, parameters = _statement(email)
    with engine.connect() as connection:
        return _rows(connection.execute(sa.text(sql), parameters))


def list_alerts_of_database(settings: DatabaseSettings, email: str | None = None) -> list[AlertRow]:
    """The same as list_alerts, opening the database itself: with sqlite3 when it is a SQLite
    file already at the newest migration, else through open_database (which creates or
    upgrades it, and serves PostgreSQL)."""
    sql, parameters = _statement(email)
    connection = _sqlite_at_head(settings)
    if connection is not None:
        try:
            return _rows(connection.execute(sql, parameters))
        finally:
            connection.close()
    from alertd.db import open_database

    engine = open_database(settings)
    try:
        return list_alerts(engine, email)
    finally:
        engine.dispose()


def _statement(email: str | None) -> tuple[str, Mapping[str, Any]]:
    if email is None:
        return _ACTIVE_ALERTS.format(of_address=""), {}
    key = email_key(normalise_email(email))
    return _ACTIVE_ALERTS.format(of_address=_OF_ADDRESS), {"email_key": key}


def _rows(result: Iterable[Any]) -> list[AlertRow]:
    return [
        AlertRow(
            id=alert_id,
            email=address,
            query=query,
            frequency=Frequency(frequency),
            notify_on=NotifyOn(notify_on),
            confirmed=bool(confirmed),
            paused=bool(paused),
            suspended=bool(suspended),
        )
        for alert_id, query, frequency, notify_on, confirmed, paused, address, suspended in result
    ]


def _sqlite_at_head(settings: DatabaseSettings) -> sqlite3.Connection | None:
    """A read connection to the SQLite file of database.url if it exists and is at the newest
    migration; None for anything else (PostgreSQL, a new file, a URL with options, a database
    to upgrade), which open_database handles as every other command does."""
    path = _sqlite_file(settings.url)
    head = head_revision()
    if path is None or head is None or not path.is_file():
        return None
    connection = sqlite3.connect(path, timeout=settings.busy_timeout_ms / 1000)
    try:
        versions = connection.execute("SELECT version_num FROM alembic_version").fetchall()
    except sqlite3.Error:
        versions = []  # not an alertd database yet, or not a database: open_database says
    if versions != [(head,)]:
        connection.close()
        return None
    return connection


def _sqlite_file(url: str) -> Path | None:
    """The file of a plain SQLite URL, as create_db_engine opens it."""
    prefix = next((prefix for prefix in _SQLITE_PREFIXES if url.startswith(prefix)), None)
    if prefix is None or "?" in url:
        return None
    database = unquote(url.removeprefix(prefix))
    if database in ("", ":memory:"):
        return None
    return Path(database)
