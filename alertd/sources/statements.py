"""The written-statements source: ministers' statements (HCWS…/HLWS…) as items of their own kind."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

import alertd.matching.history  # noqa: F401  (indexes each Item as it is inserted)
from alertd.db import transaction
from alertd.errors import PermanentError, SourceInvalid
from alertd.htmltext import html_to_text, looks_like_html, sanitise_html
from alertd.models import Item, ItemKind
from alertd.sources.ingest import leased_window_poll, upsert_member
from alertd.sources.parliament import (
    MemberInfo,
    ParliamentApi,
    api_date,
    member_info,
    paragraphs_html,
)
from alertd.sources.source import STATEMENTS_SOURCE, PollResult
from alertd.sources.state import PollLease

log = logging.getLogger("alertd.sources.statements")
STATEMENTS_PATH = "/api/writtenstatements/statements"
OFFICIAL_URL = "https://questions-statements.parliament.uk/written-statements/detail/{made}/{uin}"
# The link type by which a statement names the one it corrects (or is corrected by).
CORRECTION_LINK = "CorrectedStatement"


@dataclass(frozen=True)
class LinkedStatement:
    api_id: int
    link_type: str
    date: date | None


@dataclass(frozen=True)
class Attachment:
    title: str
    url: str


@dataclass(frozen=True)
class StatementItem:
    """One version of a written statement, as the API describes it.

    ``fingerprint`` is taken from the listing (title and text as listed), so a poll can tell
    a changed statement from a known one without fetching its detail.
    """

    api_id: int
    uin: str
    house: str
    title: str
    text_html: str
    text: str
    member: MemberInfo | None
    member_role: str | None
    answering_body_id: int | None
    answering_body_name: str | None
    date_made: date
    attachments: tuple[Attachment, ...]
    linked: tuple[LinkedStatement, ...]
    fingerprint: str

    @property
    def url(self) -> str:
        return OFFICIAL_URL.format(made=self.date_made.isoformat(), uin=self.uin)

    @property
    def version_key(self) -> str:
        # The statement's own id first: a correction made as a new statement is stored as a
        # version of the one it corrects, and is found again by its id.
        return f"{self.api_id}:{self.fingerprint}"

    def corrected_ids(self) -> list[int]:
        """Earlier statements this one corrects (a correction link to a lower id)."""
        return sorted(
            link.api_id
            for link in self.linked
            if link.link_type == CORRECTION_LINK and link.api_id < self.api_id
        )


def listing_fingerprint(value: Mapping[str, Any]) -> str:
    """What marks a new version of a statement in its listing: its title and (listed) text."""
    shown = json.dumps([value.get("title") or "", value.get("text") or ""], ensure_ascii=False)
    return hashlib.sha256(shown.encode()).hexdigest()[:16]


def _linked(raw: Any) -> tuple[LinkedStatement, ...]:
    links = []
    for link in raw or ():
        if isinstance(link, Mapping) and isinstance(link.get("linkedStatementId"), int):
            links.append(
                LinkedStatement(
                    api_id=link["linkedStatementId"],
                    link_type=str(link.get("linkType") or ""),
                    date=api_date(link.get("linkDate"), "linkDate"),
                )
            )
    return tuple(links)


def _attachments(raw: Any) -> tuple[Attachment, ...]:
    return tuple(
        Attachment(title=str(a.get("title") or "").strip(), url=str(a.get("url") or ""))
        for a in raw or ()
        if isinstance(a, Mapping) and (a.get("title") or a.get("url"))
    )


def parse_statement(value: Mapping[str, Any], fingerprint: str | None = None) -> StatementItem:
    """Normalise one API ``value`` object (listing or detail).

    Raises:
        SourceInvalid: a required field is missing or has the wrong type.
    """
    try:
        house = str(value["house"])
        raw_text = str(value.get("text") or "")
        text_html = sanitise_html(
            raw_text if looks_like_html(raw_text) else paragraphs_html(raw_text)
        )
        date_made = api_date(value["dateMade"], "dateMade")
        if date_made is None:
            raise ValueError("dateMade is empty")
        return StatementItem(
            api_id=int(value["id"]),
            uin=str(value["uin"]),
            house=house,
            title=str(value.get("title") or "").strip(),
            text_html=text_html,
            text=html_to_text(text_html),
            member=member_info(value.get("member"), value.get("memberId"), house),
            member_role=value.get("memberRole") or None,
            answering_body_id=value.get("answeringBodyId"),
            answering_body_name=value.get("answeringBodyName"),
            date_made=date_made,
            attachments=_attachments(value.get("attachments")),
            linked=_linked(value.get("linkedStatements")),
            fingerprint=fingerprint or listing_fingerprint(value),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise SourceInvalid(f"statement {value.get('id')!r} has a bad field: {exc}") from exc


class StatementsApi:
    """The Written Statements endpoints, through the Parliament API client (its paging,
    timeouts and errors); details fetched a few at a time."""

    def __init__(self, api: ParliamentApi) -> None:
        self.api = api
        self._detail_slots = asyncio.Semaphore(api.settings.detail_concurrency)

    async def made_between(self, first: date, last: date) -> list[dict[str, Any]]:
        """Summaries of the statements made between two UK dates inclusive."""
        return await self.api.list_answers(
            {"madeWhenFrom": first.isoformat(), "madeWhenTo": last.isoformat()},
            path=STATEMENTS_PATH,
        )

    async def fetch_detail(self, api_id: int) -> dict[str, Any]:
        """The full record of one statement (whole text, attachments, linked statements)."""
        async with self._detail_slots:
            body = await self.api.get_json(f"{STATEMENTS_PATH}/{api_id}", {"expandMember": "true"})
        value = body.get("value") if isinstance(body, Mapping) else None
        if not isinstance(value, dict) or value.get("id") != api_id:
            raise SourceInvalid(f"detail of statement {api_id} has no matching value")
        return value

    async def full_items(self, summaries: Sequence[Mapping[str, Any]]) -> list[StatementItem]:
        """The detail of each summary (the summary itself when the detail is gone, 404).

        Raises:
            SourceUnavailable: a detail fetch failed for a reason worth retrying.
        """
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self._full_item(s)) for s in summaries]
        except ExceptionGroup as failures:
            first: BaseException = failures
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            raise first from None
        return [task.result() for task in tasks]

    async def _full_item(self, summary: Mapping[str, Any]) -> StatementItem:
        fingerprint = listing_fingerprint(summary)
        try:
            detail = await self.fetch_detail(int(summary["id"]))
        except PermanentError as exc:
            log.warning("using the truncated listing text: %s", exc)
            return parse_statement(summary, fingerprint)
        if not detail.get("member") and summary.get("member"):
            detail["member"] = summary["member"]
        return parse_statement(detail, fingerprint)


@dataclass
class StatementsSource:
    """Written statements as a source: those made over a look-back window."""

    engine: Engine
    api: StatementsApi
    zone: ZoneInfo
    lookback_days: int
    lease: PollLease
    name: str = STATEMENTS_SOURCE

    async def poll(self, now: datetime) -> PollResult:
        """Fetch the window's statements, store new versions, then move the high-water mark.

        Raises:
            SourceUnavailable, SourceInvalid: the poll failed; the failure is also recorded.
        """
        today = now.astimezone(self.zone).date()

        async def fetch_and_store(first: date, last: date) -> tuple[int, int]:
            summaries = await self.api.made_between(first, last)
            unseen = await asyncio.to_thread(unseen_statements, self.engine, summaries)
            items = await self.api.full_items(unseen)
            new = await asyncio.to_thread(
                store_statements, self.engine, items, now=now, today=today
            )
            return len(summaries), new

        return await leased_window_poll(
            self.engine,
            self.name,
            self.lease,
            now=now,
            today=today,
            lookback_days=self.lookback_days,
            fetch_and_store=fetch_and_store,
        )


def unseen_statements(
    engine: Engine, summaries: Sequence[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """Summaries whose version is not stored yet (only those need a detail fetch)."""
    keyed: list[tuple[Mapping[str, Any], str]] = []
    for summary in summaries:
        try:
            keyed.append((summary, parse_statement(summary).version_key))
        except PermanentError as exc:
            log.warning("skipping a listing item: %s", exc)
    keys = sorted({key for _, key in keyed})
    known: set[str] = set()
    with Session(engine) as session:
        for start in range(0, len(keys), 500):
            known.update(
                session.exec(
                    select(Item.version_key).where(
                        Item.source == STATEMENTS_SOURCE,
                        col(Item.version_key).in_(keys[start : start + 500]),
                    )
                ).all()
            )
    return [summary for summary, key in keyed if key not in known]


def store_statements(
    engine: Engine,
    items: Iterable[StatementItem],
    *,
    now: datetime,
    today: date,
    alert: bool = True,
) -> int:
    """Insert the statement versions not stored yet, in one transaction; return how many.

    A statement already stored under another version, or one that corrects a stored
    statement, becomes that statement's next version, marked corrected: it goes to the
    people the earlier version went to, as a corrected answer does. With ``alert=False``
    (backfill) they are stored as already matched: history for preview, never mailed.
    """
    new = 0
    with transaction(engine) as session:
        # Oldest first: a correction made in the same window finds the statement it corrects.
        for item in sorted(items, key=lambda i: i.api_id):
            if _store_statement(session, item, now, today, alert):
                new += 1
    return new


def _root_of(session: Session, api_id: int) -> str | None:
    """The source id a statement is stored under (its own id, or the one it corrected)."""
    found = session.exec(
        select(Item.source_id)
        .where(
            Item.source == STATEMENTS_SOURCE,
            col(Item.version_key).startswith(f"{api_id}:"),
        )
        .limit(1)
    ).first()
    return found


def _store_statement(
    session: Session, item: StatementItem, now: datetime, today: date, alert: bool
) -> bool:
    known = session.exec(
        select(Item.id).where(
            Item.source == STATEMENTS_SOURCE, Item.version_key == item.version_key
        )
    ).first()
    if known is not None:
        return False
    root = _root_of(session, item.api_id)
    corrected_on: date | None = today if root is not None else None
    if root is None:
        for earlier in item.corrected_ids():
            root = _root_of(session, earlier)
            if root is not None:
                corrected_on = item.date_made
                break
    if root is None and item.corrected_ids():
        # Corrects a statement made before alertd looked: shown as a correction, sent fresh.
        corrected_on = item.date_made
    source_id = root or str(item.api_id)
    latest = session.exec(
        select(func.max(Item.version)).where(
            Item.source == STATEMENTS_SOURCE, Item.source_id == source_id
        )
    ).one()
    row = _statement_row(item, source_id, (latest or 0) + 1, corrected_on, now)
    if not alert:
        row.matched_at = now
    session.add(row)
    if item.member is not None:
        upsert_member(session, item.member)
    return True


def _statement_row(
    item: StatementItem, source_id: str, version: int, corrected_on: date | None, now: datetime
) -> Item:
    minister = item.member
    return Item(
        kind=ItemKind.STATEMENT,
        source=STATEMENTS_SOURCE,
        source_id=source_id,
        version=version,
        version_key=item.version_key,
        uin=item.uin,
        house=item.house,
        heading=item.title,
        # The attachments' titles are searchable words of the statement.
        question_text="\n".join(a.title for a in item.attachments if a.title),
        answer_html=item.text_html,
        answer_text=item.text,
        answering_member_id=minister.id if minister else None,
        answering_member_name=minister.name if minister else None,
        answering_member_role=item.member_role,
        answering_body_id=item.answering_body_id,
        answering_body_name=item.answering_body_name,
        date_tabled=item.date_made,
        date_answered=item.date_made,
        date_answer_corrected=corrected_on,
        attachments=[{"title": a.title, "url": a.url} for a in item.attachments],
        linked_statements=[
            {
                "id": link.api_id,
                "link_type": link.link_type,
                "date": link.date.isoformat() if link.date else None,
            }
            for link in item.linked
        ],
        url=item.url,
        ingested_at=now,
    )
