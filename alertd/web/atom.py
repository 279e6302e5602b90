"""Every alert as a private Atom feed: its recent matches, behind a signed link."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, time

from fastapi import APIRouter, Response
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from starlette.concurrency import run_in_threadpool

from alertd.digests.items import alert_label
from alertd.htmltext import web_link
from alertd.kinds import kind_of
from alertd.models import Alert, Hit, Item
from alertd.web.context import Ctx

ATOM = "http://www.w3.org/2005/Atom"
FEED_ENTRIES = 50
router = APIRouter(tags=["feeds"])


def _stamp(item: Item) -> str:
    day = kind_of(item).summary(item).day
    if day is None:
        return item.ingested_at.isoformat()
    return datetime.combine(day, time(0, 0), UTC).isoformat()


def _entry(feed: ET.Element, item: Item) -> None:
    kind = kind_of(item)
    summary = kind.summary(item)
    entry = ET.SubElement(feed, "entry")
    ET.SubElement(entry, "id").text = kind.atom_id(item)
    title = summary.title or summary.reference
    ET.SubElement(entry, "title").text = title + (f" ({summary.status})" if summary.status else "")
    link = web_link(item.url)
    if link is not None:
        ET.SubElement(entry, "link", href=link)
    ET.SubElement(entry, "updated").text = _stamp(item)
    if summary.by:
        author = ET.SubElement(entry, "author")
        ET.SubElement(author, "name").text = summary.by
    ET.SubElement(entry, "summary").text = kind.atom_text(item)[:2000]
    if summary.where:
        ET.SubElement(entry, "category", term=summary.where)


def recent_matches(session: Session, alert_id: int, limit: int) -> list[Item]:
    """An alert's latest matches, newest first: its feed's entries, its "more" page's list."""
    return list(
        session.exec(
            select(Item)
            .join(Hit, col(Hit.item_id) == col(Item.id))
            .where(Hit.alert_id == alert_id)
            .order_by(col(Hit.created_at).desc(), col(Item.id).desc())
            .limit(limit)
        ).all()
    )


def render_alert_feed(engine: Engine, alert_id: int, self_url: str) -> bytes | None:
    """The Atom document of an alert's latest matches; None when there is no such alert."""
    with Session(engine) as session:
        alert = session.get(Alert, alert_id)
        if alert is None or alert.unsubscribed_at is not None:
            return None
        items = recent_matches(session, alert_id, FEED_ENTRIES)
        feed = ET.Element("feed", xmlns=ATOM)
        ET.SubElement(feed, "id").text = f"urn:alertd:alert:{alert_id}"
        ET.SubElement(feed, "title").text = f"alertd: {alert_label(session, alert)}"
        ET.SubElement(feed, "link", rel="self", href=self_url)
        updated = max((_stamp(q) for q in items), default=alert.created_at.isoformat())
        ET.SubElement(feed, "updated").text = updated
        author = ET.SubElement(feed, "author")
        ET.SubElement(author, "name").text = "alertd"
        for item in items:
            _entry(feed, item)
    document: bytes = ET.tostring(feed, encoding="utf-8", xml_declaration=True)
    return document


@router.get("/alerts/feed/{token}", summary="An alert's recent matches as an Atom feed")
async def alert_feed(ctx: Ctx, token: str) -> Response:
    signed = await ctx.read("feed", token)
    self_url = ctx.links.url(ctx.links.feed_path(signed.id, signed.link_secret))
    body = await run_in_threadpool(render_alert_feed, ctx.engine, signed.id, self_url)
    if body is None:
        return Response("No such alert.\n", status_code=404, media_type="text/plain")
    return Response(body, media_type="application/atom+xml; charset=utf-8")
