"""Sample digests: what a subscriber would get now, written to files and never sent."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from email.utils import make_msgid
from pathlib import Path

import jinja2
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from alertd.addresses import normalise_email
from alertd.config import Settings
from alertd.digests.compose import pending_rows
from alertd.digests.items import Row, build_digest
from alertd.digests.render import render_message
from alertd.digests.view import Digest
from alertd.errors import AlertdError, QueryError, UsageError
from alertd.files import write_private
from alertd.kinds import kind_of
from alertd.links import Links
from alertd.matching import matching_item_ids, parse_query
from alertd.models import Alert, Hit, Item
from alertd.schedule import FREQUENCIES
from alertd.subscriptions.lifecycle import find_subscriber

DEFAULT_DAYS = 30


@dataclass(frozen=True)
class SampleFiles:
    """Where a sample digest was written."""

    eml: Path
    html: Path
    subject: str


def sample_digest(
    engine: Engine, settings: Settings, email: str, *, now: datetime, days: int = DEFAULT_DAYS
) -> Digest:
    """The digest a subscriber would get now: from their pending hits, or if they have none,
    from the stored answers of the last ``days`` days that their alerts match.

    Raises:
        UsageError: no such subscriber.
        AlertdError: nothing to show (no pending hits and no recent matching answers).
    """
    address = normalise_email(email)
    with Session(engine) as session:
        subscriber = find_subscriber(session, address)
        if subscriber is None or subscriber.id is None:
            raise UsageError(f"no subscriber with the address {address}")
        rows = pending_rows(session, subscriber.id, list(FREQUENCIES)) or _recent(
            session, subscriber.id, since=now - timedelta(days=days), now=now
        )
        if not rows:
            raise AlertdError(
                f"nothing to show for {address}: no pending answers, and none of the last "
                f"{days} days matches their alerts"
            )
        # Links that expire: a sample file is copied, attached and left lying around, and
        # its manage and unsubscribe links would otherwise work for good.
        links = Links.for_settings(settings, issued_at=now)
        return build_digest(session, settings, subscriber, rows, links=links)


def _recent(session: Session, subscriber_id: int, *, since: datetime, now: datetime) -> list[Row]:
    alerts = session.exec(
        select(Alert)
        .where(Alert.subscriber_id == subscriber_id, col(Alert.unsubscribed_at).is_(None))
        .order_by(col(Alert.id))
    ).all()
    matched: dict[int, list[int]] = {}
    for alert in alerts:
        assert alert.id is not None
        try:
            query = parse_query(alert.canonical)
        except QueryError:
            continue
        matched[alert.id] = matching_item_ids(session.connection(), query, since.date())
    wanted = sorted({item_id for ids in matched.values() for item_id in ids})
    items: dict[int, Item] = {}
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        for item in session.exec(select(Item).where(col(Item.id).in_(chunk))).all():
            assert item.id is not None
            items[item.id] = item
    rows: list[Row] = []
    for alert in alerts:
        assert alert.id is not None
        for item_id in matched.get(alert.id, []):
            item = items[item_id]
            # Only what is news on its own (not a withdrawal, only ever a follow-up).
            if kind_of(item).hears(item) is not None:
                # A hit in memory only: the sample changes nothing in the database.
                hit = Hit(
                    alert_id=alert.id,
                    subscriber_id=subscriber_id,
                    item_id=item_id,
                    created_at=now,
                )
                rows.append(Row(hit, alert, item))
    return rows


def write_sample(
    engine: Engine,
    settings: Settings,
    env: jinja2.Environment,
    email: str,
    out: Path,
    *,
    now: datetime,
    days: int = DEFAULT_DAYS,
) -> SampleFiles:
    """Write the digest a subscriber would get now to ``out``.eml and ``out``.html.

    Raises:
        UsageError, AlertdError: see ``sample_digest``; TemplateError: a template failed.
    """
    digest = sample_digest(engine, settings, email, now=now, days=days)
    domain = settings.mail.from_address.rpartition("@")[2]
    rendered = render_message(
        digest, settings, env, message_id=make_msgid(idstring="sample", domain=domain), now=now
    )
    message = message_from_bytes(rendered.message, policy=default)
    assert isinstance(message, EmailMessage)
    html_part = message.get_body(("html",))
    assert html_part is not None
    files = SampleFiles(
        eml=out.with_name(out.name + ".eml"),
        html=out.with_name(out.name + ".html"),
        subject=rendered.subject,
    )
    write_private(files.eml, [rendered.message])
    write_private(files.html, [str(html_part.get_content()).encode()])
    return files
