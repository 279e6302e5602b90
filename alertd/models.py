"""Database tables (sqlmodel): subscribers, alerts, items, hits, ledger, outbox, sources."""

from __future__ import annotations

from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlmodel import Field, SQLModel, col

from alertd.addresses import email_key
from alertd.schedule import Frequency
from alertd.subscriptions.vocabulary import NotifyOn
from alertd.tokens import new_link_secret


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Stores aware datetimes as naive UTC and gives them back aware, on SQLite too."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC)


def _utc(**kwargs: Any) -> Any:
    return Field(sa_type=UTCDateTime, **kwargs)


def _email_key_default(context: Any) -> str:
    return email_key(context.get_current_parameters()["email"])


class Subscriber(SQLModel, table=True):
    # AUTOINCREMENT: SQLite never gives a deleted row's id (which old links carry) again.
    __table_args__ = {"sqlite_autoincrement": True}

    id: int | None = Field(default=None, primary_key=True)
    # As typed (shown and mailed to); email_key is what is compared and kept unique.
    email: str = Field(max_length=254, unique=True)
    email_key: str = Field(
        default=None,
        max_length=254,
        unique=True,
        index=True,
        sa_column_kwargs={"default": _email_key_default},
    )
    created_at: datetime = _utc()
    consecutive_bounces: int = 0
    suspended_at: datetime | None = _utc(default=None, nullable=True)
    # The AlertsVersion.version of the last change to suspended_at (see mark_alert_changes).
    changed_version: int = Field(default=0, index=True)
    # Signed into every link of the subscriber: a new one ("sign me out of all links")
    # revokes them all, and a row that reuses an id never accepts another row's links.
    link_secret: str = Field(default_factory=new_link_secret, max_length=64)


class Alert(SQLModel, table=True):
    __table_args__ = {"sqlite_autoincrement": True}

    id: int | None = Field(default=None, primary_key=True)
    subscriber_id: int = Field(foreign_key="subscriber.id", index=True)
    query: str = Field(max_length=500)
    # Equivalent queries share this form, so the engine compiles each once.
    canonical: str = Field(max_length=1000, index=True)
    frequency: Frequency = Field(sa_type=sa.String(16))
    confirmed: bool = False
    confirmed_at: datetime | None = _utc(default=None, nullable=True)
    created_at: datetime = _utc()
    unsubscribed_at: datetime | None = _utc(default=None, nullable=True)
    # Paused by its owner (manage page): matches nothing until resumed.
    paused_at: datetime | None = _utc(default=None, nullable=True)
    # The AlertsVersion.version of the last change to whether it matches (see
    # mark_alert_changes): a running daemon reloads only the alerts changed since it looked.
    changed_version: int = Field(default=0, index=True)
    # What it hears about: NotifyOn's value, its stages comma-separated.
    notify_on: NotifyOn = Field(default=NotifyOn.ANSWERED, sa_type=sa.String(32))


class AlertsVersion(SQLModel, table=True):
    """One row (id 1): bumped in the transaction of every change to which alerts match.

    Writers take its row lock until they commit, so versions are given out in commit order:
    a reader that saw version n has seen every change numbered up to n.
    """

    id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    version: int = 0


class MemberSearch(SQLModel, table=True):
    """A name looked up in the Members API, and when; its results are in the Member table."""

    name: str = Field(primary_key=True, max_length=100)
    fetched_at: datetime = _utc()


class Member(SQLModel, table=True):
    """A Member of either House, as last seen in a question (ids are Members API ids)."""

    id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    name: str = Field(max_length=200, index=True)
    party: str | None = Field(default=None, max_length=100)
    constituency: str | None = Field(default=None, max_length=200)
    house: str | None = Field(default=None, max_length=16)


class MemberLookup(SQLModel, table=True):
    """A Member id the Members API could not name yet (an error, or no such Member): when
    to ask again, after how many tries. Removed once the Member is named."""

    member_id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    attempts: int = 1
    next_attempt_at: datetime = _utc()
    last_error: str = Field(sa_type=sa.Text)


