"""Render: a pure function from a digest's data to a multipart text + HTML email."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from pathlib import Path

import jinja2

from alertd.config import Settings
from alertd.errors import TemplateError

TEMPLATE_NAMES = ("digest.txt", "digest.html")
SUBJECT_MAX_CHARS = 90


@dataclass(frozen=True)
class DigestItem:
    """One answered question as a digest shows it."""

    heading: str
    department: str
    asked_by: str
    answered_by: str
    date_tabled: date
    date_answered: date | None
    question_text: str
    answer_excerpt: str
    url: str
    uin: str
    house: str
    corrected: bool
    also_matches: tuple[str, ...] = ()


@dataclass(frozen=True)
class DigestSection:
    """The answers one alert found, under that alert's query."""

    label: str
    stop_url: str
    items: tuple[DigestItem, ...]
    total: int


@dataclass(frozen=True)
class Digest:
    recipient: str
    sections: tuple[DigestSection, ...]
    unsubscribe_url: str

    @property
    def total(self) -> int:
        return sum(len(section.items) for section in self.sections)


def templates_dir() -> Path:
    """The shipped templates: inside the installed package, or at the top of a checkout."""
    packaged = Path(__file__).parent / "templates"
    return packaged if packaged.is_dir() else Path(__file__).parent.parent / "templates"


def build_environment() -> jinja2.Environment:
    """The Jinja2 environment, built once: strict about undefined names, HTML autoescaped.

    Raises:
        TemplateError: a template is missing or does not compile.
    """
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir()),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    for name in TEMPLATE_NAMES:
        try:
            env.get_template(name)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"template {exc.filename}:{exc.lineno}: {exc.message}") from exc
        except jinja2.TemplateNotFound as exc:
            raise TemplateError(f"template {name} not found in {templates_dir()}") from exc
    return env


def digest_subject(digest: Digest) -> str:
    """E.g. ``3 new answers: special educational needs, Rushanara Ali``, cut sensibly."""
    count = digest.total
    head = f"{count} new answer{'s' if count != 1 else ''}: "
    labels = [section.label for section in digest.sections]
    subject = head + ", ".join(labels)
    if len(subject) <= SUBJECT_MAX_CHARS:
        return subject
    shown: list[str] = []
    for index, label in enumerate(labels):
        rest = len(labels) - index
        tail = f" and {rest} more alert{'s' if rest != 1 else ''}"
        candidate = head + ", ".join([*shown, label])
        if len(candidate) + len(tail) > SUBJECT_MAX_CHARS:
            if not shown:
                return candidate[: SUBJECT_MAX_CHARS - len(tail) - 1].rstrip() + "…" + tail
            return head + ", ".join(shown) + tail
        shown.append(label)
    return head + ", ".join(shown)


def render_digest(
    digest: Digest,
    settings: Settings,
    env: jinja2.Environment,
    *,
    message_id: str,
    now: datetime,
) -> EmailMessage:
    """Build the digest email; the same inputs always give the same message.

    Raises:
        TemplateError: a template failed while rendering.
    """
    context = {"digest": digest, "base_url": settings.web.base_url}
    try:
        text = env.get_template("digest.txt").render(context)
        html = env.get_template("digest.html").render(context)
    except jinja2.TemplateError as exc:
        raise TemplateError(f"digest template failed: {exc}") from exc
    message = EmailMessage(policy=SMTP)
    message["Subject"] = digest_subject(digest)
    message["From"] = Address(settings.mail.from_name, addr_spec=settings.mail.from_address)
    message["To"] = digest.recipient
    message["Date"] = format_datetime(now)
    message["Message-ID"] = message_id
    domain = settings.mail.from_address.rpartition("@")[2]
    message["List-Id"] = f"alertd digests <digests.{domain}>"
    message["List-Unsubscribe"] = f"<{digest.unsubscribe_url}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message["Auto-Submitted"] = "auto-generated"
    message["Precedence"] = "bulk"
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    # A boundary derived from the Message-ID keeps rendering a pure function of its inputs.
    message.set_boundary("=_alertd_" + hashlib.sha256(message_id.encode()).hexdigest()[:32])
    return message


def excerpt(text: str, limit: int) -> str:
    """The start of a text, cut at a word boundary near ``limit`` characters."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    cut = flat[:limit].rsplit(" ", 1)[0]
    return cut.rstrip(",.;:") + " …"
