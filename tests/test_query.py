"""The alert query parser: syntax, precedence, fields, canonical form and every refusal."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alertd.errors import QueryError, UsageError
from alertd.matching.query import (
    MAX_QUERY_LENGTH,
    MAX_TERMS,
    And,
    Field,
    Not,
    Or,
    Phrase,
    Prefix,
    Query,
    Term,
    make_and,
    parse_canonical,
    parse_query,
    tokenize,
)


def canon(text: str) -> str:
    return parse_query(text).canonical


def refusal(text: str) -> QueryError:
    with pytest.raises(QueryError) as caught:
        parse_query(text)
    return caught.value


# --- tokens ----------------------------------------------------------------------------------


def test_tokenize_lowercases_splits_on_punctuation_and_keeps_digits() -> None:
    assert tokenize("Covid-19: Children's SEND, 2020/21") == [
        "covid",
        "19",
        "children",
        "send",
        "2020",
        "21",
    ]


def test_tokenize_is_unicode_aware() -> None:
    assert tokenize("Café—Ynys Môn") == ["café", "ynys", "môn"]


# --- words, phrases, operators ---------------------------------------------------------------


def test_words_are_lowercased_and_implicitly_anded() -> None:
    query = parse_query("Special  EDUCATIONAL needs")
    assert query.root == And((Term("educational"), Term("needs"), Term("special")))
    assert query.canonical == "educational needs special"


def test_term_carries_its_stem() -> None:
    assert Term("needs").stem == Term("need").stem == "need"
    assert Term("needs") != Term("need")


def test_quoted_phrase_keeps_order_and_words_unstemmed() -> None:
    query = parse_query('"Special Educational Needs"')
    assert query.root == Phrase(("special", "educational", "needs"))
    assert query.canonical == '"special educational needs"'


def test_curly_quotes_make_a_phrase() -> None:
    assert parse_query("\u201cspecial needs\u201d") == parse_query('"special needs"')


def test_punctuated_word_is_a_phrase_of_its_parts() -> None:
    assert parse_query("covid-19").root == Phrase(("covid", "19"))


def test_punctuation_alone_is_ignored() -> None:
    assert canon("nhs & dentistry ,") == "dentistry nhs"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("nhs -dentistry", "nhs -dentistry"),
        ("nhs NOT dentistry", "nhs -dentistry"),
        ('nhs -"dental care"', 'nhs -"dental care"'),
        ("nhs -(dentistry OR dental)", "nhs -(dental OR dentistry)"),
        ("a OR b c", "a OR b c"),
        ("a b OR c", "a b OR c"),
        ("(a OR b) c", "(a OR b) c"),
        ("a AND b OR c", "a b OR c"),
        ("a NOT b OR c", "a -b OR c"),
        ("x-ray scan", '"x ray" scan'),
        ("nhs not dentistry", "dentistry nhs not"),
        ("nhs or dentistry", "dentistry nhs or"),
        ("a --b", "a --b"),
    ],
)
def test_operators_and_canonical_text(text: str, expected: str) -> None:
    assert canon(text) == expected


def test_precedence_not_then_and_then_or() -> None:
    query = parse_query("a b OR c NOT d")
    assert query.root == Or((And((Term("a"), Term("b"))), And((Term("c"), Not(Term("d"))))))


def test_parentheses_group() -> None:
    query = parse_query("(a OR b) c")
    assert query.root == And((Or((Term("a"), Term("b"))), Term("c")))


def test_nested_ands_and_ors_are_flattened() -> None:
    assert parse_query("a (b (c d))").root == And(tuple(Term(w) for w in "abcd"))
    assert parse_query("a OR (b OR (c OR d))").root == Or(tuple(Term(w) for w in "abcd"))


def test_duplicates_collapse() -> None:
    assert parse_query("needs Needs NEEDS").root == Term("needs")
    assert canon("(a b) OR (b a)") == "a b"


def test_prefix_is_lowercased() -> None:
    assert parse_query("Educat*").root == Prefix("educat")


# --- fields ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "node"),
    [
        ("member:4138", Field("member", 4138)),
        ("asker:4138", Field("asker", 4138)),
        ("answerer:4138", Field("answerer", 4138)),
        ("department:60", Field("department", 60)),
        ("house:Commons", Field("house", "commons")),
        ("HOUSE:lords", Field("house", "lords")),
        ("type:statement", Field("type", "statement")),
        ("Type:Question", Field("type", "question")),
        ('member:"04138"', Field("member", 4138)),
        ("heading:Needs", Term("needs", "heading")),
        ('heading:"Special Needs"', Phrase(("special", "needs"), "heading")),
        ("heading:educat*", Prefix("educat", "heading")),
        ("heading:covid-19", Phrase(("covid", "19"), "heading")),
    ],
)
def test_fields(text: str, node: object) -> None:
    assert parse_query(text).root == node


def test_field_canonical_forms() -> None:
    assert canon("member:4138") == "member:4138"
    assert (
        canon('school heading:"Free Meals" House:Lords')
        == 'heading:"free meals" house:lords school'
    )


def test_fields_combine_with_words_and_operators() -> None:
    query = parse_query("(member:4138 OR member:172) -house:lords funding")
    assert query.canonical == "funding (member:172 OR member:4138) -house:lords"


def test_text_with_colons_is_not_a_field() -> None:
    assert canon("covid-19: 10:30") == '"10 30" "covid 19"'
    # A word and a colon with nothing after it, as in a pasted heading, is a word.
    assert (
        canon("Special Educational Needs: Coronavirus") == "coronavirus educational needs special"
    )


class Resolver:
    """A resolver as alertd.queries provides: known names to ids, else a QueryError."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int]] = []

    def __call__(self, field: str, name: str, position: int) -> int:
        self.calls.append((field, name, position))
        known = {"rushanara ali": 4138, "department for education": 60, "smith": 99}
        try:
            return known[name.casefold()]
        except KeyError:
            raise QueryError(f"unknown name {name!r}", position) from None


