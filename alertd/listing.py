"""`alertd list`: the active alerts, read with SQLAlchemy Core on tables reflected from the
database, so the command loads neither sqlmodel, the ORM nor the models (see bench/)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from alertd.addresses import email_key, normalise_email

# The models' table names (alertd.models); the columns come from the database itself, which
# open_database has brought to the newest migration, so there is no second schema here.
_ALERT, _SUBSCRIBER = "alert", "subscriber"


class ListedAlert(NamedTuple):
    """What `alertd list` shows of an alert."""

    id: int
    query: str
    frequency: str
    confirmed: bool
    paused_at: datetime | None


@dataclass(frozen=True)
class AlertRow:
    """One alert with its owner, as `alertd list` shows it."""

    alert: ListedAlert
    email: str
    suspended: bool


def list_alerts(engine: Engine, email: str | None = None) -> list[AlertRow]:
    """Active alerts, oldest first, optionally of one address."""
    wanted = None if email is None else normalise_email(email)
    with engine.connect() as connection:
        metadata = sa.MetaData()
        alert = sa.Table(
            _ALERT,
            metadata,
            autoload_with=connection,
            include_columns=[
                "id",
                "subscriber_id",
                "query",
                "frequency",
                "confirmed",
                "paused_at",
                "unsubscribed_at",
            ],
        )
        subscriber = sa.Table(
            _SUBSCRIBER,
            metadata,
            autoload_with=connection,
            include_columns=["id", "email", "email_key", "suspended_at"],
        )
        statement = (
            sa.select(
                alert.c.id,
                alert.c.query,
                alert.c.frequency,
                alert.c.confirmed,
                alert.c.paused_at,
                subscriber.c.email,
                subscriber.c.suspended_at.is_not(None),
            )
            .join_from(alert, subscriber, subscriber.c.id == alert.c.subscriber_id)
            .where(alert.c.unsubscribed_at.is_(None))
            .order_by(alert.c.id)
        )
        if wanted is not None:
            statement = statement.where(subscriber.c.email_key == email_key(wanted))
        return [
            AlertRow(
                ListedAlert(alert_id, query, frequency, bool(confirmed), paused_at),
                address,
                bool(suspended),
            )
            for alert_id, query, frequency, confirmed, paused_at, address, suspended in (
                connection.execute(statement)
            )
        ]
