"""Serving the web app in-process with uvicorn until a stop event is set."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Iterator

import uvicorn
from sqlalchemy.engine import Engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from alertd.config import Settings
from alertd.db import open_database
from alertd.errors import ConfigError
from alertd.mail.sender import Sender
from alertd.mail.transports import MailerFactory
from alertd.metrics import Metrics
from alertd.web.app import create_app, metrics_response
from alertd.web.context import Clock, utc_now

log = logging.getLogger("alertd.web")


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signals to its owner (the daemon or `alertd web`)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_web(
    settings: Settings,
    engine: Engine,
    stop: asyncio.Event,
    *,
    mailer: MailerFactory | None = None,
    sock: socket.socket | None = None,
    clock: Clock = utc_now,
    metrics: Metrics | None = None,
    sender: Sender | None = None,
) -> None:
    """Serve the web app on web.host:web.port (or a bound ``sock``) until ``stop`` is set,
    and /metrics alone on web.metrics_host:web.metrics_port when that is set.

    Requests in flight are finished, then the app's sender (its lifespan) finishes the
    send in flight; X-Forwarded-For/-Proto are believed from web.forwarded_allow_ips only.

    Raises:
        ConfigError: an address cannot be bound.
    """
    metrics = metrics or Metrics()
    app = create_app(settings, engine, mailer, clock=clock, metrics=metrics, sender=sender)
    web = settings.web
    apps: list[tuple[ASGIApp, socket.socket]] = [
        (app, sock if sock is not None else listen(web.host, web.port))
    ]
    try:
        if web.metrics_port is not None:
            apps.append((metrics_app(metrics), listen(web.metrics_host, web.metrics_port)))
            log.info("metrics: serving /metrics on %s:%d", web.metrics_host, web.metrics_port)
        async with asyncio.TaskGroup() as servers:
            for served, listening in apps:
                servers.create_task(_serve_until(_server(settings, served), [listening], stop))
    finally:
        for _, listening in apps:
            if listening is not sock:
                listening.close()
    log.info("web server stopped")


def metrics_app(metrics: Metrics) -> Starlette:
    """/metrics and nothing else, for the loopback listener at web.metrics_port."""

    async def exposition(request: Request) -> Response:
        return metrics_response(metrics)

    return Starlette(routes=[Route("/metrics", exposition)])


def _server(settings: Settings, app: ASGIApp) -> _Server:
    config = uvicorn.Config(
        app,
        host=settings.web.host,
        port=settings.web.port,
        proxy_headers=True,
        forwarded_allow_ips=settings.web.forwarded_allow_ips,
        log_config=None,
        access_log=False,
        lifespan="on",
        server_header=False,
        timeout_graceful_shutdown=max(1, round(settings.delivery.shutdown_timeout_s)),
    )
    return _Server(config)


async def _serve_until(server: _Server, sockets: list[socket.socket], stop: asyncio.Event) -> None:
    serving = asyncio.create_task(server.serve(sockets=sockets))
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        server.should_exit = True
        stopping.cancel()
        await serving


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port (uvicorn listens on it).

    Raises:
        ConfigError: the address cannot be bound (in use, not ours).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"web: cannot listen on {host}:{port}: {exc.strerror}") from exc
    return sock


async def run_web(settings: Settings) -> int:
    """`alertd web`: serve the web app alone until SIGTERM or Ctrl-C."""
    engine = open_database(settings.database)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        log.info(
            "web: serving %s on %s:%d", settings.web.base_url, settings.web.host, settings.web.port
        )
        await serve_web(settings, engine, stop)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        engine.dispose()
    return 0