def test_names_go_through_the_resolver_and_only_ids_are_kept() -> None:
    resolver = Resolver()
    query = parse_query(
        'member:"Rushanara  Ali" department:"Department for Education" answerer:Smith', resolver
    )
    assert query.canonical == "answerer:99 department:60 member:4138"
    assert resolver.calls == [
        ("member", "Rushanara Ali", 7),
        ("department", "Department for Education", 35),
        ("answerer", "Smith", 71),
    ]
    assert parse_query(query.canonical) == query


def test_resolver_refusal_propagates_with_its_position() -> None:
    with pytest.raises(QueryError) as caught:
        parse_query('nhs asker:"Nobody Known"', Resolver())
    assert caught.value.position == 10


def test_ids_do_not_call_the_resolver() -> None:
    resolver = Resolver()
    parse_query("member:4138 house:lords heading:x", resolver)
    assert resolver.calls == []


def test_without_resolver_a_name_is_refused() -> None:
    error = refusal('member:"Rushanara Ali"')
    assert error.position == 7
    assert "names need resolving" in error.message


# --- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "position", "words"),
    [
        ("", 0, "empty query"),
        ("   ", 0, "empty query"),
        ("& , ;", 0, "empty query"),
        ('nhs "dental care', 4, "unbalanced quote"),
        ('heading:"dental care', 8, "unbalanced quote"),
        ("(nhs dentistry", 0, "never closed"),
        ("nhs (a (b) c", 4, "never closed"),
        ("nhs) dentistry", 3, "nothing opens"),
        (") nhs", 0, "nothing opens"),
        ("nhs () x", 4, "empty parentheses"),
        ('nhs ""', 4, "empty phrase"),
        ("-foo", 0, "only excludes"),
        ("NOT foo", 0, "only excludes"),
        ("  -a -b", 2, "only excludes"),
        ("-(a OR b)", 0, "only excludes"),
        ("a OR -b", 5, "each side of OR"),
        ("a OR (-b -c)", 5, "each side of OR"),
        ("colour:red", 0, "unknown field 'colour'"),
        ("nhs Colour:red", 4, "unknown field 'colour'"),
        ("OR foo", 0, "OR needs something on both sides"),
        ("foo OR", 4, "OR needs something on both sides"),
        ("foo OR OR bar", 4, "OR needs something on both sides"),
        ("(foo OR) bar", 5, "OR needs something on both sides"),
        ("AND foo", 0, "AND needs something on both sides"),
        ("foo AND", 4, "AND needs something on both sides"),
        ("foo NOT", 4, "NOT needs something after it"),
        ("foo NOT )", 4, "NOT needs something after it"),
        ("house:wales", 6, "commons or lords"),
        ("nhs type:answer", 9, "type: must be question or statement"),
        ("type:", 5, "needs a value"),
        ("house:", 6, "needs a value"),
        ("nhs member: 4138", 11, "needs a value"),
        ("member:0", 7, "needs an id"),
        ("department:1234567890", 11, "needs an id"),
        ("department:health", 11, "names need resolving"),
        ("heading:&", 8, "needs a word or a phrase"),
        ('heading:""', 8, "needs a word or a phrase"),
        ("ed*", 0, "at least 3 letters"),
        ("nhs *", 4, "at least 3 letters"),
        ("edu*cat", 3, "can only end a word"),
        ("covid-19*", 0, "a single word"),
    ],
)
def test_refusals_point_at_the_fault(text: str, position: int, words: str) -> None:
    error = refusal(text)
    assert error.position == position
    assert words in error.message
    assert isinstance(error, UsageError)


