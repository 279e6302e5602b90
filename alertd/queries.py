"""A query as a person types it: checked, its names resolved, what it finds in stored items."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from datetime import date, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from alertd.errors import QueryError
from alertd.kinds import KINDS, kind_of
from alertd.matching import Query, matching_item_ids, parse_query
from alertd.matching.query import MEMBER_FIELDS
from alertd.models import Item, Member

# Above this many matches a day over the stored history an alert is refused unless forced:
# nobody reads such a digest (CourtListener refuses these too).
BROAD_ALERT_PER_DAY = 30
BREADTH_WINDOW_DAYS = 90


class _DbResolver:
    """Turns Member and department names in a query into ids, from what the store has seen."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def __call__(self, field: str, name: str, position: int) -> int:
        wanted = " ".join(name.split()).casefold()
        if field in MEMBER_FIELDS:
            rows = self.session.exec(select(Member.id, Member.name)).all()
            known = {row_name.casefold(): row_id for row_id, row_name in rows}
        elif field == "department":
            bodies = self.session.exec(
                select(Item.answering_body_id, Item.answering_body_name).distinct()
            ).all()
            known = {n.casefold(): i for i, n in bodies if i is not None and n is not None}
        else:
            raise QueryError(f"field {field}: takes no name", position)
        if wanted in known:
            return known[wanted]
        close = difflib.get_close_matches(wanted, list(known), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(repr(c.title()) for c in close)}?" if close else ""
        kind = "department" if field == "department" else "Member"
        raise QueryError(f"unknown {kind} {name!r}{hint}", position)


# Web addresses (with a scheme, www., or a bare host.tld/path) and phone numbers (7+ digits,
# with spaces, dots, dashes, brackets or a leading +) typed into a query.
_URL = re.compile(
    r"(?i)(?:\b[a-z][a-z0-9+.-]*://\S+|\bwww\.\S+|\b[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}(?:/\S*)?)"
)
_PHONE = re.compile(r"\+?\(?\d(?:[\s().-]*\d){6,}")
# An id of 7 digits or more: no Member or department has one, and it reads as a phone number.
_LONG_ID = re.compile(r"(?i)\b(member|asker|answerer|department):\s*\d{7,}")
# A phone number: a run of 7 or more digits, or 10 or more after a leading 0 or + with
# spaces, dots, dashes or brackets between. Refused outright, not only when it is most of the
# query: a sign-up mail goes to any address typed in, and a number to call is the whole of a
# phishing text ("07700900123 call due hmrc now refund"). No real query needs one: Member and
# department ids have at most 6 digits, written question UINs at most 6, years 4, and a
# financial year (2023-24) or a list of years starts with no 0 or +.
_PHONE_NUMBER = re.compile(r"\d{7,}|(?:\+|(?<![\d.])0)(?:[ ().-]{0,2}\d){9,}")
PHONE_NUMBER_ERROR = (
    "Remove the phone number: a query may hold no run of 7 or more digits, nor a number "
    "like 020 7946 0958 (no id, question number or year is that long)"
)
URL_PHONE_ERROR = (
    "Type the words to look for: a query made mostly of web addresses or phone numbers is refused"
)


def check_query_words(text: str) -> None:
    """Refuse a query that holds a phone number, or is mostly web addresses.

    Such a query finds nothing in Parliament's answers, and the confirmation email would
    carry it to any address from our domain (phishing text).

    Raises:
        QueryError: half or more of its characters (not counting spaces) are in URLs or
            phone numbers; it holds a phone number (PHONE_NUMBER_ERROR) at all; or a
            field's id is as long as a phone number.
    """
    long_id = _LONG_ID.search(text)
    if long_id:
        raise QueryError(
            f"{long_id.group(1).lower()}: no such id (ids have at most 6 digits)", long_id.start()
        )
    total = sum(not c.isspace() for c in text)
    if total == 0:
        return
    flagged = [False] * len(text)
    for pattern in (_URL, _PHONE):
        for found in pattern.finditer(text):
            flagged[found.start() : found.end()] = [True] * (found.end() - found.start())
    marked = sum(1 for c, hit in zip(text, flagged, strict=True) if hit and not c.isspace())
    if marked * 2 >= total:
        raise QueryError(URL_PHONE_ERROR)
    phone = _PHONE_NUMBER.search(text)
    if phone:
        raise QueryError(PHONE_NUMBER_ERROR, phone.start())


