"""Feeds as sources: RSS 2.0, RSS 1.0 and Atom from a loopback server, end to end to the mail."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import feedparser
import httpx
import pytest
from sqlmodel import Session, col, select

from alertd.cli import main
from alertd.config import Settings
from alertd.kinds.feed_item import FeedItem
from alertd.kinds.feed_item import parse_feed as parse_feed_items
from alertd.kinds.kind import NewItem
from alertd.links import Links
from alertd.models import Feed, Item, SourceState
from alertd.pipeline import Runtime, run_once
from alertd.sources.feed_registry import add_feed, list_feeds
from alertd.sources.http import shown_url
from alertd.subscriptions import lifecycle
from alertd.web import create_app
from alertd.web.service import link_secret_of

from feed_server import FeedServer, Route
from smtp_server import SmtpSink
from standin_api import load_2021_answered
from test_pipeline import smtp_runtime

NOW = datetime(2021, 2, 1, 19, 0, tzinfo=UTC)
ETAG = '"v1"'
MODIFIED = "Mon, 01 Feb 2021 18:00:00 GMT"


def parse_feed(body: bytes, url: str) -> list[NewItem]:
    return parse_feed_items(body, url, shown_url(url), now=NOW)


def _records(count: int, offset: int = 0) -> list[dict[str, Any]]:
    return load_2021_answered()[offset : offset + count]


def _link(record: dict[str, Any]) -> str:
    return f"https://example.org/answers/{record['uin']}"


def rss2(records: list[dict[str, Any]], *, guid: bool = True, link: bool = True) -> bytes:
    items = "".join(
        "<item>"
        f"<title>{escape(r['heading'])}</title>"
        + (f"<link>{_link(r)}</link>" if link else "")
        + (f'<guid isPermaLink="false">wq-{r["id"]}</guid>' if guid else "")
        + f"<description>{escape('<p>' + r['questionText'] + '</p>')}</description>"
        f"<pubDate>{format_datetime(NOW - timedelta(hours=1))}</pubDate>"
        "</item>"
        for r in records
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
        f"<title>Written answers</title><link>https://example.org/</link>"
        f"<description>test</description>{items}</channel></rss>"
    ).encode()


def rss1(records: list[dict[str, Any]]) -> bytes:
    items = "".join(
        f'<item rdf:about="{_link(r)}"><title>{escape(r["heading"])}</title>'
        f"<link>{_link(r)}</link><description>{escape(r['questionText'])}</description>"
        "<dc:date>2021-02-01T12:00:00Z</dc:date></item>"
        for r in records
    )
    return (
        '<?xml version="1.0"?><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" '
        'xmlns="http://purl.org/rss/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/">'
        '<channel rdf:about="https://example.org/"><title>MP</title>'
        "<link>https://example.org/</link><description>d</description></channel>"
        f"{items}</rdf:RDF>"
    ).encode()


def atom(records: list[dict[str, Any]]) -> bytes:
    entries = "".join(
        f"<entry><id>urn:wq:{r['id']}</id><title>{escape(r['heading'])}</title>"
        f'<link href="{_link(r)}"/><updated>2021-02-01T12:00:00Z</updated>'
        f'<summary type="html">{escape(r["questionText"])}</summary></entry>'
        for r in records
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom">'
        "<id>urn:test</id><title>Dept</title><updated>2021-02-01T12:00:00Z</updated>"
        f"{entries}</feed>"
    ).encode()


@pytest.fixture
def runtime(settings_no_api: Settings, smtp_sink: SmtpSink) -> Iterator[Runtime]:
    runtime = smtp_runtime(settings_no_api, smtp_sink)
    yield runtime
    runtime.engine.dispose()


@pytest.fixture
def settings_no_api(make_settings: Any) -> Settings:
    settings: Settings = make_settings(parliament={"enabled": False})
    return settings


@pytest.mark.parametrize("build", [rss2, rss1, atom])
def test_each_format_parses_to_items(build: Any) -> None:
    records = _records(3)
    items = parse_feed(build(records), "http://test/feed")
    assert [i.title for i in items] == [r["heading"] for r in records]
    assert [i.url for i in items] == [_link(r) for r in records]
    assert all(i.body_text.startswith("To ask") for i in items)
    assert all(i.published_at is not None and i.published_at.tzinfo is UTC for i in items)
    assert len({i.source_id for i in items}) == 3


def test_uid_falls_back_to_link_then_content_hash() -> None:
    records = _records(2)
    by_link = parse_feed(rss2(records, guid=False), "u")
    assert [i.source_id for i in by_link] == [_link(r) for r in records]
    by_hash = parse_feed(rss2(records, guid=False, link=False), "u")
    assert all(i.source_id.startswith("sha256:") for i in by_hash)
    assert by_hash == parse_feed(rss2(records, guid=False, link=False), "u")


def test_summary_html_is_sanitised() -> None:
    body = rss2(_records(1)).replace(
        b"&lt;/p&gt;</description>",
        b"&lt;script&gt;alert(1)&lt;/script&gt;&lt;/p&gt;</description>",
    )
    (item,) = parse_feed(body, "u")
    assert "script" not in item.body_html


async def test_new_items_alert_once_with_conditional_get(
    runtime: Runtime, feed_server: FeedServer, smtp_sink: SmtpSink
) -> None:
    records = _records(5)
    feed_server.serve("/rss", Route(rss2(records[:3]), etag=ETAG, last_modified=MODIFIED))
    add_feed(runtime.engine, "answers", feed_server.url("/rss"))
    lifecycle.subscribe(
        runtime.engine,
        "parent@example.org",
        records[3]["heading"].split(":")[0],
        "immediate",
        confirmed=True,
        now=NOW - timedelta(days=1),
    )
    # The first fetch only marks what the feed already holds as seen.
    report = await run_once(runtime, now=NOW)
    assert (report.new_items, report.hits, report.sent) == (3, 0, 0)
    # Feed items are counted as items, not as answers, in the summary and the metrics.
    assert "fetched=3 new_items=3 hits=0" in report.summary()
    ingested = {"source": "feed:answers"}
    assert runtime.metrics.registry.get_sample_value("alertd_items_ingested_total", ingested) == 3
    report = await run_once(runtime, now=NOW + timedelta(minutes=30))
    assert report.new_items == 0
    path, headers = feed_server.requests[-1]
    assert headers["If-None-Match"] == ETAG and headers["If-Modified-Since"] == MODIFIED
    feed_server.serve("/rss", Route(rss2(records[:5]), etag='"v2"'))
    report = await run_once(runtime, now=NOW + timedelta(minutes=60))
    assert report.new_items == 2 and report.sent == 1
    (message,) = smtp_sink.messages
    text = message.message.get_body(("plain",))
    assert text is not None and records[3]["heading"] in text.get_content()
    assert _link(records[3]) in text.get_content()
    report = await run_once(runtime, now=NOW + timedelta(minutes=90))
    assert report.new_items == 0 and len(smtp_sink.messages) == 1


async def test_feed_items_are_items_of_their_own_source(
    runtime: Runtime, feed_server: FeedServer
) -> None:
    """Even a feed named "parliament" is its own source: no item or poll state is shared."""
    records = _records(2)
    feed_server.serve("/rss", Route(rss2(records)))
    add_feed(runtime.engine, "parliament", feed_server.url("/rss"))
    await run_once(runtime, now=NOW)
    with Session(runtime.engine) as session:
        items = session.exec(select(Item).order_by(col(Item.id))).all()
        assert {(i.kind, i.source, i.version) for i in items} == {
            (FeedItem.name, "feed:parliament", 1)
        }
        assert [i.source_id for i in items] == [f"wq-{r['id']}" for r in records]
        assert all(
            i.details.get("uin") is None and i.details.get("date_tabled") is None for i in items
        )
        assert all(i.published_at == NOW - timedelta(hours=1) for i in items)
        assert all(i.matched_at == NOW for i in items)  # seeded: never alerted
        assert session.get(SourceState, "parliament") is None
        assert session.get(SourceState, "feed:parliament") is not None


async def test_permanent_redirect_is_stored_temporary_is_not(
    runtime: Runtime, feed_server: FeedServer
) -> None:
    feed_server.serve("/old", Route(status=301, location=feed_server.url("/new")))
    feed_server.serve("/new", Route(rss2(_records(2))))
    feed_server.serve("/tmp", Route(status=302, location=feed_server.url("/new")))
    add_feed(runtime.engine, "moved", feed_server.url("/old"))
    add_feed(runtime.engine, "visiting", feed_server.url("/tmp"))
    report = await run_once(runtime, now=NOW)
    assert report.errors == [] and report.new_items == 4
    with Session(runtime.engine) as session:
        urls = {f.name: f.url for f in session.exec(select(Feed)).all()}
    assert urls == {"moved": feed_server.url("/new"), "visiting": feed_server.url("/tmp")}


async def test_gone_feed_is_disabled(
    runtime: Runtime, feed_server: FeedServer, caplog: pytest.LogCaptureFixture
) -> None:
    feed_server.serve("/gone", Route(status=410))
    add_feed(runtime.engine, "gone", feed_server.url("/gone"))
    with caplog.at_level(logging.WARNING, logger="alertd.sources.feeds"):
        report = await run_once(runtime, now=NOW)
    assert len(report.errors) == 1 and "410" in report.errors[0]
    assert any("feed gone disabled" in r.getMessage() for r in caplog.records)
    await run_once(runtime, now=NOW + timedelta(hours=2))
    assert len(feed_server.requests) == 1


@pytest.mark.parametrize(
    ("route", "message"),
    [
        (
            Route(b"<html><body>Service unavailable</body></html>", content_type="text/html"),
            "did not return a feed",
        ),
        (Route(status=500), "HTTP 500"),
        (Route(status=404), "HTTP 404"),
    ],
)
async def test_failures_are_errors_and_never_make_old_items_new(
    runtime: Runtime, feed_server: FeedServer, route: Route, message: str
) -> None:
    records = _records(3)
    feed_server.serve("/f", Route(rss2(records)))
    add_feed(runtime.engine, "f", feed_server.url("/f"))
    await run_once(runtime, now=NOW)
    feed_server.serve("/f", route)
    report = await run_once(runtime, now=NOW + timedelta(hours=1))
    assert len(report.errors) == 1 and message in report.errors[0]
    [(_, state)] = list_feeds(runtime.engine)  # what `alertd feeds list` shows
    assert state is not None and message in (state.last_error or "")
    feed_server.serve("/f", Route(rss2(records)))
    report = await run_once(runtime, now=NOW + timedelta(hours=2))
    assert report.errors == [] and report.new_items == 0
    with Session(runtime.engine) as session:
        assert len(session.exec(select(Item)).all()) == 3
        assert session.exec(select(Feed)).one().enabled
        state = session.get(SourceState, "feed:f")
        assert state is not None and state.last_error is None
        assert state.last_ok_at == NOW + timedelta(hours=2)


async def test_broken_xml_with_entries_is_used_with_a_warning(
    runtime: Runtime, feed_server: FeedServer, caplog: pytest.LogCaptureFixture
) -> None:
    body = rss2(_records(2)).replace(b"</channel></rss>", b"<item><title>cut off")
    feed_server.serve("/broken", Route(body))
    add_feed(runtime.engine, "broken", feed_server.url("/broken"))
    with caplog.at_level(logging.WARNING, logger="alertd.kinds.feed_item"):
        report = await run_once(runtime, now=NOW)
    assert report.errors == [] and report.new_items >= 2
    assert any("malformed" in r.getMessage() for r in caplog.records)
    with Session(runtime.engine) as session:
        titles = {q.title for q in session.exec(select(Item)).all()}
    assert {r["heading"] for r in _records(2)} <= titles


def test_feeds_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/a.db"\n')
    base = ["--config", str(config)]
    assert main(["feeds", "add", "twfy", "https://www.theyworkforyou.com/rss/mp/1.rdf", *base]) == 0
    assert main(["feeds", "add", "bad", "ftp://example.org/x", *base]) == 2
    assert "feed url: must be an http:// or https:// URL" in capsys.readouterr().err
    assert main(["feeds", "add", "twfy", "https://example.org/other", *base]) == 2
    assert main(["feeds", "list", *base]) == 0
    assert "twfy\thttps://www.theyworkforyou.com/rss/mp/1.rdf\tenabled\tlast poll never" in (
        capsys.readouterr().out
    )
    assert main(["feeds", "remove", "twfy", *base]) == 0
    assert main(["feeds", "remove", "twfy", *base]) == 2


def test_feeds_from_the_config_file_are_polled(
    tmp_path: Path, feed_server: FeedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    feed_server.serve("/rss", Route(rss2(_records(2))))
    config = tmp_path / "c.toml"
    config.write_text(
        f'[database]\nurl = "sqlite:///{tmp_path}/a.db"\n[parliament]\nenabled = false\n'
        f'[[feeds]]\nname = "answers"\nurl = "{feed_server.url("/rss")}"\n'
        "poll_interval_minutes = 60\n"
    )
    assert main(["run", "--once", "--config", str(config)]) == 0
    assert main(["feeds", "list", "--config", str(config)]) == 0
    listed = capsys.readouterr().out
    assert "answers\t" in listed and "last poll never" not in listed
    # Preview shows a feed item's source where an answer shows its UIN.
    word = _records(2)[0]["heading"].split(":")[0]
    assert main(["preview", word, "--days", "36500", "--config", str(config)]) == 0
    previewed = capsys.readouterr().out
    assert "\tfeed:answers\t" in previewed and "\tNone\t" not in previewed
    assert len(feed_server.requests) == 1


async def test_every_alert_is_a_valid_private_atom_feed(
    runtime: Runtime, feed_server: FeedServer
) -> None:
    records = _records(4)
    feed_server.serve("/rss", Route(rss2(records[:1])))
    add_feed(runtime.engine, "answers", feed_server.url("/rss"))
    alert = lifecycle.subscribe(
        runtime.engine,
        "parent@example.org",
        "To ask",
        "immediate",
        confirmed=True,
        now=NOW - timedelta(days=1),
    )
    await run_once(runtime, now=NOW)
    feed_server.serve("/rss", Route(rss2(records)))
    await run_once(runtime, now=NOW + timedelta(hours=1))
    assert alert.id is not None
    links = Links.for_settings(runtime.settings)
    secret = link_secret_of(runtime.engine, "feed", alert.id)
    assert secret is not None
    path = links.feed_path(alert.id, secret)
    app = create_app(runtime.settings, runtime.engine)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as web:
        response = await web.get(path)
        forged = await web.get(path[:-3] + "abc")
        other = await web.get(links.feed_path(alert.id + 1, secret).replace("feed.", "stop.", 1))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/atom+xml")
    parsed = feedparser.parse(response.content)
    assert parsed.version == "atom10" and not parsed.bozo
    assert sorted(e.title for e in parsed.entries) == sorted(r["heading"] for r in records[1:])
    assert {e.link for e in parsed.entries} == {_link(r) for r in records[1:]}
    assert forged.status_code >= 400 and b"<feed" not in forged.content
    assert other.status_code >= 400


async def test_a_feed_is_due_a_minute_before_its_interval_is_up(
    runtime: Runtime, feed_server: FeedServer
) -> None:
    feed_server.serve("/rss", Route(rss2(_records(2))))
    add_feed(runtime.engine, "TheyWorkForYou: answers", feed_server.url("/rss"), 60)
    await run_once(runtime, now=NOW)
    fetched = len(feed_server.requests)
    # Cron every hour, started 50 s early: the feed is polled, not skipped for an hour.
    await run_once(runtime, now=NOW + timedelta(minutes=59, seconds=10))
    assert len(feed_server.requests) == fetched + 1
    # Well inside the interval it is not, even when a poll is asked for.
    await run_once(runtime, now=NOW + timedelta(minutes=90), on_demand=True)
    assert len(feed_server.requests) == fetched + 1
