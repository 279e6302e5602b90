"""Alert matching: analyse a question once, then evaluate parsed queries against it."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TypeVar

from alertd.kinds.kind import Document
from alertd.matching.query import (
    And,
    Field,
    Leaf,
    Node,
    Not,
    Or,
    Phrase,
    Prefix,
    Query,
    Resolver,
    Scope,
    Term,
    iter_tokens,
    parse_query,
    stem_words,
    tokenize,
)

__all__ = [
    "AnalysedDocument",
    "And",
    "Document",
    "Field",
    "Highlights",
    "Leaf",
    "Node",
    "Not",
    "Or",
    "Phrase",
    "Prefix",
    "Query",
    "Resolver",
    "Term",
    "analyse",
    "highlight_terms",
    "match_batch",
    "matches",
    "parse_query",
    "tokenize",
]

K = TypeVar("K")


@dataclass(frozen=True, eq=False)
class AnalysedDocument:
    """A document tokenised and stemmed once, ready for any number of queries.

    Title (the heading), secondary text (a question) and body (an answer) share one token
    stream with a gap between them, so a phrase never spans two of them; the heading holds
    positions below `heading_length`.
    `stream_text` is that stream joined by spaces, with a space at each end: a gap is two
    spaces, so a phrase is there exactly when " word word " is a substring of it.
    """

    document: Document
    stems: frozenset[str]
    heading_stems: frozenset[str]
    tokens: tuple[str, ...]
    heading_tokens: tuple[str, ...]
    stream_text: str
    heading_length: int
    house: str

    @cached_property
    def positions(self) -> Mapping[str, frozenset[int]]:
        """Each token's positions in the stream (the gaps hold none)."""
        positions: dict[str, set[int]] = {}
        for at, token in enumerate(self.stream_text[1:-1].split(" ")):
            if token:
                positions.setdefault(token, set()).add(at)
        return {token: frozenset(at) for token, at in positions.items()}

    def has_stem(self, stem: str, scope: Scope) -> bool:
        return stem in (self.heading_stems if scope == "heading" else self.stems)

    def has_prefix(self, prefix: str, scope: Scope) -> bool:
        tokens = self.heading_tokens if scope == "heading" else self.tokens
        at = bisect_left(tokens, prefix)
        return at < len(tokens) and tokens[at].startswith(prefix)

    def has_phrase(self, words: tuple[str, ...], scope: Scope) -> bool:
        # Tokens hold no spaces, so the spaces around and between the words pin each word
        # to one whole token, consecutive in the stream (a substring search in C).
        needle = " " + " ".join(words) + " "
        if scope != "heading":
            return needle in self.stream_text
        # Within the heading's tokens and the space after them: the first two spaces in a
        # row are the gap after the heading.
        heading_end = self.stream_text.find("  ") + 1
        return self.stream_text.find(needle, 0, heading_end) >= 0

    def has_field(self, name: str, value: int | str) -> bool:
        doc = self.document
        if name == "member":
            return value in doc.member_ids()
        if name == "department":
            return value == doc.department_id
        if name == "type":
            return value == doc.item_type
        if name == "house":
            return value == self.house
        # A role: asker, answerer.
        return (name, value) in doc.members


def analyse(doc: Document) -> AnalysedDocument:
    """Tokenise and stem a document once; reuse the result for every query."""
    heading = tokenize(doc.title)
    stream = [*heading, "", *tokenize(doc.secondary_text), "", *tokenize(doc.body_text)]
    distinct_tokens = set(stream)
    distinct_tokens.discard("")
    distinct = sorted(distinct_tokens)
    stems = stem_words(distinct)
    heading_distinct = sorted(set(heading))
    if heading_distinct:
        stem_of = dict(zip(distinct, stems, strict=True))
        heading_stems = frozenset(map(stem_of.__getitem__, heading_distinct))
    else:
        heading_stems = frozenset()
    return AnalysedDocument(
        document=doc,
        stems=frozenset(stems),
        heading_stems=heading_stems,
        tokens=tuple(distinct),
        heading_tokens=tuple(heading_distinct),
        stream_text=" " + " ".join(stream) + " ",
        heading_length=len(heading),
        house=doc.house.strip().lower(),
    )


def matches(query: Query, doc: Document | AnalysedDocument) -> bool:
    """Whether the query matches the document (analysed here if it is not already)."""
    return query.matches(analyse(doc) if isinstance(doc, Document) else doc)


def match_batch(queries: Mapping[K, Query], docs: Sequence[AnalysedDocument]) -> dict[K, list[int]]:
    """Every query against every document: the indexes each query matched; no key if none."""
    found: dict[K, list[int]] = {}
    for key, query in queries.items():
        indexes = [index for index, doc in enumerate(docs) if query.matches(doc)]
        if indexes:
            found[key] = indexes
    return found


@dataclass(frozen=True)
class Highlights:
    """The positive words (by stem), phrases and prefixes of a query, to mark in an excerpt."""

    stems: frozenset[str]
    phrases: frozenset[tuple[str, ...]]
    prefixes: frozenset[str]

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Sorted, merged (start, end) character ranges of `text` that the query looks for."""
        found = list(iter_tokens(text))
        tokens = [token for _, _, token in found]
        spans = [
            (start, end)
            for (start, end, token), stem in zip(found, stem_words(tokens), strict=True)
            if stem in self.stems or token.startswith(tuple(self.prefixes))
        ]
        for phrase in self.phrases:
            size = len(phrase)
            for first in range(len(tokens) - size + 1):
                if tuple(tokens[first : first + size]) == phrase:
                    spans.append((found[first][0], found[first + size - 1][1]))
        return _merge(spans)


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def highlight_terms(query: Query) -> Highlights:
    """What a renderer may highlight: the query's words, phrases and prefixes not under NOT."""
    leaves = list(query.positive_leaves())
    return Highlights(
        stems=frozenset(leaf.stem for leaf in leaves if isinstance(leaf, Term)),
        phrases=frozenset(leaf.words for leaf in leaves if isinstance(leaf, Phrase)),
        prefixes=frozenset(leaf.prefix for leaf in leaves if isinstance(leaf, Prefix)),
    )
