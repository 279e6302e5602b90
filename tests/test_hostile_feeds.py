"""Hostile feeds and upstream answers, from real loopback servers through the real fetch code:
unsafe links, redirects into the machine's own network, cross-host moves, slow, huge and
gzip-bomb bodies, and feed items kept out of anonymous previews."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import feedparser
import httpx
import pytest
import sqlalchemy as sa
from sqlmodel import Session, col, select

from alertd.cli import main as cli_main
from alertd.config import Settings
from alertd.errors import SourceInvalid, SourceUnavailable
from alertd.kinds.feed_item import FeedItem, parse_feed
from alertd.links import Links
from alertd.models import Feed, Item
from alertd.pipeline import Runtime, poll_once, run_once
from alertd.sources import http
from alertd.sources.feed_registry import add_feed
from alertd.subscriptions import lifecycle
from alertd.web import create_app
from alertd.web.service import link_secret_of

from configs import write_config
from feed_server import FeedServer, Route, gzip_bomb
from smtp_server import SmtpSink
from standin_api import StandinApi
from test_pipeline import smtp_runtime

NOW = datetime(2021, 2, 1, 19, 0, tzinfo=UTC)
WORD = "zebrafish"
SITE = "https://example.org/news"
# As they appear inside <link> in the XML (so escaped where XML needs it).
HOSTILE_LINKS = [
    "javascript:alert(document.domain)",
    "JaVaScRiPt:alert(1)",
    " javascript:alert(2)",
    "java&#9;script:alert(3)",
    "data:text/html;base64,PHNjcmlwdD5hbGVydCg0KTwvc2NyaXB0Pg==",
    "vbscript:msgbox(5)",
    "file:///etc/passwd",
]
PAYLOADS = ("alert(", "msgbox", "/etc/passwd", "base64,", "script:")


def feed_xml(links: list[str], *, word: str = WORD, day: datetime = NOW) -> bytes:
    items = "".join(
        f"<item><title>Item {n} about {word}</title><link>{link}</link>"
        f"<guid>item-{n}</guid><description>{escape(f'<p>A note on {word}.</p>')}</description>"
        f"<pubDate>{format_datetime(day - timedelta(hours=1))}</pubDate></item>"
        for n, link in enumerate(links)
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
        f"<title>Notes</title><link>{SITE}</link><description>d</description>"
        f"{items}</channel></rss>"
    ).encode()


@pytest.fixture
def other_server() -> Iterator[FeedServer]:
    """A second feed server: another host, as far as redirects go."""
    with FeedServer() as server:
        yield server


def _settings(make_settings: Any, **sections: dict[str, Any]) -> Settings:
    parliament = {"enabled": False, **sections.pop("parliament", {})}
    settings: Settings = make_settings(parliament=parliament, **sections)
    return settings


@pytest.fixture
def runtime(make_settings: Any, smtp_sink: SmtpSink) -> Iterator[Runtime]:
    runtime = smtp_runtime(
        _settings(make_settings, parliament={"fetch_deadline_s": 3.0}), smtp_sink
    )
    yield runtime
    runtime.engine.dispose()


def _parts(message: EmailMessage) -> tuple[str, str]:
    text, html = message.get_body(("plain",)), message.get_body(("html",))
    assert text is not None and html is not None
    return text.get_content(), html.get_content()


def _no_payload(text: str) -> None:
    lowered = text.lower()
    assert not [p for p in PAYLOADS if p in lowered], text


# -- links --------------------------------------------------------------------------------------


def test_only_absolute_http_links_are_kept_at_ingest() -> None:
    base = "http://user:pw@feeds.test/rss"
    body = feed_xml([*HOSTILE_LINKS, "/notes/7", "https://ok.test/8"])
    items = parse_feed(body, base, http.shown_url(base), now=NOW)
    links = [item.url for item in items]
    assert links == [SITE] * len(HOSTILE_LINKS) + [
        "http://feeds.test/notes/7",
        "https://ok.test/8",
    ]
    # No channel link: the feed's own address, never with its password.
    bare = feed_xml(["javascript:alert(1)"]).replace(f"<link>{SITE}</link>".encode(), b"")
    bare_items = parse_feed(bare, base, http.shown_url(base), now=NOW)
    assert [item.url for item in bare_items] == ["http://feeds.test/rss"]


async def test_hostile_links_never_reach_mail_atom_or_preview(
    make_settings: Any, smtp_sink: SmtpSink, feed_server: FeedServer
) -> None:
    settings = _settings(make_settings, web={"preview_feed_items": True})
    runtime = smtp_runtime(settings, smtp_sink)
    feed_server.serve("/rss", Route(feed_xml(["https://example.org/first"])))
    add_feed(runtime.engine, "notes", feed_server.url("/rss"))
    await run_once(runtime, now=NOW)  # the first fetch only marks what is there as seen
    alert = lifecycle.subscribe(
        runtime.engine, "parent@example.org", WORD, "immediate", confirmed=True, now=NOW
    )
    feed_server.serve("/rss", Route(feed_xml(["https://example.org/first", *HOSTILE_LINKS])))
    report = await run_once(runtime, now=NOW + timedelta(hours=1))
    assert report.errors == [] and report.new_items == len(HOSTILE_LINKS)
    with Session(runtime.engine) as session:
        stored = [i.url for i in session.exec(select(Item).order_by(col(Item.id))).all()]
    assert stored == ["https://example.org/first"] + [SITE] * len(HOSTILE_LINKS)
    (sent,) = smtp_sink.messages
    text, html = _parts(sent.message)
    _no_payload(text)
    _no_payload(html)
    assert SITE in text and f'href="{SITE}"' in html

    # A row stored before links were checked (or by other code) is checked again as shown.
    feed_server.serve("/rss", Route(feed_xml(["https://example.org/first", *HOSTILE_LINKS, SITE])))
    await poll_once(runtime, now=NOW + timedelta(hours=2))
    with Session(runtime.engine) as session:
        session.execute(sa.update(Item).values(url="javascript:alert(7)"))
        session.commit()
    report = await run_once(runtime, now=NOW + timedelta(hours=2), poll=False)
    assert report.sent == 1
    text, html = _parts(smtp_sink.messages[-1].message)
    _no_payload(text)
    _no_payload(html)
    assert "Item 8 about" in text and "Read it in full" not in text

    assert alert.id is not None
    app = create_app(settings, runtime.engine, clock=lambda: NOW + timedelta(hours=3))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as web:
        secret = link_secret_of(runtime.engine, "feed", alert.id) or ""
        feed = await web.get(Links.for_settings(settings).feed_path(alert.id, secret))
        preview = await web.get("/api/preview", params={"q": WORD})
    assert feed.status_code == 200
    _no_payload(feed.text)
    assert feedparser.parse(feed.content).entries
    assert preview.status_code == 200 and preview.json()["count"] == len(HOSTILE_LINKS) + 2
    assert {e["url"] for e in preview.json()["examples"]} == {None}
    runtime.engine.dispose()


# -- redirects ------------------------------------------------------------------------------------


def _public_ports(*servers: FeedServer) -> http.PublicCheck:
    """These loopback servers count as the public internet; everything else is classified
    by the real check (resolving the host)."""
    ports = {httpx.URL(server.url("/")).port for server in servers}

    async def is_public(url: httpx.URL) -> tuple[str, ...]:
        if url.host == "127.0.0.1" and url.port in ports:
            return ("127.0.0.1",)
        return await http.public_addresses(url)

    return is_public


@pytest.fixture
async def public_runtime(runtime: Runtime, feed_server: FeedServer) -> AsyncIterator[Runtime]:
    """The runtime with a client that takes ``feed_server`` for a server on the internet."""
    async with http.make_client("alertd-test", 5.0, is_public=_public_ports(feed_server)) as client:
        runtime.http = client
        yield runtime


INTERNAL = [
    "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.1/",
    "http://192.168.1.1/feed",
    "http://100.64.0.1/",
    "http://[::1]:{port}/secret",
    "http://localhost:{port}/secret",
    "http://127.0.0.1:{port}/secret",
    "http://[::ffff:127.0.0.1]:{port}/secret",
    "http://2130706433:{port}/secret",
    "http://0.0.0.0:{port}/secret",
]


async def test_a_public_feed_cannot_redirect_into_the_internal_network(
    public_runtime: Runtime, feed_server: FeedServer, other_server: FeedServer
) -> None:
    other_server.serve("/secret", Route(feed_xml(["https://internal.test/"], word="secret")))
    port = httpx.URL(other_server.url("/")).port
    statuses = (301, 302, 303, 307, 308)
    for n, target in enumerate(INTERNAL):
        status = statuses[n % len(statuses)]
        feed_server.serve(f"/{n}", Route(status=status, location=target.format(port=port)))
        add_feed(public_runtime.engine, f"evil{n}", feed_server.url(f"/{n}"))
    report = await run_once(public_runtime, now=NOW)
    assert len(report.errors) == len(INTERNAL)
    assert all("which is not a public address: refused" in e for e in report.errors)
    assert other_server.requests == []  # never contacted
    with Session(public_runtime.engine) as session:
        assert session.exec(select(Item)).all() == []
        urls = sorted(session.exec(select(Feed.url)).all())
    assert urls == sorted(feed_server.url(f"/{n}") for n in range(len(INTERNAL)))


async def test_redirects_between_public_servers_and_within_a_private_one_are_followed(
    runtime: Runtime, feed_server: FeedServer, other_server: FeedServer
) -> None:
    other_server.serve("/rss", Route(feed_xml(["https://example.org/a"])))
    feed_server.serve("/rss", Route(status=302, location=other_server.url("/rss")))
    add_feed(runtime.engine, "hop", feed_server.url("/rss"))
    both_public = _public_ports(feed_server, other_server)
    async with http.make_client("alertd-test", 5.0, is_public=both_public) as client:
        runtime.http = client
        report = await run_once(runtime, now=NOW)
    assert report.errors == [] and report.new_items == 1
    # An operator's feed on a private address may redirect within the private network.
    runtime.http = None
    add_feed(runtime.engine, "private", feed_server.url("/rss"))
    report = await run_once(runtime, now=NOW + timedelta(hours=1))
    assert report.errors == []
    with Session(runtime.engine) as session:
        sources = sorted(i.source for i in session.exec(select(Item)).all())
    assert sources == ["feed:hop", "feed:private"]


async def test_a_redirect_is_sent_to_the_address_checked_not_to_a_second_dns_answer(
    runtime: Runtime,
    feed_server: FeedServer,
    other_server: FeedServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # DNS rebinding: a name that is public when checked and 127.0.0.1 when connected to. Here
    # the check is told feeds.rebind.test is public at the other server's address; the name
    # itself resolves nowhere, so only a request to the checked address can reach it.
    port = httpx.URL(other_server.url("/")).port
    moved = f"http://feeds.rebind.test:{port}/rss"
    other_server.serve("/rss", Route(feed_xml(["https://example.org/a"])))
    feed_server.serve("/rss", Route(status=301, location=moved))
    feed_port = httpx.URL(feed_server.url("/")).port

    async def checked(url: httpx.URL) -> tuple[str, ...]:
        if url.host == "127.0.0.1" and url.port == feed_port:
            return ("127.0.0.1",)
        return ("127.0.0.1",) if url.host == "feeds.rebind.test" else ()

    add_feed(runtime.engine, "rebind", feed_server.url("/rss"))
    async with http.make_client("alertd-test", 5.0, is_public=checked) as client:
        runtime.http = client
        report = await run_once(runtime, now=NOW)
    assert report.errors == []
    [(path, headers)] = other_server.requests
    assert path == "/rss" and headers["Host"] == f"feeds.rebind.test:{port}"
    with Session(runtime.engine) as session:
        assert len(session.exec(select(Item)).all()) == 1
    # The move (301) is seen as to the name, never to the address the request was sent to.
    assert f"remove the feed and add it again with {moved}" in caplog.text


async def test_a_redirect_to_another_scheme_is_refused(
    runtime: Runtime, feed_server: FeedServer
) -> None:
    feed_server.serve("/rss", Route(status=302, location="file:///etc/passwd"))
    add_feed(runtime.engine, "file", feed_server.url("/rss"))
    report = await run_once(runtime, now=NOW)
    assert len(report.errors) == 1 and "redirected to a file: address" in report.errors[0]


async def test_a_permanent_redirect_to_another_host_is_followed_but_never_stored(
    runtime: Runtime, feed_server: FeedServer, caplog: pytest.LogCaptureFixture
) -> None:
    port = httpx.URL(feed_server.url("/")).port
    feed_server.serve("/old", Route(status=301, location=f"http://localhost:{port}/new"))
    feed_server.serve("/new", Route(feed_xml(["https://example.org/a"])))
    add_feed(runtime.engine, "moved", feed_server.url("/old"))
    with caplog.at_level(logging.WARNING, logger="alertd.sources.feeds"):
        report = await run_once(runtime, now=NOW)
    assert report.errors == [] and report.new_items == 1
    with Session(runtime.engine) as session:
        assert session.exec(select(Feed.url)).one() == feed_server.url("/old")
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "127.0.0.1 redirects permanently to another host, localhost" in warning
    assert "stored URL is kept" in warning


# -- slow, huge and compressed bodies -----------------------------------------------------------


async def test_each_refusal_names_the_url_and_the_status_it_refused(
    feed_server: FeedServer, other_server: FeedServer
) -> None:
    feed_server.serve("/big", Route(b" " * 2_000))
    feed_server.serve("/file", Route(status=302, location="file:///etc/passwd"))
    feed_server.serve("/inside", Route(status=307, location="http://10.0.0.1/"))
    feed_server.serve("/loop", Route(status=301, location="/loop"))
    feed_server.serve("/drip", Route(b"x" * 100, drip_s=0.5))
    public = _public_ports(feed_server)
    async with http.make_client(
        "alertd-test", 5.0, max_bytes=1_000, deadline_s=1.0, is_public=public
    ) as client:
        refused = {}
        for path in ("/big", "/file", "/inside", "/loop", "/drip"):
            with pytest.raises((SourceInvalid, SourceUnavailable)) as caught:
                await http.get(client, feed_server.url(path))
            refused[path] = (type(caught.value), caught.value.url, caught.value.status)
    assert refused == {
        "/big": (SourceInvalid, feed_server.url("/big"), 200),
        "/file": (SourceInvalid, feed_server.url("/file"), 302),
        "/inside": (SourceInvalid, feed_server.url("/inside"), 307),
        "/loop": (SourceInvalid, feed_server.url("/loop"), 301),
        # No whole answer within the deadline: no status to tell.
        "/drip": (SourceUnavailable, feed_server.url("/drip"), None),
    }


async def _timed_poll(runtime: Runtime) -> tuple[list[str], float, int]:
    """One poll's errors, how long it took, and the most memory it held at once."""
    tracemalloc.start()
    try:
        started = time.monotonic()
        report = await run_once(runtime, now=NOW)
        elapsed = time.monotonic() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return report.errors, elapsed, peak


