"""Digest text: excerpts around the first match with marks, wrapping at 72 columns, dates."""

from __future__ import annotations

import functools
import re
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date

from markupsafe import Markup, escape

from alertd.matching import Highlights

Span = tuple[int, int]
ELLIPSIS = "…"
# Where the first match sits in its window: about a quarter in, so a reader sees its lead-in.
LEAD_IN_SHARE = 4
_SENTENCE_END = re.compile(r"[.!?:;]\s")
TEXT_WIDTH = 72


@dataclass(frozen=True)
class Marked:
    """A text and the (start, end) character ranges of it to highlight."""

    text: str
    spans: tuple[Span, ...] = ()

    def segments(self) -> list[tuple[str, bool]]:
        """The text in order, as (piece, highlighted) pairs."""
        pieces: list[tuple[str, bool]] = []
        at = 0
        for start, end in self.spans:
            if start > at:
                pieces.append((self.text[at:start], False))
            pieces.append((self.text[start:end], True))
            at = end
        if at < len(self.text):
            pieces.append((self.text[at:], False))
        return pieces

    def html(self) -> Markup:
        """Escaped HTML with each highlighted range in ``<mark>``."""
        return Markup("").join(
            Markup("<mark>%s</mark>") % piece if hit else escape(piece)
            for piece, hit in self.segments()
        )

    def starred(self) -> str:
        """Plain text with each highlighted range between asterisks: ``*word*``."""
        return "".join(f"*{piece}*" if hit else piece for piece, hit in self.segments())


def flatten(text: str) -> str:
    """The text on one line: runs of whitespace (line breaks too) become one space."""
    return " ".join(text.split())


def merge_highlights(highlights: Iterable[Highlights]) -> Highlights:
    """One Highlights holding the words, phrases and prefixes of several queries."""
    stems: set[str] = set()
    phrases: set[tuple[str, ...]] = set()
    prefixes: set[str] = set()
    for one in highlights:
        stems |= one.stems
        phrases |= one.phrases
        prefixes |= one.prefixes
    return Highlights(frozenset(stems), frozenset(phrases), frozenset(prefixes))


def mark(text: str, highlights: Highlights | None) -> Marked:
    """The whole text (flattened) with every range the query looks for marked."""
    flat = flatten(text)
    spans = tuple(highlights.spans(flat)) if highlights is not None and flat else ()
    return Marked(flat, spans)


def excerpt_around(text: str, highlights: Highlights | None, limit: int) -> Marked:
    """About ``limit`` characters of the text around its first match, cut at word boundaries.

    With no match (a Member alert, or a match in the heading only) it is the start of the
    text. A cut is shown with an ellipsis; marks outside the window are dropped.
    """
    whole = mark(text, highlights)
    flat = whole.text
    if len(flat) <= limit:
        return whole
    start = _window_start(flat, whole.spans[0][0], limit) if whole.spans else 0
    if len(flat) - start < limit:
        # A match near the end: the window is the end of the text, not a short tail.
        start = _word_start(flat, len(flat) - limit)
    end = _word_end(flat, start + limit)
    if whole.spans:
        # A long phrase at the edge of the window is shown whole.
        end = max(end, min(whole.spans[0][1], len(flat)))
    body = flat[start:end].rstrip(" ,.;:")
    prefix = ELLIPSIS + " " if start > 0 else ""
    suffix = " " + ELLIPSIS if end < len(flat) else ""
    shift = len(prefix) - start
    spans = tuple(
        (s + shift, min(e, start + len(body)) + shift)
        for s, e in whole.spans
        if s >= start and s < start + len(body)
    )
    return Marked(prefix + body + suffix, spans)


def _window_start(flat: str, first: int, limit: int) -> int:
    """Where a window showing ``first`` begins: a sentence start if one is near, else a word."""
    earliest = max(0, first - limit // 2)
    lead = max(0, first - limit // LEAD_IN_SHARE)
    if lead == 0:
        return 0
    sentences = [m.end() for m in _SENTENCE_END.finditer(flat, earliest, first)]
    if sentences:
        return sentences[-1]
    space = flat.find(" ", lead, first)
    return space + 1 if space != -1 else first


def _word_start(flat: str, at: int) -> int:
    """The start of the first whole word at or after ``at``."""
    if at <= 0:
        return 0
    if flat[at - 1] == " ":
        return at
    space = flat.find(" ", at)
    return space + 1 if space != -1 else at


def _word_end(flat: str, limit_at: int) -> int:
    """The end of the last whole word before ``limit_at``."""
    if limit_at >= len(flat):
        return len(flat)
    space = flat.rfind(" ", 0, limit_at + 1)
    return space if space > 0 else limit_at


@functools.lru_cache(maxsize=4096)
def long_date(value: date | None) -> str:
    """``1 February 2021``; empty for no date."""
    return "" if value is None else f"{value.day} {value:%B %Y}"


# Digests repeat the same answers for everyone following the same topic; these filters are
# pure and were the costliest part of rendering, so their results are kept (bounded).
_MEMO_ENTRIES = 8192


def wrap_text(text: str, width: int = TEXT_WIDTH, indent: str = "", first: str = "") -> str:
    """Each paragraph (line) of the text wrapped at ``width`` columns, never breaking a word.

    A word longer than the width (a URL) stays whole on its own line.
    """
    return _wrap(str(text), int(width), str(indent), str(first))


@functools.lru_cache(maxsize=_MEMO_ENTRIES)
def _wrap(text: str, width: int, indent: str, first: str) -> str:
    lines: list[str] = []
    for paragraph in text.split("\n"):
        if not paragraph.strip():
            lines.append("")
            continue
        lines.extend(
            textwrap.wrap(
                paragraph,
                width=width,
                initial_indent=first or indent,
                subsequent_indent=indent,
                break_long_words=False,
                break_on_hyphens=False,
            )
        )
    return "\n".join(lines)


def _spans(value: Iterable[Sequence[int]]) -> tuple[Span, ...]:
    return tuple((int(start), int(end)) for start, end in value)


def highlight_html(text: str, spans: Iterable[Sequence[int]] = ()) -> Markup:
    """The text escaped, with each range in ``<mark>``."""
    return _html(str(text), _spans(spans))


def highlight_text(text: str, spans: Iterable[Sequence[int]] = ()) -> str:
    """The text with each range between asterisks."""
    return _starred(str(text), _spans(spans))


@functools.lru_cache(maxsize=_MEMO_ENTRIES)
def _html(text: str, spans: tuple[Span, ...]) -> Markup:
    return Marked(text, spans).html()


@functools.lru_cache(maxsize=_MEMO_ENTRIES)
def _starred(text: str, spans: tuple[Span, ...]) -> str:
    return Marked(text, spans).starred()