def test_length_limit() -> None:
    longest = '"' + ("word " * 100)[: MAX_QUERY_LENGTH - 2] + '"'
    assert len(longest) == MAX_QUERY_LENGTH
    parse_query(longest)
    error = refusal(longest + "s")
    assert error.position == MAX_QUERY_LENGTH
    assert "too long" in error.message


def test_term_limit() -> None:
    words = [f"w{i}" for i in range(MAX_TERMS + 1)]
    root = parse_query(" ".join(words[:MAX_TERMS])).root
    assert isinstance(root, And) and len(root.children) == MAX_TERMS
    text = " ".join(words)
    error = refusal(text)
    assert error.position == text.index(words[MAX_TERMS])
    assert "too many terms" in error.message


def test_phrases_and_fields_count_as_terms() -> None:
    parts = ['"a b"', "member:1", "educat*"] * 11
    error = refusal(" ".join(parts))
    assert error.position == len(" ".join(parts[:MAX_TERMS])) + 1


def test_nesting_limit() -> None:
    parse_query("(" * 16 + "a" + ")" * 16)
    assert refusal("(" * 17 + "a" + ")" * 17).position == 16
    assert "nested too deeply" in refusal("a " + "-" * 17 + "b").message


# --- canonical form --------------------------------------------------------------------------


def test_equivalent_alerts_share_one_canonical_form() -> None:
    assert canon("Special  Educational needs") == canon("needs special educational")
    assert canon("(b OR a) -c d") == canon("d NOT c (a OR b)")
    assert canon("member:4138 house:commons") == canon("HOUSE:Commons AND member:4138")
    assert canon("trade type:statement") == canon("TYPE:Statement AND trade")


def test_query_equality_follows_the_tree() -> None:
    assert parse_query("a b") == Query(make_and([Term("b"), Term("a")]))
    assert str(parse_query("B a")) == "a b"


@pytest.mark.parametrize(
    "text",
    [
        '"special educational needs" -covid',
        "(member:4138 OR asker:172) heading:school* -(a OR b c)",
        "a OR b c OR (d e)",
        "x AND (y OR z OR (w OR v))",
        "a --b",
        "nhs -(x -(y z))",
    ],
)
def test_canonical_round_trips(text: str) -> None:
    query = parse_query(text)
    again = parse_query(query.canonical)
    assert again == query
    assert again.canonical == query.canonical


