"""The digest view model: the plain data one digest email shows, built by items, read by render."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date

from markupsafe import Markup

from alertd.digests.excerpt import Span, long_date
from alertd.htmltext import sanitise_html
from alertd.kinds import KINDS
from alertd.kinds.kind import KindWords
from alertd.matching.query import MEMBER_FIELDS


@dataclass(frozen=True)
class Block:
    """A titled part of a card: a question, an excerpt of an answer, a list of questions.

    ``marks`` are the (start, end) ranges of ``text`` that the alert's query looks for;
    ``lines`` make it a list instead; ``quoted`` sets it apart as the reply to what is above;
    ``url`` is its own official page, for a block that is an item of its own (one speech of a
    debate).
    """

    label: str
    text: str = ""
    marks: tuple[Span, ...] = ()
    lines: tuple[str, ...] = ()
    quoted: bool = False
    url: str = ""


@dataclass(frozen=True)
class DigestItem:
    """One item (an answered question, a statement, a feed item…) as a digest shows it: a
    card its kind fills (alertd.kinds), for one reader."""

    heading: str
    url: str
    # What the digest calls it ("new answer"), counted in the subject and section headings.
    words: KindWords
    # The words beside the heading: "Asked, awaiting answer (due …)", "Corrected answer".
    status: str = ""
    # Said to this reader first: "We told you about this question when it was tabled…".
    note: str = ""
    # Where it is from (the department, the feed), after ``origin_label`` in text mail.
    origin: str = ""
    origin_label: str = ""
    # Who did what: "Asked by …", "Answered by …", "Made by …, role".
    people: tuple[str, ...] = ()
    # ("Tabled", day), ("Answered", day); its short reference ("House of Commons 12345").
    dates: tuple[tuple[str, date], ...] = ()
    reference: str = ""
    blocks: tuple[Block, ...] = ()
    # Lines after the blocks: "Attachments: …".
    footnotes: tuple[str, ...] = ()
    # The words of the link to the official page.
    read_label: str = "Read it in full"
    also_matches: tuple[str, ...] = ()
    # The group of the section it is shown in, by title ("Written statements"); "" for the
    # first, untitled group.
    group: str = ""
    # Its whole text as HTML from outside (an answer, a statement, a feed item's summary):
    # sanitised again whenever a template shows it (body_markup).
    body_html: str = ""
    # How many of the section's items the card stands for: more than one when they are
    # counted apart but shown together (a debate's contributions, Kind.grouped_items_count).
    item_count: int = 1

    @property
    def body_markup(self) -> Markup:
        """The whole text as allowlisted HTML, safe to put in a mail."""
        return Markup(sanitise_html(self.body_html))

    @property
    def dates_text(self) -> str:
        """``Tabled 1 February 2021, answered 2 February 2021 (House of Commons 12345)``."""
        phrases = [f"{label} {long_date(day)}" for label, day in self.dates]
        text = ", ".join(phrases[:1] + [phrase[:1].lower() + phrase[1:] for phrase in phrases[1:]])
        return f"{text} ({self.reference})" if self.reference and text else text


@dataclass(frozen=True)
class DigestGroup:
    """Items of one section shown together, under a title unless it is the first group."""

    title: str
    items: tuple[DigestItem, ...]


@dataclass(frozen=True)
class DigestSection:
    """The answers (and statements) one alert found, under that alert's label, with counts."""

    label: str
    stop_url: str
    items: tuple[DigestItem, ...]
    total: int
    # Why these answers came: 'your alert "schools"', 'you follow Rushanara Ali'.
    reason: str = ""
    # Where the answers not shown (over digest.max_per_alert) can be seen.
    more_url: str = ""
    # The alert's private Atom feed, for people who prefer a feed reader.
    feed_url: str = ""
    # How many of ``total`` are of each kind's words, shown or not, in order of first
    # appearance; empty: counted from the items shown (the rest taken as the first one's).
    kind_totals: tuple[tuple[KindWords, int], ...] = ()

    @property
    def groups(self) -> tuple[DigestGroup, ...]:
        """The items shown, by group: the untitled group first (answers, feed items), then
        each titled one (written statements) in order of first appearance."""
        by_title: dict[str, list[DigestItem]] = {"": []}
        for item in self.items:
            by_title.setdefault(item.group, []).append(item)
        return tuple(DigestGroup(title, tuple(items)) for title, items in by_title.items() if items)

    @property
    def hidden(self) -> int:
        """How many of the alert's answers this digest does not show."""
        return max(self.total - sum(item.item_count for item in self.items), 0)

    @property
    def kinds(self) -> tuple[tuple[KindWords, int], ...]:
        """(words, count) of everything the section holds, shown or not."""
        if self.kind_totals:
            return self.kind_totals
        counts: dict[KindWords, int] = {}
        for item in self.items:
            counts[item.words] = counts.get(item.words, 0) + item.item_count
        if self.hidden and self.items:
            counts[self.items[0].words] += self.hidden
        return tuple(counts.items())

    @property
    def count_words(self) -> str:
        """``46 new answers``, ``2 new items``, ``3 new answers and 1 new item``."""
        return count_words(self.kinds)

    @property
    def why(self) -> str:
        return self.reason or describe_alert(self.label)


