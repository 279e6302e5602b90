"""What the web pages and API read and write: sign-ups, alerts as shown, link secrets."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, and_, col, or_, select

from alertd import queries
from alertd.addresses import email_key, normalise_email
from alertd.db import transaction
from alertd.digests.items import alert_label
from alertd.errors import NotYours
from alertd.links import SUBSCRIBER_ACTIONS, Action
from alertd.models import Alert, Subscriber
from alertd.schedule import Frequency
from alertd.subscriptions import lifecycle
from alertd.subscriptions.vocabulary import AlertState, NotifyOn, alert_state
from alertd.tokens import new_link_secret

Note = Literal["limit", "duplicate"]


@dataclass(frozen=True)
class AlertView:
    """An alert as the manage page and the API show it."""

    id: int
    label: str
    query: str
    frequency: Frequency
    status: AlertState
    created_at: datetime
    notify_on: NotifyOn = NotifyOn.ANSWERED


@dataclass(frozen=True)
class SignupResult:
    """What a sign-up did; the mail to send follows from it, the page says the same for all."""

    email: str
    subscriber_id: int
    alert_id: int | None
    label: str
    # The address already has confirmed alerts: it is sent the manage link.
    existing: bool
    note: Note | None
    # The subscriber's link secret, which every link to them is signed with.
    link_secret: str


def _view(session: Session, alert: Alert) -> AlertView:
    assert alert.id is not None
    return AlertView(
        id=alert.id,
        label=alert_label(session, alert),
        query=alert.query,
        frequency=Frequency(alert.frequency),
        # The alert's own state: the manage page and the API have never shown its owner's
        # suspension (the API's schema names three states).
        status=alert_state(
            confirmed=alert.confirmed, paused=alert.paused_at is not None, suspended=False
        ),
        created_at=alert.created_at,
        notify_on=NotifyOn(alert.notify_on),
    )


def _active(subscriber_id: int) -> ColumnElement[bool]:
    return and_(col(Alert.subscriber_id) == subscriber_id, col(Alert.unsubscribed_at).is_(None))


def subscriber_alerts(engine: Engine, subscriber_id: int) -> tuple[str, list[AlertView]] | None:
    """The address and its active alerts, oldest first; None if there is no such subscriber."""
    with Session(engine) as session:
        subscriber = session.get(Subscriber, subscriber_id)
        if subscriber is None:
            return None
        rows = session.exec(select(Alert).where(_active(subscriber_id)).order_by(col(Alert.id)))
        return subscriber.email, [_view(session, alert) for alert in rows]


def link_secret_of(engine: Engine, action: Action, subject_id: int) -> str | None:
    """The link secret a token for ``action`` on this id must be signed with; None if the
    subscriber (or alert) does not exist."""
    query = select(Subscriber.link_secret)
    if action in SUBSCRIBER_ACTIONS:
        query = query.where(Subscriber.id == subject_id)
    else:
        query = query.join(Alert, col(Alert.subscriber_id) == col(Subscriber.id)).where(
            Alert.id == subject_id
        )
    with Session(engine) as session:
        return session.exec(query).first()


def sign_out(engine: Engine, subscriber_id: int) -> None:
    """A new link secret for the subscriber: every link made before stops working."""
    with transaction(engine) as session:
        subscriber = session.get(Subscriber, subscriber_id)
        if subscriber is not None:
            subscriber.link_secret = new_link_secret()
            session.add(subscriber)


def subscriber_for_link(engine: Engine, email: str, now: datetime) -> tuple[int, str, str]:
    """The id, stored address and link secret of the address's subscriber, made if new.

    A manage-link request runs these same statements whether or not the address is known
    (an INSERT that does nothing on a known one, then a SELECT), so that neither the answer
    nor its timing tells them apart.
    """
    dialect = engine.dialect.name
    insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
    new_row = insert(Subscriber).values(
        email=email,
        email_key=email_key(email),
        created_at=now,
        consecutive_bounces=0,
        changed_version=0,
        link_secret=new_link_secret(),
    )
    with transaction(engine) as session:
        session.execute(new_row.on_conflict_do_nothing(index_elements=["email_key"]))
        found = session.exec(
            select(Subscriber.id, Subscriber.email, Subscriber.link_secret).where(
                Subscriber.email_key == email_key(email)
            )
        ).one()
    subscriber_id, stored_email, link_secret = found
    assert subscriber_id is not None
    return subscriber_id, stored_email, link_secret


def _counting(subscriber_id: int, now: datetime, confirm_window: timedelta) -> ColumnElement[bool]:
    # Pending alerts whose confirmation link has expired no longer take up a place.
    fresh = or_(col(Alert.confirmed).is_(True), col(Alert.created_at) > now - confirm_window)
    return and_(_active(subscriber_id), fresh)


def register_signup(
    engine: Engine,
    email: str,
    query_text: str,
    frequency: Frequency,
    *,
    max_alerts: int,
    confirm_window: timedelta,
    now: datetime,
    notify_on: NotifyOn | None = None,
) -> SignupResult:
    """Save an unconfirmed alert unless the address is at its limit or already has it.

    Raises:
        UsageError: a bad address, query or stage (nothing saved).
    """
    args = (engine, email, query_text, frequency, max_alerts, confirm_window, now, notify_on)
    try:
        return _register(*args)
    except IntegrityError:
        # The same new address signed up twice at once: the other request made the row.
        return _register(*args)


def _register(
    engine: Engine,
    email: str,
    query_text: str,
    frequency: Frequency,
    max_alerts: int,
    confirm_window: timedelta,
    now: datetime,
    notify_on: NotifyOn | None,
) -> SignupResult:
    address = normalise_email(email)
    with transaction(engine) as session:
        canonical = queries.compile_query(session, query_text).canonical
        subscriber = lifecycle.subscriber_of(session, address, now)
        assert subscriber.id is not None
        counted = session.exec(
            select(Alert).where(_counting(subscriber.id, now, confirm_window))
        ).all()
        existing = any(alert.confirmed for alert in counted)
        same = next((a for a in counted if a.canonical == canonical), None)
        if same is not None and not same.confirmed:
            # A fresh link for the same alert.
            lifecycle.renew_pending(same, frequency, notify_on, now)
        note: Note | None = None
        if same is not None and same.confirmed:
            note = "duplicate"
        elif same is None and len(counted) >= max_alerts:
            note = "limit"
        result = SignupResult(
            # The address as stored, not as typed now: mail goes to the row's spelling.
            email=subscriber.email,
            subscriber_id=subscriber.id,
            alert_id=same.id if same else None,
            label=alert_label(session, same) if same else " ".join(query_text.split()),
            existing=existing or note is not None,
            note=note,
            link_secret=subscriber.link_secret,
        )
    if same is not None or note is not None:
        return result
    alert = lifecycle.subscribe(
        engine, address, query_text, frequency, confirmed=False, now=now, notify_on=notify_on
    )
    assert alert.id is not None
    with Session(engine) as session:
        label = alert_label(session, alert)
    return SignupResult(
        result.email, result.subscriber_id, alert.id, label, existing, None, result.link_secret
    )


def owner_of(engine: Engine, alert_id: int) -> int:
    """The subscriber id of an alert that exists."""
    with Session(engine) as session:
        alert = session.get(Alert, alert_id)
        assert alert is not None
        return alert.subscriber_id


def pending_alert(engine: Engine, alert_id: int) -> AlertView | None:
    """The alert a confirmation link is for, if it still exists (confirmed or not)."""
    with Session(engine) as session:
        alert = session.get(Alert, alert_id)
        if alert is None or alert.unsubscribed_at is not None:
            return None
        return _view(session, alert)


def update_alert(
    engine: Engine,
    subscriber_id: int,
    alert_id: int,
    *,
    now: datetime,
    paused: bool | None = None,
    frequency: Frequency | None = None,
) -> AlertView:
    """Pause, resume or change the frequency of one of the subscriber's alerts; it as shown
    now.

    Raises:
        NotYours: the alert is not one of the subscriber's active alerts.
    """
    alert = lifecycle.change_alert(
        engine, alert_id, now, subscriber_id=subscriber_id, paused=paused, frequency=frequency
    )
    with Session(engine) as session:
        return _view(session, alert)


def stop_alert_by_id(engine: Engine, alert_id: int, now: datetime) -> AlertView | None:
    """Stop an alert from its own link; it as shown, or None if it was already stopped or
    never existed."""
    try:
        alert = lifecycle.stop_alert(engine, alert_id, now)
    except NotYours:
        return None
    with Session(engine) as session:
        return _view(session, alert)
