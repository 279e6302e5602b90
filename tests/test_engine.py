"""The match engine gives exactly what the straightforward evaluator gives on recorded questions."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alertd.errors import QueryError
from alertd.matching.analysis import (
    And,
    Document,
    Field,
    Node,
    Not,
    Or,
    Phrase,
    Prefix,
    Query,
    Term,
    analyse,
    match_batch,
    parse_query,
    tokenize,
)
from alertd.matching.engine import MatchEngine, _Compiler, indexes_of
from alertd.matching.query import make_and, make_or, parse_canonical, plain_parts

from standin_api import load_2021_answered, load_2021_statements


def _members(**by_role: int | None) -> tuple[tuple[str, int], ...]:
    """A Document's (role, Member id) pairs, leaving out the roles nobody had."""
    return tuple((role, member_id) for role, member_id in by_role.items() if member_id is not None)


RECORDS = load_2021_answered()
STATEMENTS = load_2021_statements()
DOCS = [
    analyse(
        Document(
            title=record["heading"] or "",
            secondary_text=record["questionText"] or "",
            body_text=record["answerText"] or "",
            house=record["house"],
            members=_members(asker=record["askingMemberId"], answerer=record["answeringMemberId"]),
            department_id=record["answeringBodyId"],
            # Every tenth as a kind type: has no name for (a feed item).
            item_type="" if index % 10 == 9 else "question",
        )
    )
    for index, record in enumerate(RECORDS)
] + [
    # The written statements of the same day: type:statement, the minister as answerer.
    analyse(
        Document(
            title=record["title"],
            secondary_text="",
            body_text=record["text"],
            house=record["house"],
            members=_members(answerer=record["memberId"]),
            department_id=record["answeringBodyId"],
            item_type="statement",
        )
    )
    for record in STATEMENTS
]


def _document_frequency(tokens: Callable[[int], tuple[str, ...]]) -> list[str]:
    counts = Counter(token for index in range(len(DOCS)) for token in tokens(index))
    return [token for token, _ in counts.most_common()]


ALL_WORDS = sorted(_document_frequency(lambda index: DOCS[index].tokens))
COMMON_WORDS = _document_frequency(lambda index: DOCS[index].tokens)[:150]
HEADING_WORDS = _document_frequency(lambda index: DOCS[index].heading_tokens)


def _ngrams(text: str) -> list[tuple[str, ...]]:
    words = tokenize(text)
    return [tuple(words[at : at + size]) for size in (2, 3) for at in range(len(words) - size + 1)]


TEXT_PHRASES = sorted({gram for r in RECORDS for gram in _ngrams(r["questionText"] or "")})
HEADING_PHRASES = sorted({gram for r in RECORDS for gram in _ngrams(r["heading"] or "")})
MEMBERS = sorted(
    {r[name] for r in RECORDS for name in ("askingMemberId", "answeringMemberId")} - {None}
)
DEPARTMENTS = sorted({r["answeringBodyId"] for r in RECORDS} - {None})

WORDS = st.one_of(st.sampled_from(COMMON_WORDS), st.sampled_from(ALL_WORDS))
TERMS = st.one_of(
    WORDS.map(Term), st.sampled_from(HEADING_WORDS).map(lambda word: Term(word, "heading"))
)
PHRASES = st.one_of(
    st.sampled_from(TEXT_PHRASES).map(Phrase),
    st.sampled_from(HEADING_PHRASES).map(lambda words: Phrase(words, "heading")),
    WORDS.map(lambda word: Phrase((word,))),
    st.sampled_from(HEADING_WORDS).map(lambda word: Phrase((word,), "heading")),
)
PREFIXES = st.builds(
    lambda word, size, heading: Prefix(word[:size], "heading" if heading else "text"),
    st.sampled_from([word for word in ALL_WORDS if len(word) >= 3]),
    st.integers(3, 8),
    st.booleans(),
)
FIELDS = st.one_of(
    st.builds(
        Field,
        st.sampled_from(["member", "asker", "answerer"]),
        st.one_of(st.sampled_from(MEMBERS), st.just(999_999)),
    ),
    st.builds(Field, st.just("department"), st.sampled_from(DEPARTMENTS)),
    st.builds(Field, st.just("house"), st.sampled_from(["commons", "lords"])),
    st.builds(Field, st.just("type"), st.sampled_from(["question", "statement"])),
)
LEAVES: st.SearchStrategy[Node] = st.one_of(TERMS, PHRASES, PREFIXES, FIELDS)


