"""The digest view model: the plain data one digest email shows, built by items, read by render."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from markupsafe import Markup

from alertd.digests.excerpt import Span
from alertd.htmltext import sanitise_html


class ItemStage(StrEnum):
    """What a digest says of a question, for one reader."""

    ANSWERED = "answered"
    TABLED = "tabled"
    NOW_ANSWERED = "now_answered"
    WITHDRAWN = "withdrawn"


@dataclass(frozen=True)
class DigestItem:
    """One answered question (or a feed item, or a written statement) as a digest shows it.

    ``question_marks`` and ``excerpt_marks`` are the (start, end) ranges of
    ``question_text`` and ``answer_excerpt`` that the alert's query looks for. A statement
    has its title as ``heading``, the minister as ``answered_by``, the day made as
    ``date_answered`` and an excerpt of its text as ``answer_excerpt``.
    """

    heading: str
    department: str
    asked_by: str
    answered_by: str
    date_tabled: date | None
    date_answered: date | None
    question_text: str
    answer_excerpt: str
    url: str
    uin: str
    house: str
    corrected: bool
    also_matches: tuple[str, ...] = ()
    question_marks: tuple[Span, ...] = ()
    excerpt_marks: tuple[Span, ...] = ()
    # The feed's name for an item of an RSS/Atom feed; empty for a written question.
    source: str = ""
    # The whole answer as HTML from outside: sanitised again whenever a template shows it.
    answer_html: str = ""
    # Where the question is, for this reader (ItemStage): an answer, or a question as tabled,
    # now answered (after one mailed as tabled), withdrawn.
    stage: str = "answered"
    # A tabled question's due date, e.g. "due 3 February 2021, a named day".
    due: str = ""
    # When this reader was told of the question as tabled (now answered, withdrawn).
    told_on: date | None = None
    # The questions answered together with this one, when it heads a group: "HL123: text".
    group: tuple[str, ...] = ()
    # A statement's minister's role ("Minister for Investment") and attachments' titles.
    role: str = ""
    attachments: tuple[str, ...] = ()
    # The item's kind (an ItemKind value): with its stage, what the digest calls it (KIND_WORDS).
    kind: str = "written_question"

    @property
    def status(self) -> str:
        """The words beside the heading: "Asked, awaiting answer (due …)", "Now answered"."""
        if self.stage == ItemStage.TABLED:
            return f"Asked, awaiting answer ({self.due})" if self.due else "Asked, awaiting answer"
        if self.stage == ItemStage.NOW_ANSWERED:
            return "Now answered"
        if self.stage == ItemStage.WITHDRAWN:
            return "Withdrawn"
        if not self.corrected:
            return ""
        return "Corrected statement" if self.is_statement else "Corrected answer"

    @property
    def is_statement(self) -> bool:
        """A written statement: shown in its own group, after the answers."""
        return self.kind == "statement"

    @property
    def counted_as(self) -> str:
        """Its key in KIND_WORDS: a question by its stage (an answer, a question as tabled,
        an update), any other kind by its kind."""
        return counted_as(self.kind, self.stage)

    @property
    def answer_markup(self) -> Markup:
        """The full answer as allowlisted HTML, safe to put in a mail."""
        return Markup(sanitise_html(self.answer_html))


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
    # How many of ``total`` are of each KIND_WORDS key, shown or not, in order of first
    # appearance; empty: counted from the items shown (the rest taken as the first one's).
    kind_totals: tuple[tuple[str, int], ...] = ()

    @property
    def answers(self) -> tuple[DigestItem, ...]:
        """The items shown that are not statements (answers, feed items), in order."""
        return tuple(item for item in self.items if not item.is_statement)

    @property
    def statements(self) -> tuple[DigestItem, ...]:
        """The written statements shown, in order: their own group in the section."""
        return tuple(item for item in self.items if item.is_statement)

    @property
    def hidden(self) -> int:
        """How many of the alert's answers this digest does not show."""
        return max(self.total - len(self.items), 0)

    @property
    def kinds(self) -> tuple[tuple[str, int], ...]:
        """(KIND_WORDS key, count) of everything the section holds, shown or not."""
        if self.kind_totals:
            return self.kind_totals
        counts: dict[str, int] = {}
        for item in self.items:
            counts[item.counted_as] = counts.get(item.counted_as, 0) + 1
        if self.hidden and self.items:
            counts[self.items[0].counted_as] += self.hidden
        return tuple(counts.items()) or (("answer", self.total),)

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
    def kinds(self) -> tuple[tuple[str, int], ...]:
        """(KIND_WORDS key, count) over all sections, in order of first appearance."""
        counts: dict[str, int] = {}
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
        return _and(
            f"{count} {KIND_WORDS.get(kind, _OTHER).headline(count)}" for kind, count in self.kinds
        )

    @property
    def intro(self) -> str:
        """``UK Parliament written answers that match your alerts.``, by the kinds held."""
        sources = _and(dict.fromkeys(KIND_WORDS.get(kind, _OTHER).source for kind, _ in self.kinds))
        return f"{sources[:1].upper()}{sources[1:]} that match your alerts."