class Item(SQLModel, table=True):
    """One version of one item of parliamentary business (or of a feed), whatever its kind.

    Every kind fills the same columns (what it is called, its text, the Members involved,
    where and when, its official link); what only one kind has is in ``details``, which
    that kind's module (alertd.kinds) writes and reads. A new version (a question answered,
    an answer or statement corrected) is a new row of the same (source, source_id)."""

    __table_args__ = (
        sa.UniqueConstraint("source", "source_id", "version"),
        sa.UniqueConstraint("source", "source_id", "version_key"),
    )

    id: int | None = Field(default=None, primary_key=True)
    # The kind's name (alertd.kinds): "written_question", "statement", "feed_item".
    kind: str = Field(max_length=32)
    # The source's name (alertd.sources.source): "parliament", or "feed:" and the feed's name.
    source: str = Field(max_length=100)
    # The item's id at its source: a Parliament question id, a feed entry's guid/link/hash.
    source_id: str = Field(max_length=128)
    version: int
    # What the source's data says this version is (its kind makes it): a version already
    # stored under this key is not stored again.
    version_key: str = Field(max_length=80)
    # Where the item is in its life, in its kind's words ("tabled", "answer", "made"...).
    stage: str = Field(default="", max_length=32)
    # A question's heading, a statement's or feed item's title.
    title: str = Field(default="", sa_type=sa.Text)
    # The main text (an answer, a statement, a feed item's summary), as text and safe HTML.
    body_text: str = Field(default="", sa_type=sa.Text)
    body_html: str = Field(default="", sa_type=sa.Text)
    # Text beside the main one that queries match too (a question's text; a statement's
    # attachments' titles).
    secondary_text: str = Field(default="", sa_type=sa.Text)
    # The Members involved: [{"role", "id", "name", "party", "constituency"}], each role a
    # query field (alertd.kinds.Role): who asked, who answered, who made a statement.
    members: list[dict[str, Any]] = Field(default_factory=list, sa_type=sa.JSON)
    # The department (answering body) that answered or made it.
    answering_body_id: int | None = None
    answering_body_name: str | None = Field(default=None, max_length=200)
    house: str | None = Field(default=None, max_length=16)
    # The day it is dated (answered, made, published; NULL while a question awaits its
    # answer): digests, previews and estimates order and window every kind by it.
    day: date | None = Field(default=None, index=True)
    # The day a correction of it was made (a corrected answer or statement).
    corrected_on: date | None = None
    # When it was published, to the minute, where its source says (a feed's entries).
    published_at: datetime | None = _utc(default=None, nullable=True)
    # The official page; a feed item's link.
    url: str = Field(max_length=2000)
    # What only its kind has (a question's UIN and due date, a statement's attachments...).
    details: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON)
    # Set by the source that stored it: never alerted (a holding answer, history loaded by
    # backfill, what a feed held when it was added); matching marks it matched, no hits.
    never_alert: bool = False
    ingested_at: datetime = _utc(index=True)
    # NULL until matching has dealt with it: a crash between ingest and match loses nothing.
    # Only matching (alertd.matching.hits) writes it.
    matched_at: datetime | None = _utc(default=None, nullable=True, index=True)


class SourceState(SQLModel, table=True):
    """The poll state of one source (Parliament, each feed): lease, last poll, high water."""

    name: str = Field(primary_key=True, max_length=100)
    high_water: date | None = None
    last_poll_at: datetime | None = _utc(default=None, nullable=True)
    last_ok_at: datetime | None = _utc(default=None, nullable=True)
    last_error: str | None = Field(default=None, sa_type=sa.Text)
    last_new_count: int = 0
    # Several workers: the one holding an unexpired lease polls this source; others skip it.
    lease_owner: str | None = Field(default=None, max_length=100)
    lease_until: datetime | None = _utc(default=None, nullable=True)


class Hit(SQLModel, table=True):
    """An alert matched an item; it waits here until its digest is due."""

    __table_args__ = (sa.UniqueConstraint("alert_id", "item_id"),)

    id: int | None = Field(default=None, primary_key=True)
    alert_id: int = Field(foreign_key="alert.id")
    subscriber_id: int = Field(foreign_key="subscriber.id", index=True)
    # Indexed for follow-ups: the hits of an item's earlier versions.
    item_id: int = Field(foreign_key="item.id", index=True)
    created_at: datetime = _utc()
    outbox_id: int | None = Field(default=None, foreign_key="outbox.id", index=True)


