"""Digest contents: how alerts are labelled, and the sections and items one digest shows."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date

import sqlalchemy as sa
from sqlmodel import Session, col, select

from alertd.config import Settings
from alertd.digests.excerpt import merge_highlights
from alertd.digests.view import (
    Digest,
    DigestItem,
    DigestSection,
    describe_alert,
    human_label,
    ids_named,
)
from alertd.errors import QueryError
from alertd.kinds import KINDS, kind_of
from alertd.kinds.kind import CardContext, KindWords
from alertd.links import Links
from alertd.matching import Highlights, followed_member, highlight_terms, parse_query
from alertd.models import Alert, Hit, Item, Ledger, Member, Subscriber

# Distinct (item, queries, also-labels, reader) cards one run keeps; past it the memo starts
# over.
ITEM_MEMO_LIMIT = 20_000

# (item id, version, the matched alerts' canonical queries, also-matches, told on, grouped)
_ItemKey = tuple[int, int, frozenset[str], tuple[str, ...], date | None, tuple[int, ...]]


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

    def item(
        self,
        item: Item,
        also: tuple[str, ...],
        queries: frozenset[str],
        told_on: date | None = None,
        grouped: tuple[Item, ...] = (),
    ) -> DigestItem:
        """The digest's card of an item matched by alerts with these canonical queries, for
        a reader told of it on ``told_on`` (see CardContext)."""
        assert item.id is not None
        key = (item.id, item.version, queries, also, told_on, tuple(g.id or 0 for g in grouped))
        shown = self._items.get(key)
        if shown is None:
            marks = merge_highlights(h for q in queries if (h := self.highlights(q)) is not None)
            followed = frozenset(
                follow.member_id for q in queries if (follow := followed_member(q)) is not None
            )
            context = CardContext(
                marks, self.settings.digest.excerpt_chars, also, told_on, grouped, followed
            )
            shown = kind_of(item).card(item, context)
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
    links: Links | None = None,
) -> Digest:
    """A subscriber's digest: answers grouped by the first alert they matched, each once;
    its links made by ``links`` (default: the settings', which do not expire)."""
    if memo is None:
        memo = ComposeMemo(settings)
    if links is None:
        links = Links.for_settings(settings)
    assert subscriber.id is not None
    secret = subscriber.link_secret
    manage_url = links.url(links.manage_path(subscriber.id, secret))
    labels = memo.labels(session, (row.alert for row in rows))
    told = _told_on(session, subscriber.id, [row.item for row in rows])
    tally = _group(rows, labels, memo, told)
    sections = []
    for alert in tally.order:
        assert alert.id is not None
        sections.append(
            DigestSection(
                label=labels[alert.id],
                stop_url=links.url(links.stop_path(alert.id, secret)),
                items=tuple(tally.shown[alert.id]),
                total=tally.totals[alert.id],
                reason=_reason(alert, labels[alert.id]),
                more_url=links.url(links.more_path(alert.id, secret)),
                feed_url=links.url(links.feed_path(alert.id, secret)),
                kind_totals=tuple(tally.kinds[alert.id].items()),
            )
        )
    return Digest(
        recipient=subscriber.email,
        sections=tuple(sections),
        unsubscribe_url=links.url(links.unsubscribe_path(subscriber.id, secret)),
        manage_url=manage_url,
    )


def _told_on(
    session: Session, subscriber_id: int, items: list[Item]
) -> dict[tuple[str, str], date]:
    """When this subscriber was sent each of these items (later versions) at its kind's
    told stage (a question as tabled)."""
    later: dict[tuple[str, str], str] = {}
    for item in items:
        stage = kind_of(item).told_stage
        if item.version > 1 and stage is not None:
            later[item.source, item.source_id] = stage
    if not later:
        return {}
    ids = sorted({source_id for _, source_id in later})
    rows = session.exec(
        select(Ledger.source, Ledger.source_id, Ledger.created_at, Item.stage)
        .join(Item, col(Item.id) == col(Ledger.item_id))
        .where(
            Ledger.subscriber_id == subscriber_id,
            col(Ledger.source_id).in_(ids),
            col(Item.stage).in_(sorted(set(later.values()))),
        )
    ).all()
    return {(s, i): created.date() for s, i, created, stage in rows if later.get((s, i)) == stage}


def _grouped(rows: list[Row]) -> dict[int, list[Item]]:
    """Items shown inside another's card (by that one's id), as each kind groups them: over
    the whole digest, or within the alert each is shown under (Kind.grouped_items_count)."""
    by_scope: dict[tuple[str, int | None], list[Item]] = defaultdict(list)
    first_alert: dict[int | None, int | None] = {}
    for row in rows:
        shown_under = first_alert.setdefault(row.item.id, row.alert.id)
        scope = shown_under if KINDS[row.item.kind].grouped_items_count else None
        by_scope[row.item.kind, scope].append(row.item)
    heads: dict[int, list[Item]] = {}
    for (name, _), items in by_scope.items():
        heads.update(KINDS[name].grouped(items))
    return heads


@dataclass
class _Tally:
    """What each alert of a digest shows and counts, as ``_group`` finds it."""

    # The alerts in order; the cards each shows; how many items each has (shown or not),
    # and how many of each kind's words.
    order: list[Alert] = field(default_factory=list)
    shown: dict[int, list[DigestItem]] = field(default_factory=lambda: defaultdict(list))
    totals: Counter[int] = field(default_factory=Counter)
    kinds: dict[int, Counter[KindWords]] = field(default_factory=lambda: defaultdict(Counter))

    def count(self, alert: Alert, words: KindWords) -> None:
        assert alert.id is not None
        if alert.id not in self.totals:
            self.order.append(alert)
        self.totals[alert.id] += 1
        self.kinds[alert.id][words] += 1


def _group(
    rows: list[Row],
    labels: dict[int | None, str],
    memo: ComposeMemo,
    told: dict[tuple[str, str], date] | None = None,
) -> _Tally:
    """The alerts in order, the items each shows, how many items each has and how many of
    each kind's words.

    An item is counted only under its first alert; only those shown are built, at most
    digest.max_per_alert of each group (many answers never hide an alert's statements).
    Items grouped into another's card (questions answered together) are not shown alone,
    and counted only when their kind says so (a debate's contributions).
    """
    told = told or {}
    groups = _grouped(rows)
    grouped = {m.id for members in groups.values() for m in members}
    alerts_of: dict[int, list[Alert]] = defaultdict(list)
    for row in rows:
        assert row.item.id is not None
        alerts_of[row.item.id].append(row.alert)
    limit = memo.settings.digest.max_per_alert
    placed: set[int] = set()
    tally = _Tally()
    per_group: dict[int, Counter[str]] = defaultdict(Counter)
    for row in rows:
        item, alert_id = row.item, row.alert.id
        assert item.id is not None and alert_id is not None
        kind = kind_of(item)
        if item.id in placed or (item.id in grouped and not kind.grouped_items_count):
            continue
        placed.add(item.id)
        told_on = told.get((item.source, item.source_id))
        # What the digest calls it, counted whether shown or not.
        tally.count(row.alert, kind.words(item, told_on))
        if item.id in grouped:
            continue  # shown inside another's card, under the same alert
        per_group[alert_id][kind.digest_group] += 1
        if per_group[alert_id][kind.digest_group] > limit:
            continue
        matched = alerts_of[item.id]
        others = tuple(
            dict.fromkeys(labels[a.id] for a in matched if labels[a.id] != labels[alert_id])
        )
        queries = frozenset(a.canonical for a in matched)
        inside = tuple(groups.get(item.id, ()))
        tally.shown[alert_id].append(memo.item(item, others, queries, told_on, inside))
    return tally


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
