"""Sign-up input checked field by field, the preview, and the sign-up and manage-link emails."""

from __future__ import annotations

import functools
import logging
import unicodedata
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from alertd import queries
from alertd.addresses import NON_ASCII_ERROR, normalise_email
from alertd.errors import NotYours, QueryError, RateLimited, UsageError
from alertd.kinds import kind_of
from alertd.kinds.kind import Role, member_in, shown_name
from alertd.mail.transactional import (
    CONFIRM_SUBJECT,
    LINK_SUBJECT,
    MANAGE_SUBJECT,
    queue_confirmation,
    queue_mail,
    quoted_query,
)
from alertd.models import Item
from alertd.schedule import Frequency, parse_frequency
from alertd.sources.members import MemberHit, get_member, search_members
from alertd.subscriptions.vocabulary import AlertState, NotifyOn
from alertd.web import service
from alertd.web.context import WebContext

log = logging.getLogger("alertd.web")
PREVIEW_DAYS = 30
PREVIEW_EXAMPLES = 5
MAX_ID = 2**31 - 1
FIELD_MAX = {
    "email": 254,
    "query": 500,
    "member": 100,
    "member_id": 12,
    "frequency": 16,
    "on": 32,
}
EMAIL_ERROR = "Enter an email address like name@example.org"


def field_problem(name: str, value: str) -> str | None:
    """Why a typed value is refused before it is even parsed: control characters, length."""
    allowed = "\t\r\n" if name == "query" else ""
    if (
        any(unicodedata.category(c) in ("Cc", "Cs") and c not in allowed for c in value)
        or "\0" in value
    ):
        return "Remove the control characters from this field"
    if len(value) > FIELD_MAX.get(name, 500):
        return f"Use at most {FIELD_MAX.get(name, 500)} characters"
    return None


@dataclass
class SignupFields:
    """What a person typed into the sign-up form (or sent to the API), unchecked."""

    email: str = ""
    follow: str = "topic"
    query: str = ""
    member: str = ""
    member_id: str = ""
    frequency: str = "daily"
    # What the alert hears about ("tabled,answered", "answered"); empty: the default.
    on: str = ""


@dataclass
class Checked:
    """The outcome of checking sign-up fields: errors by field, else the alert to save."""

    errors: dict[str, str] = field(default_factory=dict)
    email: str = ""
    query: str = ""
    frequency: Frequency = Frequency.DAILY
    # None: the default for the kind of alert (see lifecycle.default_notify_on).
    notify_on: NotifyOn | None = None
    member: MemberHit | None = None
    candidates: list[MemberHit] = field(default_factory=list)
    # The query's canonical form (what emails show, never the text as typed).
    canonical: str = ""

    @property
    def ok(self) -> bool:
        return not self.errors


def email_or_error(value: str) -> tuple[str, str | None]:
    """The normalised address, or why it is refused."""
    problem = field_problem("email", value)
    if problem is not None:
        return "", problem
    try:
        return normalise_email(value), None
    except UsageError as exc:
        return "", NON_ASCII_ERROR if str(exc) == NON_ASCII_ERROR else EMAIL_ERROR


def _check_email(fields: SignupFields, checked: Checked) -> None:
    checked.email, error = email_or_error(fields.email)
    if error is not None:
        checked.errors["email"] = error


def _check_frequency(fields: SignupFields, checked: Checked) -> None:
    try:
        checked.frequency = parse_frequency(fields.frequency)
    except UsageError:
        checked.errors["frequency"] = "Choose immediate, daily or weekly"


def _check_on(fields: SignupFields, checked: Checked) -> None:
    if not fields.on.strip():
        return
    try:
        checked.notify_on = NotifyOn.parse(fields.on)
    except UsageError:
        checked.errors["on"] = "Choose when to hear about questions: when answered, or both"


def _compile(ctx: WebContext, text: str) -> str:
    with Session(ctx.engine) as session:
        return queries.compile_query(session, text).canonical


async def _check_query(ctx: WebContext, fields: SignupFields, checked: Checked) -> None:
    text = " ".join(fields.query.split())
    if not text:
        checked.errors["query"] = "Enter what to follow, for example: school funding"
        return
    try:
        queries.check_query_words(text)
        checked.canonical = await run_in_threadpool(_compile, ctx, text)
    except QueryError as exc:
        checked.errors["query"] = str(exc)
        return
    checked.query = text


def _chosen_id(fields: SignupFields) -> int | None:
    value = fields.member_id.strip()
    if value.isascii() and value.isdigit() and 0 < int(value) <= MAX_ID:
        return int(value)
    return None


