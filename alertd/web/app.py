"""The FastAPI app factory: pages, JSON API, error pages, security headers, /healthz."""

from __future__ import annotations

import contextlib
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from http import HTTPStatus

import sqlalchemy as sa
from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import (
    http_exception_handler,
    request_validation_exception_handler,
)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from alertd import __version__
from alertd.config import Settings
from alertd.errors import Busy, InvalidToken, NotYours, RateLimited, TokenExpired
from alertd.mail.sender import DrainOptions, Sender
from alertd.mail.transactional import templates_environment
from alertd.mail.transports import MailerFactory, mailer_factory
from alertd.metrics import Metrics
from alertd.pipeline import make_worker_id
from alertd.web import api, atom, pages
from alertd.web.context import Clock, WebContext, get_context, utc_now
from alertd.web.guards import BodyLimit, SameOrigin, slash_redirects
from alertd.web.limits import Limits

log = logging.getLogger("alertd.web")
SECURITY_HEADERS = {
    # Links carry tokens: never leak them in a Referer to another site, never cache the
    # pages. (Not "no-referrer": a browser then sends "Origin: null" with our own forms.)
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
}


class Health(BaseModel):
    status: str
    version: str


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def _problem(
    request: Request, status: int, title: str, text: str, headers: dict[str, str] | None = None
) -> Response:
    if _is_api(request):
        return JSONResponse({"detail": f"{title}. {text}"}, status_code=status, headers=headers)
    response: HTMLResponse = get_context(request).page(
        "message.html", status, title=title, text=text
    )
    response.headers.update(headers or {})
    return response


async def _refuse(request: Request, status: int, title: str, text: str) -> Response:
    return _problem(request, status, title, text)


async def _invalid_token(request: Request, exc: Exception) -> Response:
    if isinstance(exc, TokenExpired):
        title, text = "This link has expired", "Nothing was changed. Sign up again for a new link."
    else:
        title = "This link is not valid"
        text = "It may have been altered or cut short. Nothing was changed."
    if _is_api(request):
        return _problem(request, 401, title, text, {"WWW-Authenticate": "Bearer"})
    return _problem(request, 400, title, text)


async def _not_yours(request: Request, exc: Exception) -> Response:
    return _problem(
        request, 404, "No such alert", "It is not one of your alerts. Nothing was changed."
    )


async def _rate_limited(request: Request, exc: Exception) -> Response:
    retry = exc.retry_after_s if isinstance(exc, RateLimited) else 60
    text = f"Please try again in {max(1, retry // 60)} minute(s)."
    return _problem(request, 429, "Too many requests", text, {"Retry-After": str(retry)})


async def _busy(request: Request, exc: Exception) -> Response:
    retry = exc.retry_after_s if isinstance(exc, Busy) else 5
    text = f"Other previews are being worked out: please try again in {retry} seconds."
    return _problem(request, 503, "Busy", text, {"Retry-After": str(retry)})


async def _http_error(request: Request, exc: Exception) -> Response:
    # FastAPI answers JSON for every error; a person who mistyped an address gets a page.
    assert isinstance(exc, StarletteHTTPException)
    if _is_api(request):
        return await http_exception_handler(request, exc)
    if exc.status_code == 404:
        title, text = "Page not found", "There is no page at this address."
    else:
        title = HTTPStatus(exc.status_code).phrase
        text = "This address does not take that kind of request."
    return _problem(request, exc.status_code, title, text, dict(exc.headers or {}))


async def _bad_request(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    if _is_api(request):
        return await request_validation_exception_handler(request, exc)
    text = "Part of this address or form is not valid (it may have been cut short)."
    return _problem(request, 422, "Not a valid request", text + " Nothing was changed.")


async def _security_headers(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    response = await call_next(request)
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def metrics_response(metrics: Metrics) -> Response:
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


def _bearer_is(request: Request, token: str) -> bool:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), token.encode())


def _ping(engine: Engine) -> None:
    with engine.connect() as connection:
        connection.execute(sa.text("SELECT 1"))


