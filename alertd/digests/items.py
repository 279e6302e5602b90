"""Digest contents: how alerts are labelled, and the sections and items one digest shows."""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

import sqlalchemy as sa
from sqlmodel import Session, col, select

from alertd.config import Settings
from alertd.digests.excerpt import excerpt_around, flatten, long_date, mark, merge_highlights
from alertd.digests.view import (
    Digest,
    DigestItem,
    DigestSection,
    ItemStage,
    counted_as,
    describe_alert,
    human_label,
    ids_named,
)
from alertd.errors import QueryError
from alertd.htmltext import web_link
from alertd.links import Links
from alertd.matching import Highlights, followed_member, highlight_terms, parse_query
from alertd.models import (
    Alert,
    Hit,
    Item,
    ItemKind,
    Ledger,
    Member,
    QuestionStage,
    Subscriber,
    question_stage,
)
from alertd.sources.source import feed_name

# Distinct (answer, queries, also-labels) items one run keeps; past it the memo starts over.
ITEM_MEMO_LIMIT = 20_000

# (item id, version, the matched alerts' canonical queries, also-matches)
_ItemKey = tuple[int, int, frozenset[str], tuple[str, ...]]


@dataclass(frozen=True)
class Row:
    """A pending hit with its alert and item, as a digest is built from them."""

    hit: Hit
    alert: Alert
    item: Item


class ComposeMemo:
    """Pure work that one compose run's digests share: Member names, highlights, items.

    It holds no ORM objects, so it outlives the run's sessions; the run drops it at the end.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._names: dict[int, str | None] = {}
        self._departments: dict[int, str | None] = {}
        self._highlights: dict[str, Highlights | None] = {}
        self._items: dict[_ItemKey, DigestItem] = {}

    def load_members(self, session: Session, alerts: Iterable[Alert]) -> None:
        """Fetch, in one query, the Members these alerts name that are not known yet."""
        wanted = {
            member_id
            for alert in alerts
            for member_id in _members_named(alert)
            if member_id not in self._names
        }
        if not wanted:
            return
        found = dict(
            session.exec(
                select(Member.id, Member.name).where(col(Member.id).in_(sorted(wanted)))
            ).all()
        )
        for member_id in wanted:
            self._names[member_id] = found.get(member_id)

    def _load_departments(self, session: Session, alerts: Iterable[Alert]) -> None:
        """The names of departments alerts give by id, as the stored answers spell them."""
        wanted = {
            department_id
            for alert in alerts
            for department_id in ids_named(alert.query, ("department",))
            if department_id not in self._departments
        }
        if not wanted:
            return
        found = dict(
            session.exec(
                select(Item.answering_body_id, sa.func.max(Item.answering_body_name))
                .where(col(Item.answering_body_id).in_(sorted(wanted)))
                .group_by(col(Item.answering_body_id))
            ).all()
        )
        for department_id in wanted:
            self._departments[department_id] = found.get(department_id)

    def labels(self, session: Session, alerts: Iterable[Alert]) -> dict[int | None, str]:
        """Each alert's label by alert id: its query in words (``human_label``)."""
        alerts = list(alerts)
        self.load_members(session, alerts)
        self._load_departments(session, alerts)
        labels = {}
        for alert in alerts:
            member_id = _followed(alert)
            name = None if member_id is None else self._names[member_id]
            # A plain follow typed as a name is labelled with the name as stored.
            labels[alert.id] = name or human_label(alert.query, self._names, self._departments)
        return labels

    def highlights(self, canonical: str) -> Highlights | None:
        if canonical not in self._highlights:
            self._highlights[canonical] = _highlights(canonical)
        return self._highlights[canonical]

    def item(self, item: Item, also: tuple[str, ...], queries: frozenset[str]) -> DigestItem:
        """The digest's form of an item matched by alerts with these canonical queries."""
        assert item.id is not None
        key = (item.id, item.version, queries, also)
        shown = self._items.get(key)
        if shown is None:
            marks = merge_highlights(h for q in queries if (h := self.highlights(q)) is not None)
            shown = _item(item, self.settings, also, marks)
            if len(self._items) >= ITEM_MEMO_LIMIT:
                self._items.clear()
            self._items[key] = shown
        return shown


def _members_named(alert: Alert) -> set[int]:
    followed = _followed(alert)
    named = ids_named(alert.query)
    return named if followed is None else named | {followed}


def _followed(alert: Alert) -> int | None:
    """The Member id a plain member follow names; None for any other query."""
    follow = followed_member(alert.canonical)
    return None if follow is None else follow.member_id


def alert_label(session: Session, alert: Alert) -> str:
    """How a digest names an alert: its query, or the Member's name for a plain follow."""
    member_id = _followed(alert)
    if member_id is not None:
        member = session.get(Member, member_id)
        if member is not None:
            return member.name
    return alert.query


