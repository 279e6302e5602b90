"""The HTML pages: sign-up with preview, confirm, manage, unsubscribe, stop, Member lookup,
and an alert's recent matches (a digest's "and N more")."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import BaseModel
from sqlalchemy.engine import Engine
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from alertd.config import Settings
from alertd.digests.items import ComposeMemo
from alertd.errors import Busy, QueryError, RateLimited, UsageError
from alertd.kinds import kind_of
from alertd.kinds.kind import Role, member_in, shown_name
from alertd.models import Alert, Item
from alertd.schedule import FREQUENCIES, parse_frequency
from alertd.sources.members import get_member, search_members
from alertd.subscriptions import lifecycle
from alertd.subscriptions.vocabulary import AlertState
from alertd.web import service
from alertd.web.atom import recent_matches
from alertd.web.context import Ctx, client_ip
from alertd.web.flows import (
    MAX_ID,
    Checked,
    Preview,
    SignupFields,
    address_retry_after,
    check_signup,
    email_or_error,
    field_problem,
    preview,
    resend_confirmation,
    send_manage_link,
    sign_up,
    too_broad,
)

log = logging.getLogger("alertd.web")
router = APIRouter(tags=["pages"], default_response_class=HTMLResponse)
AlertId = Annotated[int, Path(ge=1, le=MAX_ID)]
DONE = {
    "confirmed": "Your alert is confirmed. Answers it matches from now on will be emailed to you.",
    "paused": "The alert is paused: it sends nothing until you resume it.",
    "resumed": "The alert is running again.",
    "frequency": "The frequency is changed.",
    "deleted": "The alert is deleted.",
    "deleted-all": "All your alerts are deleted: you will get no more digests.",
    "resent": "We have sent the confirmation email again: follow its link to start the alert.",
    "resend-held": (
        "A confirmation email went to this address a short while ago: look for it (and in "
        "your spam folder), or try again in an hour."
    ),
}
ALREADY_CONFIRMED = (
    "This alert is already confirmed: a confirmation link works once. To see or change "
    "your alerts, use the manage link at the foot of any alert email, or ask for one by email."
)
PREVIEW_BUSY = (
    "Previews are busy just now, so this one was not counted. Preview again in a few "
    "seconds, or subscribe without one."
)
PREVIEW_LIMITED = (
    "That is a lot of previews in one minute, so this one was not counted. Preview again "
    "in a minute, or subscribe without one."
)


class SignupForm(BaseModel):
    """The sign-up form's fields; checked by hand so errors come back next to each field."""

    email: str = ""
    follow: str = "topic"
    query: str = ""
    member: str = ""
    member_id: str = ""
    frequency: str = "daily"
    on: str = ""
    step: str = "preview"


def _signup_page(
    ctx: Ctx,
    fields: SignupFields,
    checked: Checked,
    status: int = 200,
    found: Preview | None = None,
    preview_note: str | None = None,
) -> HTMLResponse:
    return ctx.page(
        "signup.html",
        status,
        form=fields,
        errors=checked.errors,
        member=checked.member,
        candidates=checked.candidates,
        frequencies=FREQUENCIES,
        preview=found,
        preview_note=preview_note,
    )


def _gone(ctx: Ctx) -> HTMLResponse:
    return ctx.page(
        "message.html",
        404,
        title="This alert no longer exists",
        text="It was deleted. Nothing was changed.",
    )


@router.get("/", summary="Sign-up form")
async def signup_form(
    ctx: Ctx,
    member_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    email: Annotated[str, Query(max_length=254)] = "",
) -> HTMLResponse:
    # "Add an alert" on the manage page fills in the address the person already uses.
    fields, checked = SignupFields(email=email.strip()), Checked()
    if member_id is not None:
        member = await run_in_threadpool(get_member, ctx.engine, member_id)
        if member is not None:
            fields.follow, fields.member, fields.member_id = "member", member.name, str(member.id)
            checked.member = member
    return _signup_page(ctx, fields, checked)


def _rate_limit(ctx: Ctx, kind: Literal["signup", "lookup"], ip: str) -> None:
    window = ctx.limits.signups_per_ip if kind == "signup" else ctx.limits.lookups_per_ip
    now = ctx.clock().timestamp()
    if not window.allow(ip, now):
        raise RateLimited(window.retry_after(ip, now))


