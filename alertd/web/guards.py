"""Checks on every request before a handler sees it: body size, cross-site posts, redirects."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from urllib.parse import quote, urlsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Makes the refusal (a page or a JSON problem) for a request: status, title, text.
Refuse = Callable[[Request, int, str, str], Awaitable[Response]]
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# RFC 8058 one-click unsubscribe is posted by mail providers from anywhere; its token is
# what protects it.
ORIGIN_EXEMPT_PREFIXES = ("/unsubscribe/",)
# Before refusing a body, read and drop up to this much more of it (for at most DRAIN_S) so
# that the client, still sending, reads the 413 rather than a reset; a larger body is cut
# off at once (such a client may see only the reset).
DRAIN_BYTES = 1 << 20
DRAIN_S = 5.0
# Characters a path keeps unescaped in a Location header (RFC 3986 pchar and "/").
_PATH_SAFE = "/:@!$&'()*+,;=-._~"


def origin_of(url: str) -> str:
    """scheme://host[:port] of a URL, lower-cased, the default port left out."""
    parts = urlsplit(url)
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        return "invalid"
    default = {"http": 80, "https": 443}.get(scheme)
    return f"{scheme}://{host}" if port in (None, default) else f"{scheme}://{host}:{port}"


class BodyLimit:
    """Refuses (413) a request whose body is larger than ``max_bytes``: at once when its
    Content-Length says so, else as soon as the chunks read pass it. The body is read
    here, before any handler, so no handler ever holds more than ``max_bytes`` of it."""

    def __init__(self, app: ASGIApp, max_bytes: int, refuse: Refuse) -> None:
        self.app, self.max_bytes, self.refuse = app, max_bytes, refuse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Request(scope).headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            drain = declared.isdigit() and int(declared) <= DRAIN_BYTES
            await self._too_large(scope, receive, send, drain=drain)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client went away: there is no one to answer
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                more = message.get("more_body", False)
                await self._too_large(scope, receive, send, drain=more)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body: list[Message] = [{"type": "http.request", "body": b"".join(chunks)}]

        async def replay() -> Message:
            return body.pop() if body else await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send, drain: bool) -> None:
        if drain:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_drain(receive), DRAIN_S)
        text = f"A request may carry at most {self.max_bytes // 1024} KB. Nothing was changed."
        response = await self.refuse(Request(scope), 413, "Too large", text)
        # Whatever is left of the body is not read: the connection cannot carry another request.
        response.headers["Connection"] = "close"
        await response(scope, receive, send)


async def _drain(receive: Receive) -> None:
    dropped = 0
    while dropped <= DRAIN_BYTES:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return
        dropped += len(message.get("body", b""))


class SameOrigin:
    """Refuses (403) a POST, PUT, PATCH or DELETE that a browser sent from another site.

    Sec-Fetch-Site, which a browser sets and a page cannot, decides when present; else the
    Origin (or, without one, the Referer) must be web.base_url's. A request carrying none of
    them comes from no browser page (a script, a mail provider) and is let through.
    """

    def __init__(self, app: ASGIApp, base_url: str, refuse: Refuse) -> None:
        self.app, self.origin, self.refuse = app, origin_of(base_url), refuse

    def _cross_site(self, request: Request) -> bool:
        site = request.headers.get("sec-fetch-site")
        if site is not None:
            # "none": typed or bookmarked by the person; "same-site": a sibling subdomain,
            # which may be someone else's.
            return site not in ("same-origin", "none")
        sent_from = request.headers.get("origin") or request.headers.get("referer")
        if sent_from is None:
            return False
        # "null": a sandboxed frame, a data: URL, a privacy-stripped origin.
        return sent_from == "null" or origin_of(sent_from) != self.origin

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] in UNSAFE_METHODS
            and not scope["path"].startswith(ORIGIN_EXEMPT_PREFIXES)
            and self._cross_site(request := Request(scope))
        ):
            text = (
                "This form was sent from another site, so nothing was done. If you meant "
                "to send it, open this site's own page and send it from there."
            )
            response = await self.refuse(request, 403, "Sent from another site", text)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def slash_redirects(routes: list[BaseRoute], base_url: str, not_found: ASGIApp) -> ASGIApp:
    """The router's fallback: a path that matches a route once a trailing slash is added or
    removed is redirected (307) to that path under web.base_url; anything else is
    ``not_found``. Starlette's own redirect is built from the Host header, which a client
    chooses (a poisoned cache or a phishing link would point elsewhere)."""

    async def fallback(scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if scope["type"] == "http" and path != "/":
            other = path.rstrip("/") if path.endswith("/") else f"{path}/"
            moved = {**scope, "path": other}
            if other and any(route.matches(moved)[0] is not Match.NONE for route in routes):
                query = scope["query_string"].decode("latin-1")
                url = base_url + quote(other, safe=_PATH_SAFE) + (f"?{query}" if query else "")
                await RedirectResponse(url, status_code=307)(scope, receive, send)
                return
        await not_found(scope, receive, send)

    return fallback
