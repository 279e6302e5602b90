"""The index of stored items: analysed forms kept at insert, full-text candidates, exact checks."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from functools import cached_property
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlmodel import Session, col, select

from alertd.kinds import kind_of
from alertd.kinds.kind import Document
from alertd.matching.query import (
    HOUSES,
    And,
    Field,
    Node,
    Not,
    Or,
    Phrase,
    Prefix,
    Query,
    Scope,
    Term,
    stem_words,
    tokenize,
)
from alertd.models import Item

TABLE = "item_index"
# Stands between question and answer in a stored token stream: no phrase spans it.
_GAP = "|"
_BUILD_BATCH = 500


def outside_models(name: str | None, type_: str, _parents: Any = None) -> bool:
    """Whether Alembic should compare this table or index with the models: the index's
    tables (FTS5's shadow tables too) and indexes are made by its own DDL, not by models.

    An Alembic ``include_name`` hook, inverted: True means leave it out."""
    if name is None or type_ not in ("table", "index"):
        return False
    return name == TABLE or name.startswith((f"{TABLE}_", f"ix_{TABLE}_"))


@dataclass(frozen=True)
class IndexRow:
    """One item's analysed form as stored: token streams, distinct stems, field values.

    ``hidden`` leaves it out of previews and estimates (a holding answer), stored in the
    index's ``is_holding`` column; ``day`` in its ``date_answered`` column (the table's
    columns keep the names migration 0004 gave them)."""

    item_id: int
    heading: str
    body: str
    stems: str
    heading_stems: str
    fields: tuple[str, ...]
    day: date | None
    hidden: bool

    def lexemes(self) -> list[str]:
        """PostgreSQL's terms: every stem, token and field value, tagged by kind and scope."""
        tokens = set(self.heading.split()) | set(self.body.split())
        tokens.discard(_GAP)
        return sorted(
            {
                *(f"s:{stem}" for stem in self.stems.split()),
                *(f"hs:{stem}" for stem in self.heading_stems.split()),
                *(f"t:{token}" for token in tokens),
                *(f"ht:{token}" for token in self.heading.split()),
                *(f"f:{value}" for value in self.fields),
            }
        )


def index_row(item_id: int, doc: Document, day: date | None, hidden: bool) -> IndexRow:
    heading = tokenize(doc.title)
    question, answer = tokenize(doc.secondary_text), tokenize(doc.body_text)
    distinct = sorted({*heading, *question, *answer})
    stem_of = dict(zip(distinct, stem_words(distinct), strict=True))
    # Each Member by role (asker4138) and as member4138, as Field values name them.
    fields = [f"{role}{member_id}" for role, member_id in doc.members]
    fields += [f"member{member_id}" for member_id in doc.member_ids()]
    if doc.department_id is not None:
        fields.append(f"department{doc.department_id}")
    if doc.item_type:
        fields.append(f"type{doc.item_type}")
    house = doc.house.strip().lower()
    if house in HOUSES:
        fields.append(f"house{house}")
    return IndexRow(
        item_id=item_id,
        heading=" ".join(heading),
        body=" ".join([*question, _GAP, *answer]),
        stems=" ".join(sorted(set(stem_of.values()))),
        heading_stems=" ".join(sorted({stem_of[token] for token in heading})),
        fields=tuple(sorted(set(fields))),
        day=day,
        hidden=hidden,
    )


def item_row(item: Item) -> IndexRow:
    """An item's index row, as its kind sees it."""
    assert item.id is not None
    kind = kind_of(item)
    return index_row(item.id, kind.document(item), item.day, not kind.in_history(item))


def index_items(connection: Connection, items: Sequence[Item]) -> None:
    """Index these stored items (in the transaction that stores them: an item is never
    stored without its index row)."""
    insert_rows(connection, [item_row(item) for item in items])