async def test_a_feed_dripping_a_byte_at_a_time_fails_at_the_deadline(
    runtime: Runtime, feed_server: FeedServer
) -> None:
    # 1 KB at a byte every 0.5 s would take 9 minutes; no single read ever times out.
    feed_server.serve("/rss", Route(feed_xml(["https://example.org/a"]), drip_s=0.5))
    add_feed(runtime.engine, "drip", feed_server.url("/rss"))
    errors, elapsed, _ = await _timed_poll(runtime)
    assert errors == [f"GET {feed_server.url('/rss')} gave no complete answer within 3s"]
    assert elapsed < 7


@pytest.mark.parametrize("declare_length", [True, False], ids=["declared", "streamed"])
async def test_a_200_mb_feed_is_refused_at_the_cap_in_bounded_memory(
    runtime: Runtime, feed_server: FeedServer, declare_length: bool
) -> None:
    route = Route(b" " * (1 << 20), repeat=200, declare_length=declare_length)
    feed_server.serve("/rss", route)
    add_feed(runtime.engine, "huge", feed_server.url("/rss"))
    errors, elapsed, peak = await _timed_poll(runtime)
    assert errors == [f"GET {feed_server.url('/rss')} answered more than 5,000,000 bytes: refused"]
    assert elapsed < 8 and peak < 40_000_000


