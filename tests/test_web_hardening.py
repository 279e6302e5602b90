"""Attacks on the served app (uvicorn on loopback, a real HTTP client), each failing safely:
huge and chunked bodies, unknown JSON fields, cross-site posts, Host-reflecting redirects,
/metrics and the schema on the public port."""

from __future__ import annotations

import asyncio
import email
import mailbox
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from email.policy import default
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import Session, select

from alertd.config import Settings
from alertd.db import open_database
from alertd.errors import ConfigError
from alertd.models import Alert
from alertd.web import serve_web
from alertd.web.limits import SlidingWindow, client_key

TOPIC = '"special educational needs"'
EVIL = "https://evil.example"


@dataclass
class Served:
    base: str
    settings: Settings
    client: httpx.AsyncClient
    maildir: Path

    def alerts(self) -> list[Alert]:
        engine = open_database(self.settings.database)
        try:
            with Session(engine) as session:
                return list(session.exec(select(Alert)))
        finally:
            engine.dispose()

    async def mailed_link(self, kind: str, count: int = 1) -> str:
        """The path of the ``kind`` link in the count-th mail the app's sender wrote."""
        for _ in range(200):
            if self.maildir.exists():
                mails = list(mailbox.Maildir(self.maildir, create=False))
                if len(mails) >= count:
                    parsed = email.message_from_bytes(mails[-1].as_bytes(), policy=default)
                    body = parsed.get_body(("plain",))
                    assert body is not None
                    text = str(body.get_content())  # type: ignore[attr-defined]
                    found = re.search(rf"{re.escape(self.base)}(/{kind}/[^\s\"<]+)", text)
                    assert found, text
                    return found.group(1)
            await asyncio.sleep(0.05)
        raise AssertionError("no mail arrived")


def _free_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.fixture
async def serve(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[Served]]]:
    """Serves the app (Maildir delivery) on a loopback port, base_url that port."""
    stack = AsyncExitStack()

    async def start(**web: Any) -> Served:
        sock = _free_socket()
        base = web.pop("base_url", f"http://127.0.0.1:{sock.getsockname()[1]}")
        settings = make_settings(web={"base_url": base, **web})
        engine = open_database(settings.database)
        stop = asyncio.Event()
        task = asyncio.create_task(serve_web(settings, engine, stop, sock=sock))

        async def stopped() -> None:
            stop.set()
            await asyncio.wait_for(task, 15)
            sock.close()
            engine.dispose()

        stack.push_async_callback(stopped)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        client = await stack.enter_async_context(httpx.AsyncClient(base_url=url, timeout=10))
        for _ in range(200):
            try:
                await client.get("/healthz")
                break
            except httpx.ConnectError:
                await asyncio.sleep(0.05)
        return Served(base, settings, client, settings.mail.maildir)

    yield start
    await stack.aclose()


def _signup(email: str = "parent@example.org") -> dict[str, str]:
    return {
        "email": email,
        "follow": "topic",
        "query": TOPIC,
        "frequency": "daily",
        "step": "subscribe",
    }


async def _manage_token(app: Served) -> str:
    """Sign up and confirm through the pages, as a person does; the manage token."""
    assert (await app.client.post("/signup", data=_signup())).status_code == 200
    confirmed = await app.client.post(await app.mailed_link("confirm"))
    assert confirmed.status_code == 303
    return confirmed.headers["location"].split("/manage/")[1].split("?")[0]


# -- request bodies ------------------------------------------------------------------------------