@router.post("/signup", summary="Preview an alert, or sign up for it")
async def signup_submit(
    ctx: Ctx,
    request: Request,
    fields: Annotated[SignupForm, Form()],
) -> HTMLResponse:
    ip = client_ip(request)
    subscribing = fields.step == "subscribe"
    _rate_limit(ctx, "signup" if subscribing else "lookup", ip)
    typed = SignupFields(
        fields.email,
        fields.follow,
        fields.query,
        fields.member,
        fields.member_id,
        fields.frequency,
        fields.on,
    )
    checked = await check_signup(ctx, typed)
    if checked.member is not None:
        typed.member, typed.member_id = checked.member.name, str(checked.member.id)
    if not checked.ok:
        return _signup_page(ctx, typed, checked, 422)
    if subscribing:
        try:
            broad = await ctx.bounded(ip, too_broad, checked.query)
        except (Busy, RateLimited) as exc:
            # The person has filled in the form: a busy moment must not lose the sign-up.
            # The estimate only advises (the command line saves a broad alert with --force)
            # and the alert still waits for its confirmation email.
            log.info("sign-up taken without its breadth check: %s", exc)
            broad = None
        if broad is not None:
            checked.errors["member" if typed.follow == "member" else "query"] = broad
            return _signup_page(ctx, typed, checked, 422)
        if await sign_up(ctx, checked, ip):
            return ctx.page("check_email.html", email=checked.email, sent=True)
        # Held back by the address's hourly limit (whoever asked, known address or not, so
        # saying so tells nothing about who has alerts): nothing saved, nothing sent.
        page = ctx.page("check_email.html", 429, email=checked.email, sent=False)
        page.headers["Retry-After"] = str(address_retry_after(ctx, checked.email))
        return page
    try:
        found = await ctx.bounded(ip, preview, checked.query)
    except QueryError as exc:  # a Member or department renamed since the check
        checked.errors["query"] = str(exc)
        return _signup_page(ctx, typed, checked, 422)
    except (Busy, RateLimited) as exc:
        # The form comes back as typed, with Subscribe: the preview is a courtesy.
        busy = isinstance(exc, Busy)
        note = PREVIEW_BUSY if busy else PREVIEW_LIMITED
        page = _signup_page(ctx, typed, checked, 503 if busy else 429, preview_note=note)
        page.headers["Retry-After"] = str(exc.retry_after_s)
        return page
    return _signup_page(ctx, typed, checked, found=found)


@router.get("/confirm/{token}", summary="Confirmation link: a page with a button")
async def confirm_page(ctx: Ctx, token: str) -> HTMLResponse:
    signed = await ctx.read("confirm", token)
    alert = await run_in_threadpool(service.pending_alert, ctx.engine, signed.id)
    if alert is None:
        return _gone(ctx)
    if alert.status != AlertState.PENDING:
        return _already_confirmed(ctx)
    return ctx.page("confirm.html", alert=alert, token=token)


def _already_confirmed(ctx: Ctx) -> HTMLResponse:
    # Never the manage page: a confirmation link (forwarded, or read from a log) is not
    # a key to the subscriber's alerts once it has done its one job.
    return ctx.page("message.html", title="Already confirmed", text=ALREADY_CONFIRMED)


@router.post("/confirm/{token}", summary="Confirm an alert", response_model=None)
async def confirm_submit(ctx: Ctx, token: str) -> HTMLResponse | RedirectResponse:
    signed = await ctx.read("confirm", token)
    alert = await run_in_threadpool(service.pending_alert, ctx.engine, signed.id)
    if alert is None:
        return _gone(ctx)
    done = await run_in_threadpool(lifecycle.confirm, ctx.engine, signed.id, ctx.clock())
    if not done:
        return _already_confirmed(ctx)
    subscriber_id = await run_in_threadpool(service.owner_of, ctx.engine, signed.id)
    manage = ctx.links.manage_path(subscriber_id, signed.link_secret)
    return RedirectResponse(f"{manage}?done=confirmed", status_code=303)


@router.get("/manage", summary="Ask for the manage link by email")
async def manage_request_form(ctx: Ctx) -> HTMLResponse:
    return ctx.page("manage_request.html", email="", error=None, sent=False)


@router.post("/manage", summary="Email the manage link to an address that has alerts")
async def manage_request(
    ctx: Ctx, request: Request, email: Annotated[str, Form()] = ""
) -> HTMLResponse:
    address, error = email_or_error(email)
    if error is not None:
        return ctx.page("manage_request.html", 422, email=email, error=error, sent=False)
    await send_manage_link(ctx, address, client_ip(request))
    return ctx.page("manage_request.html", email=address, error=None, sent=True)


@router.get("/manage/{token}", summary="An address's alerts, with pause, resume, delete")
async def manage_page(ctx: Ctx, token: str, done: str | None = None) -> HTMLResponse:
    signed = await ctx.read("manage", token)
    found = await run_in_threadpool(service.subscriber_alerts, ctx.engine, signed.id)
    if found is None:
        return ctx.page(
            "message.html", 404, title="No alerts here", text="There are no alerts for this link."
        )
    email, alerts = found
    return ctx.page(
        "manage.html",
        email=email,
        alerts=alerts,
        feed_urls={
            a.id: ctx.links.url(ctx.links.feed_path(a.id, signed.link_secret)) for a in alerts
        },
        token=token,
        done=DONE.get(done or ""),
        frequencies=FREQUENCIES,
        signup_url=f"/?{urlencode({'email': email})}",
    )