def insert_rows(connection: Connection, rows: Sequence[IndexRow]) -> None:
    if not rows:
        return
    if connection.dialect.name == "postgresql":
        statement = sa.text(
            f"INSERT INTO {TABLE} (item_id, heading, body, stems, heading_stems, fields, "
            "date_answered, is_holding, terms) VALUES (:item_id, :heading, :body, :stems, "
            ":heading_stems, :fields, :date_answered, :is_holding, "
            "array_to_tsvector(CAST(:lexemes AS TEXT[])))"
        )
        params: list[dict[str, Any]] = [
            {**_columns(row), "date_answered": row.day, "lexemes": row.lexemes()} for row in rows
        ]
    else:
        statement = sa.text(
            f"INSERT INTO {TABLE} (rowid, heading, body, stems, heading_stems, fields, "
            "date_answered, is_holding) VALUES (:item_id, :heading, :body, :stems, "
            ":heading_stems, :fields, :date_answered, :is_holding)"
        )
        params = [{**_columns(row), "date_answered": _day(row.day)} for row in rows]
    connection.execute(statement, params)


def _columns(row: IndexRow) -> dict[str, Any]:
    return {
        "item_id": row.item_id,
        "heading": row.heading,
        "body": row.body,
        "stems": row.stems,
        "heading_stems": row.heading_stems,
        "fields": " ".join(row.fields),
        "is_holding": row.hidden,
    }


def _day(day: date | None) -> str | None:
    # SQLite keeps dates as ISO text, which sorts and compares as the dates do.
    return None if day is None else day.isoformat()


def index_missing(connection: Connection) -> int:
    """Index every stored item the index lacks (a migration that makes the index leaves it
    empty: it is filled here, by the code that knows the kinds); how many."""
    key = "rowid" if connection.dialect.name == "sqlite" else "item_id"
    indexed = sa.text(f"SELECT {key} FROM {TABLE}").columns(sa.column(key))
    done, last_id = 0, 0
    with Session(bind=connection) as session:
        while True:
            batch = session.exec(
                select(Item)
                .where(col(Item.id) > last_id, col(Item.id).not_in(indexed.scalar_subquery()))
                .order_by(col(Item.id))
                .limit(_BUILD_BATCH)
            ).all()
            if not batch:
                return done
            index_items(connection, batch)
            session.expunge_all()
            done += len(batch)
            last_id = batch[-1].id or last_id


# --- candidates ------------------------------------------------------------------------------


