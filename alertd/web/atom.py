"""Every alert as a private Atom feed: its recent matches, behind a signed link."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, time

from fastapi import APIRouter, Response
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from starlette.concurrency import run_in_threadpool

from alertd.digests.items import alert_label
from alertd.links import alert_feed_url
from alertd.models import Alert, Hit, Question
from alertd.web.context import Ctx

ATOM = "http://www.w3.org/2005/Atom"
FEED_ENTRIES = 50
router = APIRouter(tags=["feeds"])


def _stamp(question: Question) -> str:
    day = question.date_answer_corrected or question.date_answered or question.date_tabled
    return datetime.combine(day, time(0, 0), UTC).isoformat()


def _entry(feed: ET.Element, question: Question) -> None:
    entry = ET.SubElement(feed, "entry")
    ET.SubElement(
        entry, "id"
    ).text = f"urn:alertd:answer:{question.api_id}:{question.answer_version}"
    corrected = " (corrected answer)" if question.date_answer_corrected else ""
    ET.SubElement(entry, "title").text = (question.heading or question.uin) + corrected
    ET.SubElement(entry, "link", href=question.url)
    ET.SubElement(entry, "updated").text = _stamp(question)
    if question.asking_member_name:
        author = ET.SubElement(entry, "author")
        ET.SubElement(author, "name").text = question.asking_member_name
    summary = " ".join(part for part in (question.question_text, question.answer_text) if part)
    ET.SubElement(entry, "summary").text = summary[:2000]
    if question.answering_body_name or question.source != "parliament":
        category = question.answering_body_name or question.source
        ET.SubElement(entry, "category", term=category)


def render_alert_feed(engine: Engine, alert_id: int, self_url: str) -> bytes | None:
    """The Atom document of an alert's latest matches; None when there is no such alert."""
    with Session(engine) as session:
        alert = session.get(Alert, alert_id)
        if alert is None or alert.unsubscribed_at is not None:
            return None
        questions = session.exec(
            select(Question)
            .join(Hit, col(Hit.question_id) == col(Question.id))
            .where(Hit.alert_id == alert_id)
            .order_by(col(Hit.created_at).desc(), col(Question.id).desc())
            .limit(FEED_ENTRIES)
        ).all()
        feed = ET.Element("feed", xmlns=ATOM)
        ET.SubElement(feed, "id").text = f"urn:alertd:alert:{alert_id}"
        ET.SubElement(feed, "title").text = f"alertd: {alert_label(session, alert)}"
        ET.SubElement(feed, "link", rel="self", href=self_url)
        updated = max((_stamp(q) for q in questions), default=alert.created_at.isoformat())
        ET.SubElement(feed, "updated").text = updated
        author = ET.SubElement(feed, "author")
        ET.SubElement(author, "name").text = "alertd"
        for question in questions:
            _entry(feed, question)
    document: bytes = ET.tostring(feed, encoding="utf-8", xml_declaration=True)
    return document


@router.get("/alerts/feed/{token}", summary="An alert's recent matches as an Atom feed")
async def alert_feed(ctx: Ctx, token: str) -> Response:
    alert_id = ctx.read("feed", token)
    self_url = alert_feed_url(ctx.settings.web.base_url, ctx.secret, alert_id)
    body = await run_in_threadpool(render_alert_feed, ctx.engine, alert_id, self_url)
    if body is None:
        return Response("No such alert.\n", status_code=404, media_type="text/plain")
    return Response(body, media_type="application/atom+xml; charset=utf-8")