@pytest.mark.slow  # building the bomb takes seconds
async def test_a_gzip_bomb_is_refused_at_the_cap_in_bounded_memory(
    runtime: Runtime, feed_server: FeedServer
) -> None:
    bomb = gzip_bomb()
    assert len(bomb) < 500_000
    feed_server.serve("/rss", Route(bomb, content_encoding="gzip"))
    add_feed(runtime.engine, "bomb", feed_server.url("/rss"))
    errors, elapsed, peak = await _timed_poll(runtime)
    assert errors == [f"GET {feed_server.url('/rss')} answered more than 5,000,000 bytes: refused"]
    assert elapsed < 8 and peak < 40_000_000


async def test_a_gzipped_feed_under_the_cap_is_read(
    runtime: Runtime, feed_server: FeedServer
) -> None:
    import gzip
    import zlib

    body = feed_xml(["https://example.org/a"])
    feed_server.serve("/gz", Route(gzip.compress(body), content_encoding="gzip"))
    feed_server.serve("/deflate", Route(zlib.compress(body), content_encoding="deflate"))
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    feed_server.serve("/raw", Route(raw.compress(body) + raw.flush(), content_encoding="deflate"))
    feed_server.serve("/br", Route(body, content_encoding="br"))
    for name in ("gz", "deflate", "raw", "br"):
        add_feed(runtime.engine, name, feed_server.url(f"/{name}"))
    report = await run_once(runtime, now=NOW)
    assert report.errors == [f"GET {feed_server.url('/br')} answered in Content-Encoding 'br'"]
    with Session(runtime.engine) as session:
        sources = sorted(i.source for i in session.exec(select(Item)).all())
    assert sources == ["feed:deflate", "feed:gz", "feed:raw"]