def build_digest(
    session: Session,
    settings: Settings,
    subscriber: Subscriber,
    rows: list[Row],
    memo: ComposeMemo | None = None,
) -> Digest:
    """A subscriber's digest: answers grouped by the first alert they matched, each once."""
    if memo is None:
        memo = ComposeMemo(settings)
    links = Links.for_settings(settings)
    assert subscriber.id is not None
    secret = subscriber.link_secret
    manage_url = links.url(links.manage_path(subscriber.id, secret))
    labels = memo.labels(session, (row.alert for row in rows))
    told = _told_when_tabled(session, subscriber.id, [row.item for row in rows])
    order, shown, totals, kinds = _group(rows, labels, memo, told)
    sections = []
    for alert in order:
        assert alert.id is not None
        sections.append(
            DigestSection(
                label=labels[alert.id],
                stop_url=links.url(links.stop_path(alert.id, secret)),
                items=tuple(shown[alert.id]),
                total=totals[alert.id],
                reason=_reason(alert, labels[alert.id]),
                more_url=links.url(links.more_path(alert.id, secret)),
                feed_url=links.url(links.feed_path(alert.id, secret)),
                kind_totals=tuple(kinds[alert.id].items()),
            )
        )
    return Digest(
        recipient=subscriber.email,
        sections=tuple(sections),
        unsubscribe_url=links.url(links.unsubscribe_path(subscriber.id, secret)),
        manage_url=manage_url,
    )


def _told_when_tabled(
    session: Session, subscriber_id: int, items: list[Item]
) -> dict[tuple[str, str], date]:
    """When this subscriber was sent each question (of these items' later versions) as tabled."""
    later = {(q.source, q.source_id) for q in items if q.version > 1}
    if not later:
        return {}
    ids = sorted({source_id for _, source_id in later})
    rows = session.exec(
        select(Ledger.source, Ledger.source_id, Ledger.created_at)
        .join(Item, col(Item.id) == col(Ledger.item_id))
        .where(
            Ledger.subscriber_id == subscriber_id,
            col(Ledger.source_id).in_(ids),
            Item.version_key == QuestionStage.TABLED.value,
        )
    ).all()
    return {(s, i): created.date() for s, i, created in rows if (s, i) in later}


def _reader_stage(item: Item, told: dict[tuple[str, str], date]) -> tuple[str, date | None]:
    stage = question_stage(item.version_key)
    told_on = told.get((item.source, item.source_id))
    if item.kind != ItemKind.WRITTEN_QUESTION:
        return ItemStage.ANSWERED, None
    if stage is QuestionStage.TABLED:
        return ItemStage.TABLED, None
    if stage is QuestionStage.WITHDRAWN:
        return ItemStage.WITHDRAWN, told_on
    if told_on is not None and item.date_answer_corrected is None:
        return ItemStage.NOW_ANSWERED, told_on
    return ItemStage.ANSWERED, None


def _groups(rows: list[Row]) -> dict[int, list[Item]]:
    """Questions answered together (groupedQuestions) that this digest carries: the first
    one's id → the others, which are not shown on their own."""
    by_uin = {(r.item.house, r.item.uin): r.item for r in rows if r.item.uin}
    heads: dict[int, list[Item]] = {}
    placed: set[int] = set()
    for row in rows:
        head = row.item
        if head.id is None or head.id in placed or not head.grouped_uins:
            continue
        stage = question_stage(head.version_key)
        if stage is not QuestionStage.ANSWERED:
            continue
        members = []
        for uin in head.grouped_uins.split():
            other = by_uin.get((head.house, uin))
            if other is None or other.id in placed or other.id == head.id:
                continue
            if question_stage(other.version_key) is stage:
                members.append(other)
                placed.add(other.id or 0)
        placed.add(head.id)
        if members:
            heads[head.id] = members
    return heads


def _group_lines(head: Item, members: list[Item]) -> tuple[str, ...]:
    texts = {m.uin: flatten(m.question_text) for m in members}
    lines = [f"{head.uin}: {flatten(head.question_text)}"]
    for uin in head.grouped_uins.split():
        lines.append(f"{uin}: {texts[uin]}" if texts.get(uin) else uin)
    return tuple(lines)


