"""Transactional emails of the web app (confirm an alert, manage your alerts): text + HTML."""

from __future__ import annotations

from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from typing import Any

import jinja2

from alertd.config import Settings
from alertd.mail.transports import MailerFactory

CONFIRM_SUBJECT = "Confirm your alert"
MANAGE_SUBJECT = "You already have alerts \N{EM DASH} manage them here"
LINK_SUBJECT = "Your link to manage your alerts"


def _safe_header(value: str) -> str:
    # Addresses are validated before they get here; this is the last line of defence.
    if any(char in value for char in "\r\n\0"):
        raise ValueError("a header value may not contain CR, LF or NUL")
    return value


def build_mail(
    settings: Settings,
    env: jinja2.Environment,
    template: str,
    *,
    recipient: str,
    subject: str,
    context: dict[str, Any],
    now: datetime,
) -> EmailMessage:
    """The email ``mail/<template>.txt`` + ``.html`` to one recipient (subject chosen by us)."""
    full = {**context, "base_url": settings.web.base_url, "subject": subject}
    text = env.get_template(f"mail/{template}.txt").render(full)
    html = env.get_template(f"mail/{template}.html").render(full)
    domain = settings.mail.from_address.rpartition("@")[2]
    message = EmailMessage(policy=SMTP)
    message["Subject"] = subject
    message["From"] = Address(settings.mail.from_name, addr_spec=settings.mail.from_address)
    message["To"] = _safe_header(recipient)
    message["Date"] = format_datetime(now)
    message["Message-ID"] = make_msgid(idstring=template, domain=domain)
    message["Auto-Submitted"] = "auto-generated"
    message["X-Auto-Response-Suppress"] = "All"
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    return message


async def send_mail(factory: MailerFactory, settings: Settings, message: EmailMessage) -> None:
    """Hand one message to the configured delivery.

    Raises:
        AlertdError: the mail server (or Maildir) did not take it.
    """
    async with factory() as mailer:
        await mailer.send(settings.mail.from_address, str(message["To"]), message.as_bytes())