def _own_sender(
    settings: Settings,
    engine: Engine,
    mailer: MailerFactory | None,
    clock: Clock,
    metrics: Metrics,
) -> Sender:
    """The sender of `alertd web` alone: woken by the app's emails, and every
    delivery.send_interval_s for retries (and anything else queued)."""
    make_mailer = mailer or mailer_factory(
        settings.mail.delivery, settings.mail.maildir, settings.smtp
    )
    options = DrainOptions.for_settings(
        settings, f"{make_worker_id()}:web", metrics.smtp_seconds.observe
    )
    interval_s = settings.delivery.send_interval_s
    return Sender(engine, make_mailer, options, interval_s=interval_s, clock=clock)


def create_app(
    settings: Settings,
    engine: Engine,
    mailer: MailerFactory | None = None,
    *,
    clock: Clock = utc_now,
    metrics: Metrics | None = None,
    sender: Sender | None = None,
) -> FastAPI:
    """The web app: sign-up, confirmation, manage and unsubscribe pages, and the JSON API.

    Its emails are queued in the outbox; the sender runs in the app's lifespan and is woken
    for each, so no request waits on the mail server.

    Args:
        mailer: makes the mailer of the app's own sender; by default the configured
            delivery (SMTP or Maildir), as the daemon uses.
        clock: the current time (aware, UTC); tests move it to expire links.
        metrics: the daemon's counters (Prometheus text format), at /metrics on the
            web.metrics_port listener (server.py) and, with web.metrics_token, here.
        sender: the daemon's sender (`alertd run`), so one drain runs at a time in the
            process; by default the app makes its own, which also drains every
            delivery.send_interval_s (retries).
    """
    exported = metrics or Metrics()
    sender = sender or _own_sender(settings, engine, mailer, clock, exported)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with sender.running(settings.delivery.shutdown_timeout_s):
            yield

    docs = settings.web.openapi_docs
    app = FastAPI(
        title="alertd",
        version=__version__,
        description="Email alerts for UK Parliament written answers: sign up, manage, stop.",
        openapi_url="/openapi.json" if docs else None,
        docs_url="/docs" if docs else None,
        redoc_url=None,
        lifespan=lifespan,
        redirect_slashes=False,
    )
    app.state.web = WebContext(
        settings=settings,
        engine=engine,
        sender=sender,
        clock=clock,
        limits=Limits.from_settings(settings.web),
        templates=templates_environment(),
    )
    app.include_router(pages.router)
    app.include_router(api.router)
    app.include_router(atom.router)
    app.add_exception_handler(InvalidToken, _invalid_token)
    app.add_exception_handler(NotYours, _not_yours)
    app.add_exception_handler(RateLimited, _rate_limited)
    app.add_exception_handler(Busy, _busy)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _bad_request)
    app.router.default = slash_redirects(
        app.router.routes, settings.web.base_url, app.router.default
    )
    # Outermost last: security headers on every answer, then cross-site posts refused before
    # a body is read, then the body capped.
    app.add_middleware(BodyLimit, max_bytes=settings.web.max_body_bytes, refuse=_refuse)
    app.add_middleware(SameOrigin, base_url=settings.web.base_url, refuse=_refuse)
    app.middleware("http")(_security_headers)

    @app.get(
        "/healthz",
        tags=["ops"],
        summary="Liveness and database check",
        response_model=Health,
        responses={503: {"model": Health, "description": "The database is unavailable"}},
    )
    async def healthz() -> Health | JSONResponse:
        try:
            await run_in_threadpool(_ping, engine)
        except SQLAlchemyError as exc:
            log.error("health check: database unavailable: %s", exc)
            body = {"status": "database unavailable", "version": __version__}
            return JSONResponse(body, status_code=503)
        return Health(status="ok", version=__version__)

    token = settings.web.metrics_token
    if token is not None:

        @app.get("/metrics", tags=["ops"], summary="Prometheus metrics", include_in_schema=False)
        async def prometheus_metrics(request: Request) -> Response:
            if not _bearer_is(request, token.get_secret_value()):
                return _problem(request, 404, "Not found", "There is no page here.")
            return metrics_response(exported)

    return app