async def _check_member(ctx: WebContext, fields: SignupFields, checked: Checked) -> None:
    name = " ".join(fields.member.split())
    chosen_id = _chosen_id(fields)
    if chosen_id is not None:
        member = await run_in_threadpool(get_member, ctx.engine, chosen_id)
        # A name typed over the chosen Member is a new search.
        if member is not None and (not name or name.casefold() == member.name.casefold()):
            checked.member, checked.query = member, f"member:{member.id}"
            return
        if member is None and not name:
            checked.errors["member"] = "Unknown Member: search for them by name"
            return
    if len(name) < 2:
        checked.errors["member"] = "Enter at least two letters of the Member's name"
        return
    found = await search_members(ctx.engine, ctx.settings, name, ctx.clock())
    exact = [hit for hit in found if hit.name.casefold() == name.casefold()]
    if len(found) == 1 or len(exact) == 1:
        member = found[0] if len(found) == 1 else exact[0]
        checked.member, checked.query = member, f"member:{member.id}"
    elif not found:
        checked.errors["member"] = f"No Member found named {name!r}"
    else:
        checked.candidates = found
        checked.errors["member"] = "Several Members match: choose one"


async def check_signup(ctx: WebContext, fields: SignupFields) -> Checked:
    """Check every field (all errors at once); a Member is looked up by name if needed."""
    checked = Checked()
    for name in ("email", "query", "member", "member_id", "frequency", "on"):
        problem = field_problem(name, getattr(fields, name))
        if problem is not None:
            checked.errors[name] = problem
    if checked.errors:
        return checked
    _check_email(fields, checked)
    _check_frequency(fields, checked)
    _check_on(fields, checked)
    if fields.follow == "member":
        await _check_member(ctx, fields, checked)
    elif fields.follow == "topic":
        await _check_query(ctx, fields, checked)
    else:
        checked.errors["follow"] = "Choose a topic or a Member"
    return checked


@dataclass(frozen=True)
class Example:
    """A stored item a preview found, as the sign-up page and the JSON API show it."""

    title: str
    url: str
    # The day it is dated (answered, made, published).
    day: date | None
    # Who asked it, for a question.
    asked_by: str | None

    @classmethod
    def of(cls, item: Item) -> Example:
        asker = member_in(item, Role.ASKER)
        return cls(
            title=kind_of(item).summary(item).title,
            url=item.url,
            day=item.day,
            asked_by=(shown_name(asker.name) or None) if asker else None,
        )


@dataclass(frozen=True)
class Preview:
    """What an alert would have found in the stored answers of the last days."""

    count: int
    days: int
    examples: tuple[Example, ...]


def preview(ctx: WebContext, query_text: str) -> Preview:
    """Stored answers of the last PREVIEW_DAYS days the query matches, newest first.

    Raises:
        QueryError: the query is malformed.
    """
    since: date = (ctx.clock() - timedelta(days=PREVIEW_DAYS)).date()
    # Feed items only if the operator says so: a feed's text may not be for the public, and a
    # preview answers anyone, word by word.
    found = queries.matching_ids(
        ctx.engine, query_text, since, include_feed_items=ctx.settings.web.preview_feed_items
    )
    examples = queries.load_items(ctx.engine, found[:PREVIEW_EXAMPLES])
    return Preview(len(found), PREVIEW_DAYS, tuple(Example.of(item) for item in examples))


def too_broad(ctx: WebContext, query_text: str) -> str | None:
    """Why an alert is refused as too broad to read (as `alertd subscribe` does), or None."""
    rate = queries.daily_match_rate(
        ctx.engine, query_text, include_feed_items=ctx.settings.web.preview_feed_items
    )
    if rate <= queries.BROAD_ALERT_PER_DAY:
        return None
    return (
        f"This alert would match about {rate:.0f} answers a day "
        f"(more than {queries.BROAD_ALERT_PER_DAY}): narrow it down"
    )


def _check_mail_limits(ctx: WebContext, ip: str, email: str) -> bool:
    """False when the address had its share of emails (sent nothing, says nothing).

    Raises:
        RateLimited: too many emails asked for from this IP.
    """
    now = ctx.clock().timestamp()
    limits = ctx.limits
    if not limits.mails_per_ip.allow(ip, now):
        raise RateLimited(limits.mails_per_ip.retry_after(ip, now))
    if not limits.mails_per_address.allow(email.casefold(), now):
        log.warning("email to an address held back: its hourly limit is reached")
        return False
    return True


def address_retry_after(ctx: WebContext, email: str) -> int:
    """Seconds until an address held back by its hourly email limit may be mailed again."""
    return ctx.limits.mails_per_address.retry_after(email.casefold(), ctx.clock().timestamp())