def _back(ctx: Ctx, token: str, done: str) -> RedirectResponse:
    return RedirectResponse(f"/manage/{token}?done={done}", status_code=303)


@router.post(
    "/manage/{token}/alerts/{alert_id}/frequency",
    summary="Change the frequency",
    response_model=None,
)
async def manage_frequency(
    ctx: Ctx, token: str, alert_id: AlertId, frequency: Annotated[str, Form()] = ""
) -> HTMLResponse | RedirectResponse:
    subscriber_id = (await ctx.read("manage", token)).id
    try:
        chosen = parse_frequency(frequency)
    except UsageError:
        text = "Choose immediate, daily or weekly. Nothing was changed."
        return ctx.page("message.html", 422, title="Unknown frequency", text=text)
    now = ctx.clock()
    await run_in_threadpool(
        lambda: service.update_alert(ctx.engine, subscriber_id, alert_id, now=now, frequency=chosen)
    )
    return _back(ctx, token, "frequency")


# Before the pause/resume/delete route, whose {action} would take this path too.
@router.post(
    "/manage/{token}/alerts/{alert_id}/resend", summary="Send an unconfirmed alert's link again"
)
async def manage_resend(
    ctx: Ctx, request: Request, token: str, alert_id: AlertId
) -> RedirectResponse:
    subscriber_id = (await ctx.read("manage", token)).id
    sent = await resend_confirmation(ctx, subscriber_id, alert_id, client_ip(request))
    return _back(ctx, token, "resent" if sent else "resend-held")


async def _confirm_delete(
    ctx: Ctx, token: str, subscriber_id: int, alert_id: int | None
) -> HTMLResponse:
    """The question before a delete: the manage page's buttons post here first, so a slip of
    the finger (or a browser without JavaScript) never deletes anything at once."""
    found = await run_in_threadpool(service.subscriber_alerts, ctx.engine, subscriber_id)
    alerts = found[1] if found else []
    if alert_id is not None:
        alerts = [alert for alert in alerts if alert.id == alert_id]
        if not alerts:
            return _gone(ctx)
    action = f"/manage/{token}/" + (
        f"alerts/{alert_id}/delete" if alert_id is not None else "delete-all"
    )
    return ctx.page(
        "confirm_delete.html",
        alerts=alerts,
        action=action,
        back=f"/manage/{token}",
        every=(alert_id is None),
    )


@router.post(
    "/manage/{token}/alerts/{alert_id}/{action}",
    summary="Pause, resume or delete (a delete asks first, unless confirmed=yes)",
    response_model=None,
)
async def manage_action(
    ctx: Ctx,
    token: str,
    alert_id: AlertId,
    action: Literal["pause", "resume", "delete"],
    confirmed: Annotated[str, Form()] = "",
) -> HTMLResponse | RedirectResponse:
    subscriber_id = (await ctx.read("manage", token)).id
    now = ctx.clock()
    if action == "delete":
        if confirmed != "yes":
            return await _confirm_delete(ctx, token, subscriber_id, alert_id)
        await run_in_threadpool(
            lambda: lifecycle.stop_alert(ctx.engine, alert_id, now, subscriber_id=subscriber_id)
        )
        return _back(ctx, token, "deleted")
    paused = action == "pause"
    await run_in_threadpool(
        lambda: service.update_alert(ctx.engine, subscriber_id, alert_id, now=now, paused=paused)
    )
    return _back(ctx, token, "paused" if paused else "resumed")


@router.post(
    "/manage/{token}/delete-all",
    summary="Delete every alert of the address (asks first, unless confirmed=yes)",
    response_model=None,
)
async def manage_delete_all(
    ctx: Ctx, token: str, confirmed: Annotated[str, Form()] = ""
) -> HTMLResponse | RedirectResponse:
    subscriber_id = (await ctx.read("manage", token)).id
    if confirmed != "yes":
        return await _confirm_delete(ctx, token, subscriber_id, None)
    await run_in_threadpool(lifecycle.stop_all, ctx.engine, subscriber_id, ctx.clock())
    return _back(ctx, token, "deleted-all")


@router.post("/manage/{token}/sign-out", summary="Sign out of all links: revoke every link")
async def manage_sign_out(ctx: Ctx, token: str) -> HTMLResponse:
    subscriber_id = (await ctx.read("manage", token)).id
    await run_in_threadpool(service.sign_out, ctx.engine, subscriber_id)
    return ctx.page(
        "message.html",
        title="Signed out of all links",
        text=(
            "Every link we sent you before (manage, unsubscribe, stop, feed, confirmation) "
            "no longer works, this one included. Your alerts keep running; new emails carry "
            "new links. To manage your alerts now, ask for a new link by email."
        ),
    )