@dataclass(frozen=True)
class Digest:
    """One email: a subscriber's new answers, grouped by alert."""

    recipient: str
    sections: tuple[DigestSection, ...]
    unsubscribe_url: str
    manage_url: str = ""

    @property
    def total(self) -> int:
        return sum(section.total for section in self.sections)

    @property
    def kinds(self) -> tuple[tuple[KindWords, int], ...]:
        """(words, count) over all sections, in order of first appearance."""
        counts: dict[KindWords, int] = {}
        for section in self.sections:
            for kind, count in section.kinds:
                counts[kind] = counts.get(kind, 0) + count
        return tuple(counts.items())

    @property
    def count_words(self) -> str:
        """The subject's count: ``46 new answers``, ``3 new answers and 1 new statement``."""
        return count_words(self.kinds)

    @property
    def headline(self) -> str:
        """``46 new answers to written questions``; ``1 new written question``; each kind
        named as what it is: ``… and 2 new written statements``."""
        return _and(f"{count} {words.headline(count)}" for words, count in self.kinds)

    @property
    def intro(self) -> str:
        """``UK Parliament written answers that match your alerts.``, by the kinds held."""
        sources = _and(dict.fromkeys(words.source for words, _ in self.kinds))
        return f"{sources[:1].upper()}{sources[1:]} that match your alerts."


def _and(phrases: Iterable[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    listed = list(phrases)
    if len(listed) <= 1:
        return "".join(listed)
    return ", ".join(listed[:-1]) + " and " + listed[-1]


def count_words(kinds: Iterable[tuple[KindWords, int]]) -> str:
    """``46 new answers``; ``3 new answers and 2 new items`` when kinds are mixed."""
    return _and(f"{count} {words.short(count)}" for words, count in kinds)


def describe_alert(label: str, *, member: bool = False) -> str:
    """Why an answer came, in words: ``your alert "schools"`` or ``you follow Jo Bloggs``."""
    if member:
        return f"you follow {label}"
    return f"your alert {label}" if '"' in label else f'your alert "{label}"'


# One piece of a typed query: a field and its value, a quoted phrase, a bracket, or a run.
_QUERY_PIECE = re.compile(
    r"""(?P<field>[A-Za-z]+):(?:[\"\u201c\u201d](?P<quoted_value>[^\"\u201c\u201d]*)[\"\u201c\u201d]?"""
    r"""|(?P<value>[^\s()\"\u201c\u201d]+))"""
    r"""|[\"\u201c\u201d](?P<phrase>[^\"\u201c\u201d]*)[\"\u201c\u201d]?"""
    r"""|(?P<bracket>[()])"""
    r"""|(?P<minus>-)(?=[^\s)])"""
    r"""|(?P<run>[^\s()\"\u201c\u201d]+)"""
)
_HOUSE_NAMES = {"commons": "House of Commons", "lords": "House of Lords"}
_TYPE_LABELS = {kind.type_name: kind.type_label for kind in KINDS.values() if kind.type_name}


def ids_named(query: str, fields: tuple[str, ...] = MEMBER_FIELDS) -> set[int]:
    """The ids a typed query gives as numbers in these fields (``member:4113``): their names
    label it."""
    return {
        int(found.group("value"))
        for found in _QUERY_PIECE.finditer(query)
        if (found.group("field") or "").lower() in fields and (found.group("value") or "").isdigit()
    }


def human_label(
    query: str,
    member_names: Mapping[int, str | None],
    department_names: Mapping[int, str | None] | None = None,
) -> str:
    """An alert's query in words, for a digest's sections and subject: no query syntax.

    ``department:"Department for Education"`` gives ``Department for Education``,
    ``member:4113`` the Member's name (from ``member_names``), ``department:60`` the
    department's (from ``department_names``), ``"special educational needs"
    -funding`` gives ``special educational needs, not funding``. Words stay as typed.
    """
    parts: list[str] = []
    # Whether the previous piece was a bare word: bare words run on with a space, other
    # pieces (a name, a phrase, an exclusion) are set apart with a comma.
    previous = ""
    negate = False
    for found in _QUERY_PIECE.finditer(query):
        kind, text = _label_piece(found, member_names, department_names or {})
        if kind == "skip":
            continue
        if kind == "not":
            negate = True
            continue
        if kind == "or":
            parts.append(" or ")
            previous = "or"
            continue
        if kind == ")":
            parts.append(")")
            previous = ")"
            continue
        if previous and previous not in ("or", "("):
            parts.append(" " if kind == previous == "word" and not negate else ", ")
        parts.append(("not " if negate else "") + text)
        previous, negate = ("(" if kind == "(" else kind), False
    label = " ".join("".join(parts).split())
    return label or " ".join(query.split())


def _label_piece(
    found: re.Match[str],
    member_names: Mapping[int, str | None],
    department_names: Mapping[int, str | None],
) -> tuple[str, str]:
    """(kind, words) of one piece of a query: kind says how it joins its neighbours."""
    field = (found.group("field") or "").lower()
    if field:
        value = " ".join((found.group("quoted_value") or found.group("value") or "").split())
        if field in MEMBER_FIELDS and value.isdigit():
            return "name", member_names.get(int(value)) or f"Member {value}"
        if field == "department" and value.isdigit():
            return "name", department_names.get(int(value)) or f"department {value}"
        if field == "house":
            return "name", _HOUSE_NAMES.get(value.lower(), value)
        if field == "type":
            return "name", _TYPE_LABELS.get(value.lower(), value)
        return ("name" if field != "heading" else "phrase"), value
    if found.group("phrase") is not None:
        return "phrase", " ".join(found.group("phrase").split())
    if found.group("bracket") is not None:
        return found.group("bracket"), found.group("bracket")
    if found.group("minus") is not None:
        return "not", ""
    run = found.group("run")
    if run in ("OR", "AND", "NOT"):
        return {"OR": "or", "AND": "skip", "NOT": "not"}[run], ""
    return "word", run