class Ledger(SQLModel, table=True):
    """What each subscriber was sent: one row per (subscriber, source, item, version), so a
    correction goes to those sent the original and no version is ever sent twice."""

    __table_args__ = (sa.UniqueConstraint("subscriber_id", "source", "source_id", "version"),)

    id: int | None = Field(default=None, primary_key=True)
    subscriber_id: int = Field(foreign_key="subscriber.id")
    source: str = Field(max_length=100)
    source_id: str = Field(max_length=128)
    version: int
    item_id: int = Field(foreign_key="item.id")
    outbox_id: int = Field(foreign_key="outbox.id", index=True)
    created_at: datetime = _utc()


class OutboxState(StrEnum):
    """Where a queued message (a digest or a transactional mail) stands.

    PENDING --claim--> SENDING --sent--> SENT
    SENDING --temporary failure--> RETRY --claim (when due)--> SENDING
    SENDING --permanent failure, or retried past retry_for_hours--> DEAD
    SENDING --released (stop, halted batch)--> PENDING, or RETRY once attempted
    SENDING --lease ran out (its worker died)--> claimed again as it is
    PENDING or RETRY --a digest none of whose alerts is live any more--> CANCELLED
    SENDING --temporary failure, or released, of such a digest--> CANCELLED
    SENDING (lease ran out) --claimed again, such a digest--> CANCELLED

    alertd.mail.outbox makes every transition but the cancellations, which
    alertd.subscriptions.lifecycle makes: in the transaction that stops or pauses the
    digest's last live alert or suspends its owner, and for the sender when it claims,
    releases or retries such a digest.
    """

    PENDING = "pending"
    SENDING = "sending"
    RETRY = "retry"
    SENT = "sent"
    DEAD = "dead"
    CANCELLED = "cancelled"


# Waiting to be sent: what `alertd status` counts as unsent.
UNSENT = (OutboxState.PENDING, OutboxState.RETRY)


class OutboxKind(StrEnum):
    """What a queued message is: a transactional mail goes before any digest, and its
    permanent failure is no bounce of the subscriber's digests."""

    DIGEST = "digest"
    # A confirmation link or a manage link: someone is waiting for it now.
    TRANSACTIONAL = "transactional"