# -- previews -------------------------------------------------------------------------------------


@pytest.mark.parametrize("opted_in", [False, True])
async def test_feed_items_stay_out_of_anonymous_previews_unless_opted_in(
    make_settings: Any, smtp_sink: SmtpSink, feed_server: FeedServer, opted_in: bool
) -> None:
    settings = _settings(make_settings, web={"preview_feed_items": opted_in})
    runtime = smtp_runtime(settings, smtp_sink)
    # 40 items on one day: over the 30 a day that makes a sign-up too broad.
    feed_server.serve("/rss", Route(feed_xml([f"https://example.org/{n}" for n in range(40)])))
    add_feed(runtime.engine, "private-notes", feed_server.url("/rss"))
    await run_once(runtime, now=NOW)
    with Session(runtime.engine) as session:
        kinds = {i.kind for i in session.exec(select(Item)).all()}
    assert kinds == {FeedItem.name}
    app = create_app(settings, runtime.engine, clock=lambda: NOW)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as web:
        preview = await web.get("/api/preview", params={"q": WORD})
        page = await web.post(
            "/signup",
            data={"email": "a@example.org", "follow": "topic", "query": WORD, "step": "preview"},
        )
        signup = await web.post(
            "/api/alerts", json={"email": "a@example.org", "query": WORD, "frequency": "daily"}
        )
    assert preview.status_code == 200 and page.status_code == 200
    if opted_in:
        assert preview.json()["count"] == 40 and "Item 1 about" in page.text
        assert signup.status_code == 422 and "would match about 40" in signup.text
    else:
        assert preview.json() == {"count": 0, "days": 30, "examples": []}
        assert "Item 1 about" not in page.text and WORD in page.text
        assert signup.status_code == 202, signup.text
    runtime.engine.dispose()