def _queue_mail(
    ctx: WebContext,
    template: str,
    *,
    subscriber_id: int,
    recipient: str,
    subject: str,
    context: dict[str, Any],
    now: datetime,
) -> None:
    """Build the email ``mail/<template>.txt`` + ``.html`` and queue it in the outbox.

    It goes out as digests do: DKIM-signed, from the subscriber's VERP address, retried.
    """
    queue_mail(
        ctx.settings,
        ctx.engine,
        ctx.templates,
        template,
        subscriber_id=subscriber_id,
        recipient=recipient,
        subject=subject,
        context=context,
        now=now,
    )


async def sign_up(ctx: WebContext, checked: Checked, ip: str) -> bool:
    """Save the unconfirmed alert and queue the confirmation (or the manage link) email;
    False when the address has had its hour's share of emails, so none was queued.

    The outcome is the same for a new and a known address, so the caller's page cannot tell.
    The email is sent in the background: a mail server that is down delays it, and the
    outbox retries it as it does digests.

    Raises:
        RateLimited: too many emails asked for from this IP.
    """
    if not _check_mail_limits(ctx, ip, checked.email):
        return False
    now = ctx.clock()
    result = await run_in_threadpool(
        service.register_signup,
        ctx.engine,
        checked.email,
        checked.query,
        checked.frequency,
        max_alerts=ctx.settings.web.max_alerts_per_address,
        confirm_window=ctx.confirm_window,
        now=now,
        notify_on=checked.notify_on,
    )
    links, link_secret = ctx.links, result.link_secret
    confirm_url = None
    if result.alert_id is not None and result.note is None:
        confirm_url = links.url(links.confirm_path(result.alert_id, link_secret, now))
    # The canonical query, quoted and cut short: what was typed goes to any address, so
    # the email must not carry it as a message of its own.
    shown = checked.member.name if checked.member is not None else checked.canonical
    context = {
        "label": quoted_query(shown),
        "frequency": checked.frequency,
        "confirm_url": confirm_url,
        "confirm_days": ctx.settings.web.confirm_days,
        "manage_url": links.url(links.manage_path(result.subscriber_id, link_secret)),
        "note": result.note,
        "max_alerts": ctx.settings.web.max_alerts_per_address,
    }
    template, subject = (
        ("manage", MANAGE_SUBJECT) if result.existing else ("confirm", CONFIRM_SUBJECT)
    )
    # Rendering, signing and the INSERT run off the event loop.
    await run_in_threadpool(
        functools.partial(
            _queue_mail,
            ctx,
            template,
            subscriber_id=result.subscriber_id,
            recipient=result.email,
            subject=subject,
            context=context,
            now=now,
        )
    )
    ctx.sender.wake()
    return True


async def resend_confirmation(ctx: WebContext, subscriber_id: int, alert_id: int, ip: str) -> bool:
    """The manage page's "resend confirmation": a fresh link for one of the subscriber's
    unconfirmed alerts; False when the address had its share of emails this hour.

    Raises:
        NotYours: not one of the subscriber's unconfirmed alerts.
        RateLimited: too many emails asked for from this IP.
    """
    found = await run_in_threadpool(service.subscriber_alerts, ctx.engine, subscriber_id)
    email, views = found if found is not None else ("", [])
    if not any(view.id == alert_id and view.status == AlertState.PENDING for view in views):
        raise NotYours(f"you have no unconfirmed alert with id {alert_id}")
    if not _check_mail_limits(ctx, ip, email):
        return False
    await run_in_threadpool(
        functools.partial(
            queue_confirmation,
            ctx.settings,
            ctx.engine,
            alert_id,
            now=ctx.clock(),
            templates=ctx.templates,
        )
    )
    ctx.sender.wake()
    return True


async def send_manage_link(ctx: WebContext, email: str, ip: str) -> None:
    """Queue the manage link to the address, whether or not it has alerts.

    The same work either way (the subscriber row is made if new, the same email queued in
    the outbox), so neither the answer nor its timing says whether the address is known;
    a mail server that is down only delays the email. An address with no alerts finds an
    empty manage page, as it would by signing up.

    Raises:
        RateLimited: too many emails asked for from this IP.
    """
    if not _check_mail_limits(ctx, ip, email):
        return
    now = ctx.clock()
    # To the address as stored (its first spelling), not as typed now: KATE@example.org
    # must not redirect kate@example.org's link to another spelling of the mailbox.
    subscriber_id, stored_email, link_secret = await run_in_threadpool(
        service.subscriber_for_link, ctx.engine, email, now
    )
    context = {"manage_url": ctx.links.url(ctx.links.manage_path(subscriber_id, link_secret))}
    await run_in_threadpool(
        functools.partial(
            _queue_mail,
            ctx,
            "manage_link",
            subscriber_id=subscriber_id,
            recipient=stored_email,
            subject=LINK_SUBJECT,
            context=context,
            now=now,
        )
    )
    ctx.sender.wake()
