"""What every request handler needs: settings, database, sender, clock, limits, templates."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypeVar, cast

import jinja2
from fastapi import Depends, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool

from alertd.config import Settings
from alertd.errors import RateLimited
from alertd.keys import subkeys
from alertd.links import EXPIRING_LINK_LIFETIME, Action, Links
from alertd.mail.sender import Sender
from alertd.tokens import check_age, parse_token, verify_token
from alertd.web import service
from alertd.web.limits import Limits, client_key

Clock = Callable[[], datetime]
T = TypeVar("T")


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Signed:
    """What a verified link token is for: a subscriber's or alert's id, and the owner's
    current link secret."""

    id: int
    link_secret: str


@dataclass(frozen=True)
class WebContext:
    """One app's state (the app factory makes one; nothing lives in module globals)."""

    settings: Settings
    engine: Engine
    # Sends the emails the app queues in the outbox: the app only wakes it.
    sender: Sender
    clock: Clock
    limits: Limits
    templates: jinja2.Environment

    @property
    def confirm_window(self) -> timedelta:
        return timedelta(days=self.settings.web.confirm_days)

    @property
    def links(self) -> Links:
        return Links.for_settings(self.settings)

    async def read(self, action: Action, token: str) -> Signed:
        """The id a link token is for, and its owner's link secret (to make further links).

        Any configured key verifies (web.secret_keys); the token must be signed with the
        owner's current link secret. Confirmation links expire after web.confirm_days, other
        links made with an issue time after EXPIRING_LINK_LIFETIME.

        Raises:
            InvalidToken: forged, altered, for another action, signed out or its row gone,
                or (TokenExpired) too old.
        """
        # Confirmation links always carry their issue time; any other link may (a sample
        # digest's, see Links.issued_at), and then expires as well.
        expiring = action == "confirm" or token.count(".") == 3
        parsed = parse_token(action, token, expiring=expiring)
        link_secret = await run_in_threadpool(
            service.link_secret_of, self.engine, action, parsed.subject_id
        )
        subject_id = verify_token(parsed, subkeys(self.settings, "links"), link_secret)
        if expiring:
            lifetime = self.confirm_window if action == "confirm" else EXPIRING_LINK_LIFETIME
            check_age(parsed, lifetime, self.clock())
        assert link_secret is not None
        return Signed(subject_id, link_secret)

    async def bounded(self, ip: str, work: Callable[[WebContext, str], T], query_text: str) -> T:
        """Run preview-class work (a preview, a breadth check: each reads the stored history)
        in a thread, within the client's preview rate limit and the process's preview slots.

        Raises:
            RateLimited: the client asked for too many previews this minute.
            Busy: web.preview_concurrency previews are being computed already.
        """
        window, now = self.limits.previews_per_ip, self.clock().timestamp()
        if not window.allow(ip, now):
            raise RateLimited(window.retry_after(ip, now))
        # The slot is released only when the thread is done: anyio does not abandon a
        # worker thread on cancellation, so a client that hangs up frees no CPU early.
        with self.limits.preview_slots.hold():
            return await run_in_threadpool(work, self, query_text)

    def page(self, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        html = self.templates.get_template(f"web/{template}").render(context)
        return HTMLResponse(html, status_code=status_code)


def get_context(request: Request) -> WebContext:
    return cast(WebContext, request.app.state.web)


def client_ip(request: Request) -> str:
    """The client's address as the rate limits count it: IPv4, or the IPv6 /64 (uvicorn
    sets the address from X-Forwarded-For for trusted proxies)."""
    return client_key(request.client.host) if request.client is not None else "unknown"


Ctx = Annotated[WebContext, Depends(get_context)]
