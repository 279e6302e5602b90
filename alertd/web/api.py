"""The JSON API: create, list, change and delete alerts; find Members; preview a query."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from alertd.errors import InvalidToken, QueryError, RateLimited
from alertd.htmltext import web_link
from alertd.schedule import Frequency
from alertd.sources.members import MemberHit, search_members
from alertd.subscriptions import lifecycle
from alertd.subscriptions.vocabulary import AlertState, Stage
from alertd.web import service
from alertd.web.context import Ctx, client_ip
from alertd.web.flows import (
    MAX_ID,
    SignupFields,
    address_retry_after,
    check_signup,
    field_problem,
    preview,
    sign_up,
    too_broad,
)

router = APIRouter(prefix="/api", tags=["api"])
_bearer = HTTPBearer(
    auto_error=False,
    description="The token at the end of the manage link (`/manage/TOKEN`) in every email.",
)
AlertId = Annotated[int, Path(ge=1, le=MAX_ID)]
SENT = (
    "If the address can receive mail, an email is on its way: follow its link to confirm "
    "the alert (an address that already has alerts is sent its manage link)."
)


class AlertCreate(BaseModel):
    """A new alert: a topic query, or a Member by id (from /api/members)."""

    # An unknown field is refused (422 naming it), never silently ignored.
    model_config = ConfigDict(extra="forbid")

    email: str = Field(max_length=1000, examples=["parent@example.org"])
    query: str | None = Field(default=None, max_length=1000, examples=['"special needs"'])
    member_id: int | None = Field(default=None, ge=1, le=MAX_ID, examples=[4138])
    frequency: Frequency = Frequency.DAILY
    on: list[Stage] | None = Field(
        default=None,
        min_length=1,
        description='What to hear about: ["answered"], or ["tabled", "answered"] (questions as '
        "they are tabled, then again when answered). "
        'Default: ["answered"] for a topic, ["tabled", "answered"] for a Member.',
        examples=[["tabled", "answered"]],
    )


class AlertUpdate(BaseModel):
    """Changes to an alert; fields left out stay as they are. An unknown field (say
    {"status": "paused"}) is refused with 422 naming it: it would otherwise change nothing
    and answer 200."""

    model_config = ConfigDict(extra="forbid")

    frequency: Frequency | None = None
    paused: bool | None = None


class AlertOut(BaseModel):
    id: int
    label: str
    query: str
    frequency: Frequency
    # The alert's own state (see service.AlertView): never SUSPENDED.
    status: Literal[AlertState.PENDING, AlertState.ACTIVE, AlertState.PAUSED]
    created_at: datetime
    on: list[str]


class AlertList(BaseModel):
    email: str
    alerts: list[AlertOut]


class Accepted(BaseModel):
    status: Literal["accepted"] = "accepted"
    detail: str = SENT


class MemberOut(BaseModel):
    id: int
    name: str
    party: str | None
    constituency: str | None
    house: str | None
    query: str = Field(description="The query that follows this Member")


class Example(BaseModel):
    heading: str
    date_answered: str | None
    asked_by: str | None
    # None when the stored link is not an absolute http(s) one.
    url: str | None


class PreviewOut(BaseModel):
    count: int
    days: int
    examples: list[Example]


class Problem(BaseModel):
    detail: str


class FieldErrors(BaseModel):
    detail: list[dict[str, object]]


def _errors(errors: dict[str, str]) -> JSONResponse:
    detail = [
        {"loc": ["body", name], "msg": msg, "type": "value_error"} for name, msg in errors.items()
    ]
    return JSONResponse({"detail": detail}, status_code=422)


async def subscriber_of(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> int:
    """The subscriber a manage token is for.

    Raises:
        InvalidToken: no token, or one that is forged, altered or for another action.
    """
    if credentials is None:
        raise InvalidToken("send the token of your manage link: Authorization: Bearer TOKEN")
    ctx = request.app.state.web
    signed = await ctx.read("manage", credentials.credentials)
    subscriber_id: int = signed.id
    return subscriber_id


Subscriber = Annotated[int, Depends(subscriber_of)]
_AUTH_RESPONSES: dict[int | str, dict[str, object]] = {
    401: {"model": Problem, "description": "No valid manage token"},
    404: {"model": Problem, "description": "No such alert among yours"},
}


def _alert_out(view: service.AlertView) -> AlertOut:
    fields = {**view.__dict__, "on": list(view.notify_on.stages)}
    del fields["notify_on"]
    return AlertOut(**fields)


@router.post(
    "/alerts",
    status_code=202,
    summary="Sign up for an alert (a confirmation email is sent)",
    responses={
        422: {"model": FieldErrors, "description": "A field is refused"},
        429: {"model": Problem, "description": "Too many sign-ups, or breadth checks"},
        503: {"model": Problem, "description": "Busy checking others' alerts: retry"},
    },
    response_model=Accepted,
)
async def create_alert(ctx: Ctx, request: Request, body: AlertCreate) -> Accepted | JSONResponse:
    ip = client_ip(request)
    now = ctx.clock().timestamp()
    if not ctx.limits.signups_per_ip.allow(ip, now):
        raise RateLimited(ctx.limits.signups_per_ip.retry_after(ip, now))
    if (body.query is None) == (body.member_id is None):
        return _errors({"query": "Give either a query or a member_id"})
    fields = SignupFields(
        email=body.email,
        follow="topic" if body.query is not None else "member",
        query=body.query or "",
        member_id=str(body.member_id or ""),
        frequency=body.frequency,
        on=",".join(body.on or ()),
    )
    checked = await check_signup(ctx, fields)
    if checked.errors:
        return _errors({"member_id" if k == "member" else k: v for k, v in checked.errors.items()})
    broad = await ctx.bounded(ip, too_broad, checked.query)
    if broad is not None:
        return _errors({"query" if body.query is not None else "member_id": broad})
    if not await sign_up(ctx, checked, ip):
        # Nothing was saved or sent: say so, rather than "check your email".
        raise RateLimited(address_retry_after(ctx, checked.email))
    return Accepted()


@router.get("/alerts", summary="Your alerts", response_model=AlertList, responses=_AUTH_RESPONSES)
async def list_alerts(ctx: Ctx, subscriber_id: Subscriber) -> AlertList | JSONResponse:
    found = await run_in_threadpool(service.subscriber_alerts, ctx.engine, subscriber_id)
    if found is None:
        return JSONResponse({"detail": "there are no alerts for this token"}, status_code=404)
    email, alerts = found
    return AlertList(email=email, alerts=[_alert_out(view) for view in alerts])


@router.patch(
    "/alerts/{alert_id}",
    summary="Pause, resume or change the frequency of one of your alerts",
    response_model=AlertOut,
    responses=_AUTH_RESPONSES,
)
async def update_alert(
    ctx: Ctx, subscriber_id: Subscriber, alert_id: AlertId, body: AlertUpdate
) -> AlertOut:
    now = ctx.clock()
    view = await run_in_threadpool(
        lambda: service.update_alert(
            ctx.engine,
            subscriber_id,
            alert_id,
            now=now,
            paused=body.paused,
            frequency=body.frequency,
        )
    )
    return _alert_out(view)


@router.delete(
    "/alerts/{alert_id}",
    status_code=204,
    summary="Delete one of your alerts",
    responses=_AUTH_RESPONSES,
)
async def delete_alert(ctx: Ctx, subscriber_id: Subscriber, alert_id: AlertId) -> Response:
    now = ctx.clock()
    await run_in_threadpool(
        lambda: lifecycle.stop_alert(ctx.engine, alert_id, now, subscriber_id=subscriber_id)
    )
    return Response(status_code=204)


def _member_out(hit: MemberHit) -> MemberOut:
    return MemberOut(
        id=hit.id,
        name=hit.name,
        party=hit.party,
        constituency=hit.constituency,
        house=hit.house,
        query=f"member:{hit.id}",
    )


@router.get(
    "/members",
    summary="Find Members by name",
    response_model=list[MemberOut],
    responses={422: {"model": FieldErrors}, 429: {"model": Problem}},
)
async def find_members(
    ctx: Ctx, request: Request, q: Annotated[str, Query(min_length=2, max_length=100)]
) -> list[MemberOut] | JSONResponse:
    name = " ".join(q.split())
    problem = field_problem("member", q) or ("at least two letters" if len(name) < 2 else None)
    if problem is not None:
        return _errors({"q": problem})
    ip, now = client_ip(request), ctx.clock().timestamp()
    if not ctx.limits.lookups_per_ip.allow(ip, now):
        raise RateLimited(ctx.limits.lookups_per_ip.retry_after(ip, now))
    found = await search_members(ctx.engine, ctx.settings, name, ctx.clock())
    return [_member_out(hit) for hit in found]


@router.get(
    "/preview",
    summary="What a query would have matched in the stored answers of the last 30 days",
    response_model=PreviewOut,
    responses={
        422: {"model": FieldErrors},
        429: {"model": Problem, "description": "Too many previews from this client"},
        503: {"model": Problem, "description": "Busy computing other previews: retry"},
    },
)
async def preview_query(
    ctx: Ctx, request: Request, q: Annotated[str, Query(min_length=1, max_length=500)]
) -> PreviewOut | JSONResponse:
    problem = field_problem("query", q)
    if problem is not None:
        return _errors({"q": problem})
    try:
        found = await ctx.bounded(client_ip(request), preview, q)
    except QueryError as exc:
        return _errors({"q": str(exc)})
    examples = [
        Example(
            heading=example.title,
            date_answered=example.day.isoformat() if example.day else None,
            asked_by=example.asked_by,
            url=web_link(example.url),
        )
        for example in found.examples
    ]
    return PreviewOut(count=found.count, days=found.days, examples=examples)
