"""The emails about alerts themselves (confirmation, manage link): built and queued in the
outbox, for the web app and the command line alike."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import jinja2
from sqlalchemy.engine import Engine
from sqlmodel import Session

from alertd.config import Settings
from alertd.digests.items import alert_label
from alertd.digests.render import templates_dir
from alertd.errors import UsageError
from alertd.htmltext import web_link
from alertd.links import Links
from alertd.mail.message import build_message, new_message_id
from alertd.mail.outbox import enqueue
from alertd.models import Alert, Subscriber

CONFIRM_SUBJECT = "Confirm your alert"
MANAGE_SUBJECT = "You already have alerts \N{EM DASH} manage them here"
LINK_SUBJECT = "Your link to manage your alerts"
# How much of a query a transactional email shows (it goes to any address typed in).
QUERY_SHOWN_CHARS = 60


def templates_environment() -> jinja2.Environment:
    """Templates of the pages and the transactional emails; HTML is autoescaped."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir()),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    # Stored links are shown only if absolute http(s): see htmltext.web_link.
    env.filters["web_link"] = web_link
    return env


def quoted_query(text: str, limit: int = QUERY_SHOWN_CHARS) -> str:
    """The text in curly quotes, cut to ``limit`` characters with an ellipsis."""
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "\N{HORIZONTAL ELLIPSIS}"
    return f"\N{LEFT DOUBLE QUOTATION MARK}{text}\N{RIGHT DOUBLE QUOTATION MARK}"


def queue_mail(
    settings: Settings,
    engine: Engine,
    templates: jinja2.Environment,
    template: str,
    *,
    subscriber_id: int,
    recipient: str,
    subject: str,
    context: dict[str, Any],
    now: datetime,
) -> None:
    """``_queue_mail`` without a web app: for the command line too."""
    full = {**context, "base_url": settings.web.base_url, "subject": subject}
    message_id = new_message_id(settings.mail, template)
    message = build_message(
        settings.mail,
        recipient=recipient,
        subject=subject,
        message_id=message_id,
        now=now,
        text=templates.get_template(f"mail/{template}.txt").render(full),
        html=templates.get_template(f"mail/{template}.html").render(full),
    )
    enqueue(
        engine,
        subscriber_id=subscriber_id,
        recipient=recipient,
        message_id=message_id,
        subject=subject,
        message=message,
        now=now,
    )


def queue_confirmation(
    settings: Settings,
    engine: Engine,
    alert_id: int,
    *,
    now: datetime,
    templates: jinja2.Environment | None = None,
) -> None:
    """Queue a (fresh) confirmation email for an unconfirmed alert, as a sign-up does: for
    `alertd subscribe` and the manage page's "resend confirmation".

    Raises:
        UsageError: no such unconfirmed alert.
    """
    links = Links.for_settings(settings)
    with Session(engine) as session:
        alert = session.get(Alert, alert_id)
        if alert is None or alert.unsubscribed_at is not None or alert.confirmed:
            raise UsageError(f"no unconfirmed alert with id {alert_id}")
        subscriber = session.get(Subscriber, alert.subscriber_id)
        assert subscriber is not None and subscriber.id is not None
        label = alert_label(session, alert)
        # As a sign-up's email: a Member's name, else the canonical query, quoted and cut.
        shown = quoted_query(label if label != alert.query else alert.canonical)
        frequency, subscriber_id, recipient = alert.frequency, subscriber.id, subscriber.email
        secret = subscriber.link_secret
    context = {
        "label": shown,
        "frequency": frequency,
        "confirm_url": links.url(links.confirm_path(alert_id, secret, now)),
        "confirm_days": settings.web.confirm_days,
        "manage_url": links.url(links.manage_path(subscriber_id, secret)),
        "note": None,
        "max_alerts": settings.web.max_alerts_per_address,
    }
    queue_mail(
        settings,
        engine,
        templates or templates_environment(),
        "confirm",
        subscriber_id=subscriber_id,
        recipient=recipient,
        subject=CONFIRM_SUBJECT,
        context=context,
        now=now,
    )