async def test_a_body_over_the_cap_is_refused_before_it_is_read(
    serve: Callable[..., Awaitable[Served]],
) -> None:
    app = await serve()
    huge = '{"email": "a@example.org", "query": "' + "x" * 200_000 + '"}'
    response = await app.client.post(
        "/api/alerts", content=huge, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413 and "at most 64 KB" in response.json()["detail"]
    page = await app.client.post("/signup", data={**_signup(), "query": "x" * 100_000})
    assert page.status_code == 413 and "Too large" in page.text
    assert page.headers["x-frame-options"] == "DENY"  # a refusal is still one of our pages
    assert app.alerts() == []


async def test_a_chunked_body_without_length_is_cut_off_at_the_cap(
    serve: Callable[..., Awaitable[Served]],
) -> None:
    app = await serve(max_body_bytes=4096)
    sent = 0

    async def dribble(kilobytes: int) -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'{"email": "a@example.org", "query": "'
        for _ in range(kilobytes):
            sent += 1024
            yield b"x" * 1024

    headers = {"content-type": "application/json"}
    response = await app.client.post("/api/alerts", content=dribble(100), headers=headers)
    assert "content-length" not in response.request.headers
    assert response.status_code == 413 and "at most 4 KB" in response.json()["detail"]
    # 20 MB: read no further than about a megabyte past the cap, then cut off.
    sent = 0
    try:
        cut = await app.client.post("/api/alerts", content=dribble(20_000), headers=headers)
    except httpx.TransportError:
        pass  # the server answered and closed while we were still sending: a refusal too
    else:
        assert cut.status_code == 413
    assert sent < 5_000_000
    assert app.alerts() == []
    # The cap leaves ordinary bodies alone, and the server is still serving.
    ok = await app.client.post("/api/alerts", json={"email": "b@example.org", "query": TOPIC})
    assert ok.status_code == 202


async def test_a_declared_length_over_the_cap_is_refused_unread(
    serve: Callable[..., Awaitable[Served]],
) -> None:
    # A raw request declaring 100 GB and sending two bytes: answered at once, not waited on.
    app = await serve()
    port = int(str(app.client.base_url).rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /api/alerts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100000000000\r\n\r\n{}"
    )
    await writer.drain()
    status = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    await writer.wait_closed()
    assert status.startswith(b"HTTP/1.1 413")


# -- unknown JSON fields -------------------------------------------------------------------------


async def test_unknown_json_fields_are_refused_by_name(
    serve: Callable[..., Awaitable[Served]],
) -> None:
    app = await serve()
    token = await _manage_token(app)
    [alert] = app.alerts()
    auth = {"authorization": f"Bearer {token}"}
    # Today's mistake: {"status": "paused"} answered 200 and paused nothing.
    url = f"/api/alerts/{alert.id}"
    patch = await app.client.patch(url, json={"status": "paused"}, headers=auth)
    assert patch.status_code == 422
    [problem] = patch.json()["detail"]
    assert problem["loc"] == ["body", "status"] and problem["type"] == "extra_forbidden"
    assert app.alerts()[0].paused_at is None
    created = await app.client.post(
        "/api/alerts", json={"email": "c@example.org", "query": TOPIC, "confirmed": True}
    )
    assert created.status_code == 422 and created.json()["detail"][0]["loc"] == [
        "body",
        "confirmed",
    ]
    assert len(app.alerts()) == 1
    # A known field still works.
    paused = await app.client.patch(url, json={"paused": True}, headers=auth)
    assert paused.status_code == 200 and paused.json()["status"] == "paused"


# -- cross-site form posts -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": EVIL},
        {"origin": "null"},
        {"referer": f"{EVIL}/innocent-page"},
        # The same host on another port or scheme is another origin.
        {"origin": "http://127.0.0.1:1"},
        # What a browser says of a form on another site, whatever Origin and Referer say.
        {"sec-fetch-site": "cross-site"},
        {"sec-fetch-site": "same-site", "origin": "null"},
    ],
    ids=["origin", "null-origin", "referer", "other-port", "fetch-cross-site", "same-site"],
)
async def test_a_cross_site_form_post_is_refused(
    serve: Callable[..., Awaitable[Served]], headers: dict[str, str]
) -> None:
    app = await serve()
    response = await app.client.post("/signup", data=_signup(), headers=headers)
    assert response.status_code == 403
    assert "Sent from another site" in response.text and "nothing was done" in response.text
    manage = await app.client.post("/manage", data={"email": "a@example.org"}, headers=headers)
    assert manage.status_code == 403
    assert app.alerts() == [] and not app.maildir.exists()


async def test_a_same_site_or_browserless_post_goes_through(
    serve: Callable[..., Awaitable[Served]],
) -> None:
    app = await serve()
    ours = {"origin": app.base, "referer": f"{app.base}/"}
    assert (await app.client.post("/signup", data=_signup(), headers=ours)).status_code == 200
    referer_only = {"referer": f"{app.base}/?member_id=1"}
    response = await app.client.post("/signup", data=_signup("b@example.org"), headers=referer_only)
    assert response.status_code == 200
    scripted = await app.client.post("/signup", data=_signup("c@example.org"))
    assert scripted.status_code == 200
    # Chromium's own form post from our page (Origin "null" under a no-referrer policy).
    chromium = {"origin": "null", "sec-fetch-site": "same-origin"}
    response = await app.client.post("/signup", data=_signup("d@example.org"), headers=chromium)
    assert response.status_code == 200 and len(app.alerts()) == 4