def _fts_string(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def fts5_filter(node: Node) -> str | None:
    """An FTS5 expression matching every item the node matches (and maybe more); None when
    only a scan can tell (an exclusion, or an OR with one)."""
    if isinstance(node, Term):
        column = "heading_stems" if node.scope == "heading" else "stems"
        return f"{{{column}}} : {_fts_string(node.stem)}"
    if isinstance(node, Phrase | Prefix):
        columns = "heading" if node.scope == "heading" else "heading body"
        if isinstance(node, Prefix):
            return f"{{{columns}}} : {_fts_string(node.prefix)}*"
        return f"{{{columns}}} : {_fts_string(' '.join(node.words))}"
    if isinstance(node, Field):
        return f"{{fields}} : {_fts_string(f'{node.name}{node.value}')}"
    return _combine(node, fts5_filter, " AND ", " OR ")


def tsquery_filter(node: Node) -> str | None:
    """Like fts5_filter, as a PostgreSQL tsquery over the tagged lexemes of IndexRow."""
    if isinstance(node, Term):
        return _lexeme(("hs:" if node.scope == "heading" else "s:") + node.stem)
    tag = "ht:" if getattr(node, "scope", "text") == "heading" else "t:"
    if isinstance(node, Prefix):
        return _lexeme(tag + node.prefix) + ":*"
    if isinstance(node, Phrase):
        return "(" + " & ".join(_lexeme(tag + word) for word in node.words) + ")"
    if isinstance(node, Field):
        return _lexeme(f"f:{node.name}{node.value}")
    return _combine(node, tsquery_filter, " & ", " | ")


def _lexeme(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def _combine(node: Node, part: Callable[[Node], str | None], and_: str, or_: str) -> str | None:
    if isinstance(node, Not):
        return None
    assert isinstance(node, And | Or)
    parts: list[str | None] = [part(child) for child in node.children]
    if isinstance(node, And):
        known = [p for p in parts if p is not None]
        return "(" + and_.join(known) + ")" if known else None
    if any(p is None for p in parts):
        return None
    return "(" + or_.join(p for p in parts if p is not None) + ")"


# --- evaluation ------------------------------------------------------------------------------


@dataclass(eq=False)
class StoredDocument:
    """An item as the exact evaluator sees it, read back from the index: each part is only
    rebuilt when a query asks for it. Stems and fields texts are padded with a space each side."""

    heading: str
    body: str
    stems_text: str
    heading_stems_text: str
    fields_text: str

    @cached_property
    def heading_tokens(self) -> list[str]:
        return self.heading.split()

    @cached_property
    def stream(self) -> list[str]:
        body = ["" if token == _GAP else token for token in self.body.split()]
        return [*self.heading_tokens, "", *body]

    @cached_property
    def tokens(self) -> frozenset[str]:
        return frozenset(token for token in self.stream if token)

    @cached_property
    def positions(self) -> dict[str, set[int]]:
        found: dict[str, set[int]] = {}
        for at, token in enumerate(self.stream):
            if token:
                found.setdefault(token, set()).add(at)
        return found

    def has_stem(self, stem: str, scope: Scope) -> bool:
        # A substring search of the space-joined stems: no set built for a lookup or two.
        stems = self.heading_stems_text if scope == "heading" else self.stems_text
        return f" {stem} " in stems

    def has_prefix(self, prefix: str, scope: Scope) -> bool:
        tokens = self.heading_tokens if scope == "heading" else self.tokens
        return any(token.startswith(prefix) for token in tokens)

    def has_phrase(self, words: tuple[str, ...], scope: Scope) -> bool:
        positions = self.positions
        if not all(word in positions for word in words):
            return False
        first, *rest = (positions[word] for word in words)
        if scope == "heading":
            heading_length = len(self.heading_tokens)
            first = {start for start in first if start < heading_length}
        return any(
            all(start + offset in later for offset, later in enumerate(rest, 1)) for start in first
        )

    def has_field(self, name: str, value: int | str) -> bool:
        # The stored field values name the asker, answerer (both as member), department,
        # house and type exactly as Field values do.
        return f" {name}{value} " in self.fields_text


def _needed_columns(query: Query) -> set[str]:
    """The stored columns the query's leaves read: the rest are not fetched."""
    needed: set[str] = set()
    for node in query.nodes():
        if isinstance(node, Term):
            needed.add("heading_stems" if node.scope == "heading" else "stems")
        elif isinstance(node, Phrase | Prefix):
            needed.update(("heading", "body"))
        elif isinstance(node, Field):
            needed.add("fields")
    return needed


def _candidates(connection: Connection, query: Query, since: date) -> Iterator[Any]:
    postgres = connection.dialect.name == "postgresql"
    where = ["x.is_holding = :false", "x.date_answered >= :since"]
    params: dict[str, Any] = {"since": since if postgres else _day(since), "false": False}
    condition = tsquery_filter(query.root) if postgres else fts5_filter(query.root)
    if condition is not None:
        match = "x.terms @@ CAST(:filter AS TSQUERY)" if postgres else f"{TABLE} MATCH :filter"
        where.append(match)
        params["filter"] = condition
    needed = _needed_columns(query)
    columns = ", ".join(
        f"x.{name}" if name in needed else f"'' AS {name}"
        for name in ("heading", "body", "stems", "heading_stems", "fields")
    )
    key = "x.item_id" if postgres else "x.rowid"
    statement = sa.text(
        f"SELECT {key} AS id, {columns} FROM {TABLE} AS x "
        f"WHERE {' AND '.join(where)} ORDER BY x.date_answered DESC, {key}"
    )
    return iter(connection.execute(statement, params))


def matching_item_ids(connection: Connection, query: Query, since: date) -> list[int]:
    """Ids of the stored items (not holding answers) answered or published since a day that
    the query matches, newest first: candidates from the index, then the exact evaluator."""
    matches = query.matches
    found: list[int] = []
    for row in _candidates(connection, query, since):
        doc = StoredDocument(
            heading=row.heading,
            body=row.body,
            stems_text=f" {row.stems} ",
            heading_stems_text=f" {row.heading_stems} ",
            fields_text=f" {row.fields} ",
        )
        if matches(doc):
            found.append(row.id)
    return found