def check_query(text: str) -> list[tuple[str, str]]:
    """Check a query's syntax without the database; the (field, name) pairs it names.

    Raises:
        QueryError: the query is malformed.
    """
    named: list[tuple[str, str]] = []

    def record(field: str, name: str, position: int) -> int:
        if field not in (*MEMBER_FIELDS, "department"):
            raise QueryError(f"field {field}: takes no name", position)
        named.append((field, name))
        return len(named)

    parse_query(text, record)
    return named


def member_names(text: str) -> list[str]:
    """The Member names (not ids) a query names, for looking them up before it is saved.

    Raises:
        QueryError: the query is malformed.
    """
    return [name for field, name in check_query(text) if field in MEMBER_FIELDS]


def compile_query(session: Session, text: str) -> Query:
    """Parse a query, resolving names to ids.

    Raises:
        QueryError: the query is malformed or names someone unknown.
    """
    return parse_query(text, _DbResolver(session))


def matching_ids(
    engine: Engine, query_text: str, since: date, *, include_feed_items: bool = True
) -> list[int]:
    """Ids of the stored items (not holding answers) answered or published since a day that
    a query matches, newest first (from the index of stored items; see matching.history);
    without feed items unless ``include_feed_items``.

    Raises:
        QueryError: the query is malformed or names someone unknown.
    """
    with Session(engine) as session:
        query = compile_query(session, query_text)
        found = matching_item_ids(session.connection(), query, since)
        if include_feed_items or not found:
            return found
        return _without_feed_items(session, found)


def _without_feed_items(session: Session, ids: list[int]) -> list[int]:
    """``ids`` less those of feed items, in the order given."""
    feed_ids: set[int] = set()
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        # Kinds whose text is not for anyone who asks (a feed's).
        private = [kind.name for kind in KINDS.values() if not kind.public_text]
        statement = select(Item.id).where(col(Item.id).in_(chunk), col(Item.kind).in_(private))
        feed_ids.update(i for i in session.exec(statement).all() if i is not None)
    return [item_id for item_id in ids if item_id not in feed_ids]


def load_items(engine: Engine, ids: list[int]) -> list[Item]:
    """The items of these ids, in the order given."""
    by_id: dict[int, Item] = {}
    with Session(engine) as session:
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            for item in session.exec(select(Item).where(col(Item.id).in_(chunk))).all():
                assert item.id is not None
                by_id[item.id] = item
    return [by_id[item_id] for item_id in ids]


@dataclass(frozen=True)
class MatchLine:
    """What `alertd preview` prints of a matching item."""

    day: date | None
    # Its short reference ("HL1234"), else the source it came from ("feed:NAME").
    where: str
    title: str
    url: str


def matching_lines(engine: Engine, query_text: str, since: date) -> list[MatchLine]:
    """`matching_ids` as MatchLines, newest first.

    Raises:
        QueryError: the query is malformed or names someone unknown.
    """
    ids = matching_ids(engine, query_text, since)
    by_id: dict[int, MatchLine] = {}
    # Only the columns a line shows: not the whole items with their texts.
    columns = [col(c) for c in (Item.id, Item.kind, Item.source, Item.day, Item.title, Item.url)]
    columns.append(Item.__table__.c.details)  # type: ignore[attr-defined]
    with Session(engine) as session:
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            rows = session.execute(sa.select(*columns).where(col(Item.id).in_(chunk))).all()
            for item_id, kind, source, day, title, url, details in rows:
                item = Item.model_construct(
                    kind=kind, source=source, source_id="", version=0, details=details
                )
                where = kind_of(item).reference(item) or source
                by_id[item_id] = MatchLine(day, where, title, url)
    return [by_id[item_id] for item_id in ids]


def matching_answers(engine: Engine, query_text: str, since: date) -> list[Item]:
    """The items of `matching_ids`, newest first.

    Raises:
        QueryError: the query is malformed or names someone unknown.
    """
    return load_items(engine, matching_ids(engine, query_text, since))


def daily_match_rate(engine: Engine, query_text: str, *, include_feed_items: bool = True) -> float:
    """Average matches a day over the stored history (its last 90 days; 0 with no history);
    feed items counted only if ``include_feed_items``."""
    with Session(engine) as session:
        first, last = session.exec(select(func.min(Item.day), func.max(Item.day))).one()
    if first is None or last is None:
        return 0.0
    first = max(first, last - timedelta(days=BREADTH_WINDOW_DAYS - 1))
    found = matching_ids(engine, query_text, first, include_feed_items=include_feed_items)
    return len(found) / ((last - first).days + 1)