def _extend(children: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
    some = st.lists(children, min_size=1, max_size=3)
    return st.one_of(
        some.map(make_and),
        some.map(make_or),
        some.map(lambda nodes: And(tuple(nodes))),  # not normalised: nested, single child
        some.map(lambda nodes: Or(tuple(nodes))),
        children.map(Not),
    )


NODES = st.recursive(LEAVES, _extend, max_leaves=8)
QUERIES = st.lists(NODES.map(Query), min_size=1, max_size=10)
BATCHES = st.lists(st.integers(0, len(DOCS) - 1), min_size=0, max_size=40)


@pytest.mark.slow
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(QUERIES, BATCHES)
def test_property_engine_matches_exactly_like_match_batch(
    queries: list[Query], batch: list[int]
) -> None:
    docs = [DOCS[index] for index in batch]
    keyed = dict(enumerate(queries))
    assert MatchEngine(keyed).match(docs) == match_batch(keyed, docs)


@settings(max_examples=50, deadline=None)
@given(QUERIES, st.data())
def test_property_add_and_remove_keep_results_exact(
    queries: list[Query], data: st.DataObject
) -> None:
    keyed = dict(enumerate(queries))
    engine = MatchEngine(keyed)
    removed = data.draw(st.sets(st.sampled_from(sorted(keyed))))
    for key in removed:
        engine.remove(key)
    replacement = data.draw(NODES.map(Query))
    engine.add(0, replacement)
    kept = {key: query for key, query in keyed.items() if key not in removed} | {0: replacement}
    assert len(engine) == len(kept)
    assert engine.match(DOCS[:60]) == match_batch(kept, DOCS[:60])


# Shapes the engine files apart: "a b" (two required keys), "a -b" (one key without another),
# a phrase with a word, as the alerts of a large population mostly are.
PAIR_SHAPES = st.builds(
    lambda shape, first, second, phrase: [
        f"{first} {second}",
        f"{first} -{second}",
        f"{first} {second} {first}s",
        '"' + " ".join(phrase) + '" ' + first,
        f"heading:{first} -{second}",
    ][shape],
    st.integers(0, 4),
    st.sampled_from(COMMON_WORDS[10:60]),
    st.sampled_from(COMMON_WORDS[10:150]),
    st.sampled_from(TEXT_PHRASES),
)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(PAIR_SHAPES, min_size=1, max_size=30),
    st.lists(st.integers(0, len(DOCS) - 1), min_size=1, max_size=40),
    st.data(),
)
def test_property_groups_hold_each_matching_query_once(
    texts: list[str], batch: list[int], data: st.DataObject
) -> None:
    keyed = {text: parse_query(text) for text in texts}
    engine = MatchEngine(keyed)
    for text in data.draw(st.sets(st.sampled_from(sorted(keyed)))):
        engine.remove(text)
        del keyed[text]
    docs = [DOCS[index] for index in batch]
    expected = match_batch(keyed, docs)
    assert engine.match(docs) == expected
    each, shared = engine.match_groups(docs)
    grouped = [*((mask, key) for key, mask in each.items())]
    grouped += [(mask, key) for mask, keys in shared for key in keys]
    assert all(mask for mask, _ in grouped)
    assert sorted(key for _, key in grouped) == sorted(expected)
    assert {key: indexes_of(mask) for mask, key in grouped} == expected


QUERY_TEXTS = [
    "coronavirus",
    "vaccine",
    "vaccin*",
    "heading:coronavirus",
    '"test and trace"',
    'heading:"universal credit"',
    "schools funding",
    "covid OR coronavirus",
    "coronavirus -vaccine",
    "(nhs OR health) -coronavirus",
    "house:lords",
    "house:commons department:17",
    "department:17 -heading:coronavirus",
    "pension* house:lords",
    "asker:4797",
    "answerer:4527 OR answerer:4099",
    '"social care" -"test and trace"',
    "brexit OR (trade -eu)",
    "zebra",
    "member:999999",
]


def test_every_recorded_question_against_typical_queries() -> None:
    queries = {text: parse_query(text) for text in QUERY_TEXTS}
    found = MatchEngine(queries).match(DOCS)
    assert found == match_batch(queries, DOCS)
    assert "coronavirus" in found and "zebra" not in found and "member:999999" not in found


def test_only_queries_anchored_in_the_batch_are_candidates() -> None:
    queries = {
        "rare first": parse_query("ask zebra"),  # filed under zebra, not the ubiquitous "ask"
        "absent member": parse_query("member:999999"),
        "absent phrase": parse_query('"zebra crossing" ask'),
        "absent prefix": parse_query("zebr* OR heading:quagg*"),
        "present": parse_query("ask"),
        "exclusion only": Query(Not(Term("ask"))),
    }
    engine = MatchEngine(queries)
    assert sorted(engine.candidates(DOCS)) == ["exclusion only", "present"]
    assert engine.candidates([]) == []
    found = engine.match(DOCS)
    assert found == match_batch(queries, DOCS)
    assert sorted(found) == ["exclusion only", "present"]