# -- redirects -----------------------------------------------------------------------------------


async def test_slash_redirects_use_base_url_not_the_host_header(
    serve: Callable[..., Awaitable[Served]],
) -> None:
    app = await serve(base_url="https://alerts.example.org")
    response = await app.client.get("/manage/?x=1", headers={"host": "evil.example"})
    assert response.status_code == 307
    assert response.headers["location"] == "https://alerts.example.org/manage?x=1"
    forwarded = await app.client.get(
        "/members/", headers={"host": "evil.example", "x-forwarded-host": "evil.example"}
    )
    assert forwarded.headers["location"] == "https://alerts.example.org/members"
    assert (await app.client.get("/no-such-page/")).status_code == 404


# -- metrics and the schema ----------------------------------------------------------------------


async def test_metrics_and_schema_are_not_on_the_public_port(
    serve: Callable[..., Awaitable[Served]],
) -> None:
    with _free_socket() as probe:
        metrics_port = probe.getsockname()[1]
    app = await serve(metrics_port=metrics_port)
    for path in ("/metrics", "/openapi.json", "/docs"):
        assert (await app.client.get(path)).status_code == 404, path
    async with httpx.AsyncClient() as local:
        response = await local.get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert response.status_code == 200 and "alertd_digests" in response.text
        assert (await local.get(f"http://127.0.0.1:{metrics_port}/")).status_code == 404


async def test_metrics_on_the_public_port_need_the_token(
    serve: Callable[..., Awaitable[Served]],
) -> None:
    token = "metrics-9d4e2b7a1c8f3e6d5a0b9c2e7f4d1a8b"
    app = await serve(metrics_token=token)
    assert (await app.client.get("/metrics")).status_code == 404
    wrong = await app.client.get("/metrics", headers={"authorization": "Bearer nope"})
    assert wrong.status_code == 404
    right = await app.client.get("/metrics", headers={"authorization": f"Bearer {token}"})
    assert right.status_code == 200 and "alertd_digests" in right.text


def test_a_metrics_port_in_use_is_a_config_error(
    make_settings: Callable[..., Settings],
) -> None:
    with _free_socket() as busy, _free_socket() as public:
        busy.listen()
        settings = make_settings(web={"metrics_port": busy.getsockname()[1]})
        engine = open_database(settings.database)
        with pytest.raises(ConfigError, match="cannot listen on 127.0.0.1"):
            asyncio.run(serve_web(settings, engine, asyncio.Event(), sock=public))
        engine.dispose()


# -- rate limits ---------------------------------------------------------------------------------


async def test_ipv6_clients_are_limited_by_their_64(
    serve: Callable[..., Awaitable[Served]],
) -> None:
    # Behind the proxy (X-Forwarded-For believed from loopback), a client that walks its /64
    # gets no fresh allowance per address.
    app = await serve(signups_per_ip_per_hour=2, forwarded_allow_ips="127.0.0.1")

    async def from_(address: str, n: int) -> int:
        headers = {"x-forwarded-for": address}
        data = _signup(f"v6-{n}@example.org")
        return (await app.client.post("/signup", data=data, headers=headers)).status_code

    assert await from_("2001:db8:1:1::1", 1) == 200
    assert await from_("2001:db8:1:1:ffff:ffff:ffff:ffff", 2) == 200
    assert await from_("2001:db8:1:1:abcd::7", 3) == 429
    assert await from_("2001:db8:1:2::1", 4) == 200  # the next /64 is someone else
    assert await from_("::ffff:192.0.2.1", 5) == 200
    assert await from_("192.0.2.1", 6) == 200
    assert await from_("192.0.2.1", 7) == 429  # the same IPv4 client, however written


def test_client_keys() -> None:
    assert client_key("2001:DB8::1") == "2001:db8::/64"
    assert client_key("::ffff:198.51.100.4") == "198.51.100.4"
    assert client_key("198.51.100.4") == "198.51.100.4"
    assert client_key("unknown") == "unknown"


def test_the_limiter_drops_idle_keys_and_keeps_live_ones() -> None:
    window = SlidingWindow(1, 60.0)
    for n in range(50_000):
        assert window.allow(f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}", n / 1000)
    assert len(window) == 50_000  # all still inside the window
    assert not window.allow("10.0.0.0", 50.0)  # the first one is still limited
    # A minute after the last of them: one call drops every idle key (each once).
    assert window.allow("192.0.2.1", 50.0 + 60.0) and len(window) == 1
    assert window.allow("10.0.0.0", 111.0)