def test_introspection_for_the_index_engine() -> None:
    query = parse_query('need -covid (heading:"free meals" OR educat*) member:4138')
    assert set(query.positive_leaves()) == {
        Term("need"),
        Phrase(("free", "meals"), "heading"),
        Prefix("educat"),
        Field("member", 4138),
    }
    assert Not(Term("covid")) in set(query.nodes())
    assert query.root.positive


# --- properties ------------------------------------------------------------------------------

WORDS = ["school", "Schools", "funding", "need", "NEEDS", "special", "or", "not", "Covid-19"]
LEAVES = st.one_of(
    st.sampled_from(WORDS),
    st.lists(st.sampled_from(WORDS), min_size=1, max_size=3).map(lambda w: '"' + " ".join(w) + '"'),
    st.sampled_from(
        [
            "educat*",
            "member:4138",
            "asker:172",
            "house:Lords",
            "heading:need",
            'heading:"a b"',
            "type:statement",
            "TYPE:Question",
        ]
    ),
)


def _combine(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    pairs = st.lists(children, min_size=2, max_size=3)
    return st.one_of(
        pairs.map(" ".join),
        pairs.map(" AND ".join),
        pairs.map(lambda parts: "(" + " OR ".join(parts) + ")"),
        st.tuples(children, children).map(lambda p: f"{p[0]} -({p[1]})"),
        st.tuples(children, children).map(lambda p: f"{p[0]}  NOT  {p[1]}"),
    )


QUERIES = st.recursive(LEAVES, _combine, max_leaves=8)


@given(QUERIES)
def test_property_canonical_round_trips(text: str) -> None:
    query = parse_query(text)
    again = parse_query(query.canonical)
    assert again == query
    assert again.canonical == query.canonical


@given(QUERIES)
def test_property_parse_canonical_is_parse_query(text: str) -> None:
    query = parse_query(text)
    assert parse_canonical(query.canonical) == query
    assert parse_canonical(query.canonical).canonical == query.canonical


PLAIN_AND = st.lists(
    st.tuples(
        st.sampled_from(["", "-"]),
        st.sampled_from(
            [
                "school",
                "need",
                "ed*",
                "educat*",
                "member:4138",
                "house:lords",
                "a",
                '"social care"',
                '"care"',
                "heading:school",
                'heading:"social care"',
                "heading:educat*",
                "heading:ed*",
                "type:statement",
                "type:question",
            ]
        ),
    ).map("".join),
    min_size=1,
    max_size=5,
).map(" ".join)
# Plain ANDs, or ORs of them (canonical or not: the fast path must refuse what it cannot order).
PLAIN_ATOMS = st.lists(PLAIN_AND, min_size=1, max_size=3).map(" OR ".join)


@given(PLAIN_ATOMS)
def test_property_parse_canonical_of_any_plain_text_is_parse_query(text: str) -> None:
    try:
        expected = parse_query(text)
    except QueryError as exc:
        with pytest.raises(QueryError, match=re.escape(str(exc))):
            parse_canonical(text)
        return
    assert parse_canonical(text) == expected


@given(
    st.lists(LEAVES, min_size=2, max_size=6).flatmap(
        lambda xs: st.tuples(st.just(xs), st.permutations(xs))
    )
)
def test_property_and_is_order_insensitive(pair: tuple[list[str], list[str]]) -> None:
    first, second = pair
    assert canon(" ".join(first)) == canon(" AND ".join(second))


@pytest.mark.slow
@given(
    st.one_of(
        st.text(max_size=80),
        st.text(
            alphabet=list('ab xy()"-*:ORANDNOTheadingmemberhouse\u201c\u00e9\u0130'), max_size=80
        ),
    )
)
def test_property_any_text_is_refused_cleanly_or_round_trips(text: str) -> None:
    try:
        query = parse_query(text)
    except QueryError as error:
        assert error.position is not None and 0 <= error.position <= len(text)
        return
    assert parse_query(query.canonical) == query
