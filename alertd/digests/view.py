"""The digest view model: the plain data one digest email shows, built by items, read by render."""

from __future__ import annotations

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

    # A written statement (shown in its own group) rather than an answer or a feed item.
    is_statement: bool = False
    # A statement's minister's role ("Minister for Investment") and attachments' titles.
    role: str = ""
    attachments: tuple[str, ...] = ()

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
    # How many of ``total`` are written statements.
    statements_total: int = 0

    @property
    def answers(self) -> tuple[DigestItem, ...]:
        """The items shown that are not statements (answers, feed items), in order."""
        return tuple(item for item in self.items if not item.is_statement)

    @property
    def statements(self) -> tuple[DigestItem, ...]:
        """The written statements shown, in order: their own group in the section."""
        return tuple(item for item in self.items if item.is_statement)

    @property
    def noun(self) -> str:
        """What its questions are: "answer", "question" (all as tabled) or "update" (a mix)."""
        return _noun(self.answers)

    @property
    def counted(self) -> str:
        """``3 new answers``, ``1 new question``, ``2 updates``, ``… and 1 new statement``."""
        return count_phrase(self.total - self.statements_total, self.statements_total, self.noun)

    @property
    def hidden(self) -> int:
        """How many of the alert's answers this digest does not show."""
        return max(self.total - len(self.items), 0)

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
    def statements_total(self) -> int:
        return sum(section.statements_total for section in self.sections)

    @property
    def noun(self) -> str:
        """What its questions are: "answer", "question" (all as tabled) or "update" (a mix)."""
        return _noun(tuple(item for section in self.sections for item in section.answers))

    @property
    def counted(self) -> str:
        """``3 new answers``, ``1 new question``, ``2 new answers and 1 new statement``."""
        return count_phrase(self.total - self.statements_total, self.statements_total, self.noun)

    @property
    def headline(self) -> str:
        """``3 new answers to written questions``; ``1 new written question``; ``2 updates on
        written questions``; statements named beside: ``… and 1 new written statement``."""
        questions, statements = self.total - self.statements_total, self.statements_total
        parts = []
        if questions or not statements:
            plural = "s" if questions != 1 else ""
            parts.append(
                {
                    "answer": f"{questions} new answer{plural} to written questions",
                    "question": f"{questions} new written question{plural}",
                }.get(self.noun, f"{questions} update{plural} on written questions")
            )
        if statements:
            parts.append(f"{statements} new written statement{'s' if statements != 1 else ''}")
        return " and ".join(parts)


def _noun(items: tuple[DigestItem, ...]) -> str:
    stages = {item.stage for item in items}
    if stages <= {ItemStage.ANSWERED, ItemStage.NOW_ANSWERED}:
        return "answer"
    return "question" if stages == {ItemStage.TABLED} else "update"


def count_phrase(questions: int, statements: int, noun: str = "answer") -> str:
    """How a digest counts its items: ``3 new answers``, ``1 new question``, ``2 updates``
    (``noun``), statements named when there are: ``2 new answers and 1 new statement``."""
    plural = "s" if questions != 1 else ""
    said = f"{questions} {noun}{plural}" if noun == "update" else f"{questions} new {noun}{plural}"
    if not statements:
        return said
    made = f"{statements} new statement{'s' if statements != 1 else ''}"
    return f"{said} and {made}" if questions else made


def describe_alert(label: str, *, member: bool = False) -> str:
    """Why an answer came, in words: ``your alert "schools"`` or ``you follow Jo Bloggs``."""
    if member:
        return f"you follow {label}"
    return f"your alert {label}" if '"' in label else f'your alert "{label}"'