# -- the daemon ----------------------------------------------------------------------------------


@pytest.mark.slow  # a real daemon process, the stand-in API and an SMTP server
def test_a_dripping_feed_never_holds_up_an_immediate_digest_in_the_daemon(
    tmp_path: Path, standin_api: StandinApi, smtp_sink: SmtpSink, feed_server: FeedServer
) -> None:
    # The feed drips about 1 KB at a byte a second, well within its 300 s deadline: a poll
    # that held the cycle would hold the digest as long.
    feed_server.serve("/rss", Route(feed_xml(["https://example.org/a"] * 3), drip_s=1.0))
    config = write_config(tmp_path, standin_api, smtp_sink, parliament={"fetch_deadline_s": 300.0})
    common = ["--config", str(config)]
    assert cli_main(["feeds", "add", "slow", feed_server.url("/rss"), *common]) == 0
    args = ["subscribe", "parent@example.org", '"special educational needs"', "--confirmed"]
    assert cli_main([*args, "--frequency", "immediate", *common]) == 0
    env = {**os.environ, "ALERTD_CONFIG": str(config)}
    alertd = shutil.which("alertd", path=str(Path(sys.executable).parent))
    assert alertd is not None
    started = time.monotonic()
    process = subprocess.Popen([alertd, "run"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        while not smtp_sink.messages:
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() - started < 60, "no digest while the feed drips"
            time.sleep(0.1)
        # Sources are polled in turn, Parliament first, and the digest goes out after
        # Parliament's turn: the feed's request may come just before or just after it. Either
        # way the feed is still dripping (about 1,000 s) when the digest is in.
        while not feed_server.requests:
            assert time.monotonic() - started < 60, "the feed was never polled"
            time.sleep(0.1)
        assert [path for path, _ in feed_server.requests] == ["/rss"]
        assert process.poll() is None  # the daemon is still polling the dripping feed
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "Traceback" not in err, err
    (sent,) = smtp_sink.messages
    assert "special educational needs" in _parts(sent.message)[0].lower()
