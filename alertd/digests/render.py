"""Render: a pure function from a digest's data to a multipart text + HTML email."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import css_inline
import jinja2
import jinja2.sandbox

from alertd.config import Settings
from alertd.digests.excerpt import (
    highlight_html,
    highlight_text,
    long_date,
    wrap_text,
)
from alertd.digests.view import (
    Block,
    Digest,
    DigestGroup,
    DigestItem,
    DigestSection,
    describe_alert,
)
from alertd.errors import ConfigError, TemplateError
from alertd.kinds.kind import KindWords
from alertd.mail.message import MailingList, build_message

TEMPLATE_NAMES = ("digest.txt", "digest.html")
SUBJECT_MAX_CHARS = 90
# Gmail clips a message whose HTML passes about 102 KB, hiding the rest behind a link, and
# with it the footer's unsubscribe link: a digest's HTML stays under this, by showing fewer
# items per alert (the rest are behind each section's "and N more" link).
MAX_HTML_BYTES = 90_000
# Styles from the template's <style> go inline; @media rules (dark mode, phones) stay in a
# <style>; nothing is ever fetched (no remote stylesheets, <link> tags dropped).
_INLINER = css_inline.CSSInliner(load_remote_stylesheets=False, keep_at_rules=True)


class _DigestSandbox(jinja2.sandbox.SandboxedEnvironment):
    """Jinja2's sandbox, with a shortcut for the digest's own plain data classes.

    For them the general check reduces to "no leading underscore" (they are no functions,
    types, frames or generators); skipping the rest of it for the ~200 attribute reads
    of every digest makes rendering about a quarter cheaper.
    """

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if type(obj) in _DIGEST_DATA:
            return not attr.startswith("_")
        return bool(super().is_safe_attribute(obj, attr, value))


_DIGEST_DATA = frozenset({Digest, DigestSection, DigestGroup, DigestItem, Block})


def templates_dir() -> Path:
    """The shipped templates: inside the installed package, or at the top of a checkout."""
    package = Path(__file__).parent.parent
    packaged = package / "templates"
    return packaged if packaged.is_dir() else package.parent / "templates"


def build_environment(settings: Settings | None = None) -> jinja2.Environment:
    """The Jinja2 sandbox, built once at start-up, and proven by rendering a sample digest.

    Templates in ``digest.templates_dir`` replace the shipped ones of the same name. All
    render in Jinja2's sandbox, strict about undefined names, HTML autoescaped. When DKIM
    is configured the sample is signed too, so a bad key also stops start-up.

    Raises:
        TemplateError: a template is missing, does not compile or fails on the sample
            (the message names the file and line).
        ConfigError: ``digest.templates_dir`` is not a folder, or the DKIM key is unusable.
    """
    settings = settings or Settings()
    folders = [templates_dir()]
    override = settings.digest.templates_dir
    if override is not None:
        if not override.is_dir():
            raise ConfigError(f"config error: digest.templates_dir: {override} is not a folder")
        folders.insert(0, override)
    env = _DigestSandbox(
        loader=jinja2.FileSystemLoader([str(folder) for folder in folders]),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        longdate=long_date, wrap=wrap_text, highlight=highlight_html, stars=highlight_text
    )
    for name in TEMPLATE_NAMES:
        try:
            env.get_template(name)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"template {exc.filename}:{exc.lineno}: {exc.message}") from exc
        except jinja2.TemplateNotFound as exc:
            shown = ", ".join(str(folder) for folder in folders)
            raise TemplateError(f"template {name} not found in {shown}") from exc
    render_message(
        startup_sample(settings), settings, env, message_id="<sample@alertd.invalid>", now=_EPOCH
    )
    return env


def digest_subject(digest: Digest) -> str:
    """E.g. ``3 new answers: special educational needs, Rushanara Ali``, cut sensibly
    (``2 new answers and 1 new statement: …`` when kinds are mixed)."""
    head = f"{digest.count_words}: "
    # One line, whatever the labels hold: a line break can never start a new header.
    labels = [" ".join(section.label.split()) for section in digest.sections]
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


def _where(exc: BaseException) -> str:
    """``file:line`` of a template error: Jinja2 puts template frames in the traceback."""
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return f"{exc.filename or exc.name}:{exc.lineno}"
    found = "?"
    tb = exc.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if not filename.endswith(".py") and not filename.startswith("<"):
            found = f"{filename}:{tb.tb_lineno}"
        tb = tb.tb_next
    return found


def _render_template(env: jinja2.Environment, name: str, context: dict[str, Any]) -> str:
    try:
        return env.get_template(name).render(context)
    except Exception as exc:
        # An operator's template may fail in any way (a bad filter argument, a type error):
        # all of them are a broken template, reported with its file and line.
        raise TemplateError(f"template {_where(exc)}: {type(exc).__name__}: {exc}") from exc


@dataclass(frozen=True)
class RenderedDigest:
    """A digest ready for the outbox: its subject, and the exact bytes to send."""

    subject: str
    # CRLF lines, DKIM-signed when configured: sent as they are, never re-serialised.
    message: bytes


def render_message(
    digest: Digest,
    settings: Settings,
    env: jinja2.Environment,
    *,
    message_id: str,
    now: datetime,
) -> RenderedDigest:
    """Build the digest email (``build_message``); the same inputs always give the same bytes.

    Raises:
        TemplateError: a template failed while rendering.
        HeaderInjection: the recipient is not one address, or a header value has a line break.
        ConfigError: DKIM is configured but its key cannot be read or used.
    """
    subject = digest_subject(digest)
    digest, html = _fitted(digest, settings, env, subject)
    context = {"digest": digest, "base_url": settings.web.base_url, "subject": subject}
    text = _render_template(env, "digest.txt", context)
    domain = settings.mail.from_address.rpartition("@")[2]
    message = build_message(
        settings.mail,
        recipient=digest.recipient,
        subject=subject,
        message_id=message_id,
        now=now,
        text=text,
        html=html,
        mailing_list=MailingList(f"alertd digests <digests.{domain}>", digest.unsubscribe_url),
    )
    return RenderedDigest(subject, message)


def _html(digest: Digest, settings: Settings, env: jinja2.Environment, subject: str) -> str:
    context = {"digest": digest, "base_url": settings.web.base_url, "subject": subject}
    inlined: str = _INLINER.inline(_render_template(env, "digest.html", context))
    return inlined


def _fitted(
    digest: Digest, settings: Settings, env: jinja2.Environment, subject: str
) -> tuple[Digest, str]:
    """The digest as sent, and its HTML: every item, or as many per alert as keep the HTML
    under MAX_HTML_BYTES (the same for every alert, so each keeps its newest answers).

    A pure function of the digest like the rest of rendering: the same digest always
    loses the same items.
    """
    html = _html(digest, settings, env, subject)
    size = len(html.encode("utf-8"))
    most = max((len(section.items) for section in digest.sections), default=0)
    while size > MAX_HTML_BYTES and most > 0:
        shown = sum(len(section.items) for section in digest.sections)
        # Items the size allows if each costs what the average one does now (an
        # overestimate, as the page around them is counted too), then the largest limit
        # per alert that keeps to that number; at least one fewer than now.
        allowed = shown * MAX_HTML_BYTES // size
        limit = most - 1
        while limit > 0 and sum(min(len(s.items), limit) for s in digest.sections) > allowed:
            limit -= 1
        digest = replace(
            digest,
            sections=tuple(
                replace(section, items=section.items[:limit]) for section in digest.sections
            ),
        )
        html = _html(digest, settings, env, subject)
        size, most = len(html.encode("utf-8")), limit
    return digest, html


_EPOCH = datetime(2021, 2, 1, 18, 0, tzinfo=UTC)


def startup_sample(settings: Settings) -> Digest:
    """A small digest using every feature the templates show, rendered at start-up."""
    base = settings.web.base_url
    words = KindWords("new item", "new items", "new item", "new items", "sample items")
    item = DigestItem(
        heading="Special Educational Needs: Coronavirus",
        url="https://questions-statements.parliament.uk/written-questions/detail/2021-01-25/1",
        words=words,
        status="Now answered",
        note="We told you about this question when it was tabled.",
        origin="Department for Education",
        people=("Asked by Tulip Siddiq (Labour, Hampstead and Kilburn)", "Answered by Vicky Ford"),
        dates=(("Tabled", date(2021, 1, 25)), ("Answered", date(2021, 2, 1))),
        reference="House of Commons 1",
        blocks=(
            Block(
                "Question",
                "To ask the Secretary of State for Education, what support is given to "
                "pupils with special educational needs.",
                ((62, 87),),
            ),
            Block("Answered together", lines=("1: a question", "2: another")),
            Block(
                "Answer",
                "… children with special educational needs and disabilities …",
                ((16, 41),),
                quoted=True,
            ),
        ),
        footnotes=("Attachments: a table",),
        also_matches=("pupils",),
    )
    grouped_item = replace(item, origin="A feed", origin_label="From ", group="A group")
    return Digest(
        recipient="sample@alertd.invalid",
        sections=(
            DigestSection(
                label='"special educational needs"',
                stop_url=f"{base}/alerts/stop/sample",
                items=(item, grouped_item),
                total=3,
                reason=describe_alert('"special educational needs"'),
                more_url=f"{base}/alerts/more/sample",
            ),
        ),
        unsubscribe_url=f"{base}/unsubscribe/sample",
        manage_url=f"{base}/manage/sample",
    )