def test_empty_engine_and_empty_batch() -> None:
    assert MatchEngine[str]().match(DOCS) == {}
    assert MatchEngine({"q": parse_query("coronavirus")}).match([]) == {}


def test_add_replaces_and_remove_forgets() -> None:
    engine = MatchEngine({"q": parse_query("coronavirus"), "not": Query(Not(Term("zebra")))})
    engine.add("q", parse_query("zebra"))
    assert len(engine) == 2 and engine.match(DOCS) == {"not": list(range(len(DOCS)))}
    engine.remove("q")
    engine.remove("not")
    assert "q" not in engine and len(engine) == 0 and engine.candidates(DOCS) == []
    with pytest.raises(KeyError):
        engine.remove("q")


def test_degenerate_trees_match_like_the_evaluator() -> None:
    queries = {
        "empty or": Query(Or(())),
        "empty and": Query(And(())),
        "double negation": Query(Not(Not(Term("coronavirus")))),
        "unknown field": Query(Field("colour", "red")),
        "short prefix": Query(Prefix("a")),
        "heading prefix": Query(Prefix("corona", "heading")),
    }
    assert MatchEngine(queries).match(DOCS) == match_batch(queries, DOCS)


@pytest.mark.parametrize("scope", ["text", "heading"])
def test_many_prefixes_against_a_small_batch(scope: Literal["text", "heading"]) -> None:
    """More prefixes than the batch has tokens: found by cutting the batch's tokens instead."""
    prefixes = sorted({word[:size] for word in ALL_WORDS[::7] for size in (3, 5) if len(word) >= 3})
    queries = {prefix: Query(Prefix(prefix, scope)) for prefix in prefixes}
    for batch in (DOCS[:1], DOCS[5:8]):
        found = MatchEngine(queries).match(batch)
        assert found == match_batch(queries, batch) and found


def _described(plan: object) -> object:
    """A plan as nested tuples of its class and fields (plans compare by identity)."""
    if isinstance(plan, tuple):
        return tuple(_described(part) for part in plan)
    slots = getattr(type(plan), "__slots__", None)
    if slots is None:
        return plan
    return (type(plan).__name__, *(_described(getattr(plan, name)) for name in sorted(slots)))


@given(NODES.map(Query))
def test_property_compile_canonical_is_compile_of_the_parsed_canonical(query: Query) -> None:
    """The daemon's fast path from canonical text gives the very plan of the parsed query."""
    try:
        parsed = parse_canonical(query.canonical)
    except QueryError:
        with pytest.raises(QueryError):
            _Compiler().compile_canonical(query.canonical)
        return
    fast, slow = _Compiler().compile_canonical(query.canonical), _Compiler().compile(parsed.root)
    assert _described(fast.plan) == _described(slow.plan)
    assert (fast.anchors, fast.share) == (slow.anchors, slow.share)


def test_shapes_of_the_matching_population_take_the_fast_path() -> None:
    for canonical in [
        "school",
        "-covid school",
        '"social care" health',
        'heading:"universal credit" member:4138',
        "education OR healthcare",
        "nhs OR school -covid",
        "educat* house:lords",
    ]:
        assert plain_parts(canonical) is not None, canonical
    for canonical in ["(nhs OR health) -covid", "café", "a OR a", "school OR nhs"]:
        assert plain_parts(canonical) is None, canonical


def test_type_narrows_to_questions_or_statements_and_without_it_both_match() -> None:
    statements = {index for index, doc in enumerate(DOCS) if doc.document.item_type == "statement"}
    feed_like = {index for index, doc in enumerate(DOCS) if not doc.document.item_type}
    queries = {
        "both": parse_query('"hong kong"'),
        "statements": parse_query('"hong kong" type:statement'),
        "questions": parse_query('"hong kong" type:question'),
        "not statements": parse_query('"hong kong" -type:statement'),
        "every statement": parse_query("type:statement"),
    }
    found = MatchEngine(queries).match(DOCS)
    assert found == match_batch(queries, DOCS)
    both = set(found["both"])
    assert both & statements and both - statements
    assert set(found["statements"]) == both & statements
    assert set(found["questions"]) == both - statements - feed_like
    assert set(found["not statements"]) == both - statements
    assert set(found["every statement"]) == statements and len(statements) == 10