@router.get("/unsubscribe/{token}", summary="Unsubscribe link: a page with a button")
async def unsubscribe_page(ctx: Ctx, token: str) -> HTMLResponse:
    subscriber_id = (await ctx.read("unsubscribe", token)).id
    found = await run_in_threadpool(service.subscriber_alerts, ctx.engine, subscriber_id)
    count = len(found[1]) if found else 0
    return ctx.page("unsubscribe.html", token=token, count=count, done=False)


@router.post("/unsubscribe/{token}", summary="One-click unsubscribe (RFC 8058)")
async def unsubscribe_submit(ctx: Ctx, token: str) -> HTMLResponse:
    subscriber_id = (await ctx.read("unsubscribe", token)).id
    count = await run_in_threadpool(lifecycle.stop_all, ctx.engine, subscriber_id, ctx.clock())
    return ctx.page("unsubscribe.html", token=token, count=count, done=True)


@router.get("/alerts/stop/{token}", summary="Stop-this-alert link: a page with a button")
async def stop_page(ctx: Ctx, token: str) -> HTMLResponse:
    alert_id = (await ctx.read("stop", token)).id
    alert = await run_in_threadpool(service.pending_alert, ctx.engine, alert_id)
    return ctx.page("stop.html", token=token, alert=alert, done=False)


@router.post("/alerts/stop/{token}", summary="Stop one alert")
async def stop_submit(ctx: Ctx, token: str) -> HTMLResponse:
    alert_id = (await ctx.read("stop", token)).id
    alert = await run_in_threadpool(service.stop_alert_by_id, ctx.engine, alert_id, ctx.clock())
    return ctx.page("stop.html", token=token, alert=alert, done=True)


@router.get("/members", summary="Find a Member by name")
async def members_page(ctx: Ctx, request: Request, q: str = "") -> HTMLResponse:
    name = " ".join(q.split())
    if not name:
        return ctx.page("members.html", q="", error=None, members=None)
    error = field_problem("member", q) or ("Enter at least two letters" if len(name) < 2 else None)
    if error is not None:
        return ctx.page("members.html", 422, q=q, error=error, members=None)
    _rate_limit(ctx, "lookup", client_ip(request))
    found = await search_members(ctx.engine, ctx.settings, name, ctx.clock())
    return ctx.page("members.html", q=name, error=None, members=found)


# How many of an alert's latest matches its "more" page lists: more than a digest holds.
MORE_PAGE_ITEMS = 200
MORE_SUMMARY_CHARS = 300


@dataclass(frozen=True)
class Match:
    """One of an alert's matches as its "more" page lists it."""

    heading: str
    # Only http(s) links are linked: anything else is shown as text, never followed.
    url: str | None
    where: str
    asked_by: str
    day: date | None
    summary: str


@dataclass(frozen=True)
class AlertMatches:
    label: str
    matches: tuple[Match, ...]


def alert_matches(engine: Engine, settings: Settings, alert_id: int) -> AlertMatches | None:
    """An alert's label and latest matches; None when it was deleted."""
    with Session(engine) as session:
        alert = session.get(Alert, alert_id)
        if alert is None or alert.unsubscribed_at is not None:
            return None
        label = ComposeMemo(settings).labels(session, [alert])[alert.id]
        matches = tuple(_match(item) for item in recent_matches(session, alert_id, MORE_PAGE_ITEMS))
    return AlertMatches(label, matches)


def _match(item: Item) -> Match:
    summary = kind_of(item).summary(item)
    asker = member_in(item, Role.ASKER)
    return Match(
        heading=summary.title,
        url=item.url if item.url.startswith(("https://", "http://")) else None,
        where=summary.where,
        asked_by=shown_name(asker.name) if asker else "",
        day=summary.day,
        summary=_summary(summary.text),
    )


def _summary(text: str) -> str:
    flat = " ".join(text.split())
    if len(flat) <= MORE_SUMMARY_CHARS:
        return flat
    return flat[:MORE_SUMMARY_CHARS].rsplit(" ", 1)[0] + " …"


@router.get("/alerts/more/{token}", summary="An alert's recent matches (a digest's 'and N more')")
async def more_page(ctx: Ctx, token: str) -> HTMLResponse:
    signed = await ctx.read("more", token)
    found = await run_in_threadpool(alert_matches, ctx.engine, ctx.settings, signed.id)
    if found is None:
        return _gone(ctx)
    feed_url = ctx.links.url(ctx.links.feed_path(signed.id, signed.link_secret))
    return ctx.page("more.html", found=found, feed_url=feed_url)