class Outbox(SQLModel, table=True):
    """A rendered email waiting to be sent; status pending → sent, or retry, or dead."""

    __table_args__ = (
        sa.Index("ix_outbox_due", "status", "next_attempt_at"),
        sa.Index("ix_outbox_kind_due", "kind", "status", "next_attempt_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    subscriber_id: int = Field(foreign_key="subscriber.id", index=True)
    recipient: str = Field(max_length=254)
    message_id: str = Field(max_length=250, unique=True)
    subject: str = Field(default="", sa_type=sa.Text)
    message: bytes = Field(sa_type=sa.LargeBinary)
    status: OutboxState = Field(default=OutboxState.PENDING, sa_type=sa.String(16))
    kind: OutboxKind = Field(
        default=OutboxKind.DIGEST,
        sa_type=sa.String(16),
        sa_column_kwargs={"server_default": OutboxKind.DIGEST.value},
    )
    attempts: int = 0
    # While status is "sending", a worker holds the row until lease_until; a worker that
    # died mid-send loses it then, and the message is sent again (same Message-ID).
    lease_owner: str | None = Field(default=None, max_length=100)
    lease_until: datetime | None = _utc(default=None, nullable=True)
    created_at: datetime = _utc()
    next_attempt_at: datetime = _utc()
    sent_at: datetime | None = _utc(default=None, nullable=True)
    last_error: str | None = Field(default=None, sa_type=sa.Text)


class DigestRun(SQLModel, table=True):
    """A daily or weekly digest period whose digests have all been composed; a frequency's
    first row only marks the period under way when a new database first ran (none composed)."""

    frequency: str = Field(primary_key=True, max_length=16)
    period_start: datetime = _utc(primary_key=True)
    completed_at: datetime = _utc()


class FeedState(StrEnum):
    """Whether a feed is polled (alertd.sources.feed_registry adds and removes feeds;
    alertd.sources.feeds marks one gone)."""

    ACTIVE = "active"
    # It answered 410 Gone: not polled until it is added again.
    GONE = "gone"
    # Removed by the operator (`alertd feeds remove`): its items stay.
    REMOVED = "removed"


class Feed(SQLModel, table=True):
    """An RSS or Atom feed polled as a source (from config [[feeds]] or `alertd feeds add`):
    its configuration and conditional-GET validators; its poll state is a SourceState."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100, unique=True)
    url: str = Field(max_length=2000)
    poll_interval_minutes: int | None = None
    etag: str | None = Field(default=None, max_length=500)
    last_modified: str | None = Field(default=None, max_length=100)
    state: FeedState = Field(default=FeedState.ACTIVE, sa_type=sa.String(16))
    # Why it is gone: the 410 answer.
    disabled_reason: str | None = Field(default=None, sa_type=sa.Text)

    @property
    def enabled(self) -> bool:
        """Whether it is polled."""
        return self.state == FeedState.ACTIVE


class BackfillDay(SQLModel, table=True):
    """A day a backfill loaded of one source (its answers, its statements), so that any
    range loads in any order and a rerun skips exactly the days done."""

    source: str = Field(primary_key=True, max_length=100)
    day: date = Field(primary_key=True)
    # How many new versions it stored (none alerted).
    stored: int = 0
    done_at: datetime = _utc()


class ComposeFailure(SQLModel, table=True):
    """A subscriber whose digest could not be built or rendered; their hits stay pending.

    Removed when their next digest is queued; `alertd status` shows the ones still waiting.
    """

    subscriber_id: int = Field(
        foreign_key="subscriber.id", primary_key=True, sa_column_kwargs={"autoincrement": False}
    )
    error: str = Field(sa_type=sa.Text)
    first_failed_at: datetime = _utc()
    last_failed_at: datetime = _utc()
    attempts: int = 1


# What makes an alert match or not; a change to any of them bumps the alerts version.
_ALERT_MATCH_FIELDS = (
    "subscriber_id",
    "canonical",
    "confirmed",
    "confirmed_at",
    "unsubscribed_at",
    "paused_at",
    "notify_on",
)


def _has_changes(row: SQLModel, names: tuple[str, ...]) -> bool:
    attrs = sa.inspect(row).attrs
    return any(attrs[name].history.has_changes() for name in names)


def bump_alerts_version(connection: sa.Connection) -> int:
    """The next alerts version, locking the version row until this transaction ends."""
    version = connection.execute(
        sa.update(AlertsVersion)
        .where(col(AlertsVersion.id) == 1)
        .values(version=col(AlertsVersion.version) + 1)
        .returning(col(AlertsVersion.version))
    ).scalar_one_or_none()
    if version is None:  # a schema made without the migration's row
        connection.execute(sa.insert(AlertsVersion).values(id=1, version=1))
        version = 1
    return int(version)


@sa.event.listens_for(sa.orm.Session, "before_flush")
def mark_alert_changes(session: sa.orm.Session, _context: Any, _instances: Any) -> None:
    """Stamp every alert (or subscriber suspension) change with a new alerts version.

    A hook on every session, so that no writer (web app, CLI, bounces, another worker) can
    forget it; a running daemon's matcher reloads only what changed since the version it saw.
    """
    changed: list[Alert | Subscriber] = []
    new = session.new  # a set made on each access: once
    for row in (*new, *session.dirty):
        if isinstance(row, Alert) and (row in new or _has_changes(row, _ALERT_MATCH_FIELDS)):
            changed.append(row)
        elif isinstance(row, Subscriber) and row not in new:
            if _has_changes(row, ("suspended_at",)):
                changed.append(row)
    if not changed:
        return
    version = bump_alerts_version(session.connection())
    for row in changed:
        row.changed_version = version