def counted_as(kind: str, stage: str) -> str:
    """The KIND_WORDS key of an item of ``kind`` (an ItemKind value) at ``stage`` (an
    ItemStage value, for written questions)."""
    if kind != "written_question":
        return kind
    if stage == ItemStage.TABLED:
        return "question"
    return "update" if stage == ItemStage.WITHDRAWN else "answer"


@dataclass(frozen=True)
class KindWords:
    """What digests call items of one kind: a new kind of item adds one entry to KIND_WORDS."""

    # "new answer", "new answers": counts in a subject or a section's heading.
    one: str
    many: str
    # "new answer to a written question", "new answers to written questions": the headline.
    headline_one: str
    headline_many: str
    # "UK Parliament written answers": the intro's "… that match your alerts."
    source: str

    def short(self, count: int) -> str:
        return self.one if count == 1 else self.many

    def headline(self, count: int) -> str:
        return self.headline_one if count == 1 else self.headline_many


# Keyed by counted_as: written questions by their stage, other kinds by ItemKind value.
KIND_WORDS: dict[str, KindWords] = {
    "answer": KindWords(
        "new answer",
        "new answers",
        "new answer to a written question",
        "new answers to written questions",
        "UK Parliament written answers",
    ),
    "question": KindWords(
        "new question",
        "new questions",
        "new written question",
        "new written questions",
        "UK Parliament written questions",
    ),
    "update": KindWords(
        "update",
        "updates",
        "update on a written question",
        "updates on written questions",
        "UK Parliament written questions",
    ),
    "statement": KindWords(
        "new statement",
        "new statements",
        "new written statement",
        "new written statements",
        "ministers' written statements",
    ),
    "feed_item": KindWords(
        "new item",
        "new items",
        "new item from your feeds",
        "new items from your feeds",
        "items from the feeds alertd follows",
    ),
}
_OTHER = KindWords("new item", "new items", "new item", "new items", "new items")


def _and(phrases: Iterable[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    listed = list(phrases)
    if len(listed) <= 1:
        return "".join(listed)
    return ", ".join(listed[:-1]) + " and " + listed[-1]


def count_words(kinds: Iterable[tuple[str, int]]) -> str:
    """``46 new answers``; ``3 new answers and 2 new items`` when kinds are mixed."""
    return _and(f"{count} {KIND_WORDS.get(kind, _OTHER).short(count)}" for kind, count in kinds)


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
_PEOPLE_FIELDS = ("member", "asker", "answerer")
_HOUSE_NAMES = {"commons": "House of Commons", "lords": "House of Lords"}
_TYPE_NAMES = {"question": "written questions", "statement": "written statements"}


def ids_named(query: str, fields: tuple[str, ...] = _PEOPLE_FIELDS) -> set[int]:
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
        if field in _PEOPLE_FIELDS and value.isdigit():
            return "name", member_names.get(int(value)) or f"Member {value}"
        if field == "department" and value.isdigit():
            return "name", department_names.get(int(value)) or f"department {value}"
        if field == "house":
            return "name", _HOUSE_NAMES.get(value.lower(), value)
        if field == "type":
            return "name", _TYPE_NAMES.get(value.lower(), value)
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