def _group(
    rows: list[Row],
    labels: dict[int | None, str],
    memo: ComposeMemo,
    told: dict[tuple[str, str], date] | None = None,
) -> tuple[list[Alert], dict[int, list[DigestItem]], Counter[int], dict[int, Counter[str]]]:
    """The alerts in order, the items each shows, how many items each has and how many of
    each KIND_WORDS key (view.counted_as).

    An item is counted only under its first alert; only those shown are built. Questions
    answered together are shown once, under the first, which lists the group.
    """
    told = told or {}
    groups = _groups(rows)
    grouped = {m.id for members in groups.values() for m in members}
    alerts_of: dict[int, list[Alert]] = defaultdict(list)
    for row in rows:
        assert row.item.id is not None
        alerts_of[row.item.id].append(row.alert)
    limit = memo.settings.digest.max_per_alert
    placed: set[int] = set()
    shown: dict[int, list[DigestItem]] = defaultdict(list)
    totals: Counter[int] = Counter()
    statements: Counter[int] = Counter()
    order: list[Alert] = []
    kinds: dict[int, Counter[str]] = defaultdict(Counter)
    for row in rows:
        item_id, alert_id = row.item.id, row.alert.id
        assert item_id is not None and alert_id is not None
        if item_id in placed or item_id in grouped:
            continue
        placed.add(item_id)
        if alert_id not in totals:
            order.append(row.alert)
        totals[alert_id] += 1
        # What the digest calls it, counted whether shown or not.
        kinds[alert_id][counted_as(str(row.item.kind), _reader_stage(row.item, told)[0])] += 1
        # The limit is per group: many answers never hide an alert's statements.
        if row.item.kind == ItemKind.STATEMENT:
            statements[alert_id] += 1
            if statements[alert_id] > limit:
                continue
        elif totals[alert_id] - statements[alert_id] > limit:
            continue
        matched = alerts_of[item_id]
        others = tuple(
            dict.fromkeys(labels[a.id] for a in matched if labels[a.id] != labels[alert_id])
        )
        queries = frozenset(a.canonical for a in matched)
        shown_item = memo.item(row.item, others, queries)
        stage, told_on = _reader_stage(row.item, told)
        group = _group_lines(row.item, groups[item_id]) if item_id in groups else ()
        if stage != shown_item.stage or told_on is not None or group:
            shown_item = dataclasses.replace(shown_item, stage=stage, told_on=told_on, group=group)
        shown[alert_id].append(shown_item)
    return order, shown, totals, kinds


def _highlights(canonical: str) -> Highlights | None:
    try:
        return highlight_terms(parse_query(canonical))
    except QueryError:
        return None  # a query that no longer parses highlights nothing; it still shows


def _reason(alert: Alert, label: str) -> str:
    follow = followed_member(alert.canonical)
    if follow is None:
        return describe_alert(label)
    if follow.field == "asker":
        return f"you follow questions asked by {label}"
    if follow.field == "answerer":
        return f"you follow answers given by {label}"
    return describe_alert(label, member=True)


def _name(name: str | None) -> str:
    # Items stored before Members were named at ingest may hold a bare id as the name:
    # a reader is never shown "Member 5336".
    if name is None or name.isdigit():
        return ""
    return name


def _person(name: str | None, party: str | None, constituency: str | None) -> str:
    details = ", ".join(part for part in (party, constituency) if part)
    shown = _name(name) or "a Member"
    return f"{shown} ({details})" if details else shown


def _item(
    item: Item, settings: Settings, also: tuple[str, ...], highlights: Highlights
) -> DigestItem:
    if item.kind == ItemKind.STATEMENT:
        return _statement(item, settings, also, highlights)
    feed = feed_name(item.source)
    asked = _person(
        item.asking_member_name,
        item.asking_member_party,
        item.asking_member_constituency,
    )
    text = mark(item.question_text, highlights)
    answer = excerpt_around(item.answer_text, highlights, settings.digest.excerpt_chars)
    return DigestItem(
        heading=flatten(item.heading) or f"Question {item.uin or ''}",
        department=item.answering_body_name or "",
        asked_by="" if feed is not None else asked,
        answered_by=_name(item.answering_member_name),
        date_tabled=item.date_tabled,
        date_answered=item.date_answered,
        question_text=text.text,
        answer_excerpt=answer.text,
        # Checked again as it is shown: rows stored before links were checked at ingest.
        url=web_link(item.url) or "",
        uin=item.uin or "",
        house=item.house or "",
        corrected=item.date_answer_corrected is not None,
        also_matches=also,
        question_marks=text.spans,
        excerpt_marks=answer.spans,
        source=feed or "",
        answer_html=item.answer_html,
        due=_due(item),
        kind=str(item.kind),
    )


def _due(item: Item) -> str:
    if item.date_for_answer is None or question_stage(item.version_key) != QuestionStage.TABLED:
        return ""
    named = ", a named day" if item.is_named_day else ""
    return f"due {long_date(item.date_for_answer)}{named}"


def _statement(
    item: Item, settings: Settings, also: tuple[str, ...], highlights: Highlights
) -> DigestItem:
    text = excerpt_around(item.answer_text, highlights, settings.digest.excerpt_chars)
    return DigestItem(
        heading=flatten(item.heading) or f"Statement {item.uin or ''}",
        department=item.answering_body_name or "",
        asked_by="",
        answered_by=_name(item.answering_member_name),
        date_tabled=item.date_tabled,
        date_answered=item.date_answered,
        question_text="",
        answer_excerpt=text.text,
        url=item.url,
        uin=item.uin or "",
        house=item.house or "",
        corrected=item.date_answer_corrected is not None,
        also_matches=also,
        excerpt_marks=text.spans,
        answer_html=item.answer_html,
        kind=str(item.kind),
        role=flatten(item.answering_member_role or ""),
        attachments=tuple(
            flatten(str(a.get("title") or "")) for a in item.attachments or () if a.get("title")
        ),
    )
