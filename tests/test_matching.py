"""Matching queries against analysed questions: stems, phrases, operators, fields, batches."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alertd.matching.analysis import (
    AnalysedDocument,
    Document,
    analyse,
    highlight_terms,
    match_batch,
    matches,
    parse_query,
    tokenize,
)

SEN = Document(
    title="Special Educational Needs: Coronavirus",
    secondary_text=(
        "To ask the Secretary of State for Education, what steps he is taking to support "
        "children with special educational needs during the covid-19 outbreak."
    ),
    body_text=(
        "The Department has published guidance for local authorities on children's services. "
        "Schools remain open for vulnerable pupils."
    ),
    house="Commons",
    members=(("asker", 4138), ("answerer", 4099)),
    department_id=60,
)
DENTISTRY = Document(
    title="Dental Services: Rural Areas",
    secondary_text=(
        "To ask His Majesty's Government what steps they are taking to improve access to NHS "
        "dentistry in rural areas."
    ),
    body_text="NHS England is responsible for commissioning dental services in Ynys Môn.",
    house="Lords",
    members=(("asker", 3743), ("answerer", 4271)),
    department_id=17,
)
UNANSWERED = Document(
    title="Schools: Finance",
    secondary_text="To ask the Secretary of State for Education, what funding schools need.",
    body_text="",
    house="Commons",
)
DOCS = [analyse(SEN), analyse(DENTISTRY), analyse(UNANSWERED)]


def found(text: str) -> list[int]:
    """Indexes into DOCS that the query matches."""
    query = parse_query(text)
    return [index for index, doc in enumerate(DOCS) if query.matches(doc)]


def test_analyse_precomputes_stems_tokens_and_positions() -> None:
    doc = DOCS[0]
    assert isinstance(doc, AnalysedDocument)
    assert {"need", "educ", "coronavirus", "children"} <= doc.stems
    assert doc.heading_stems == {"special", "educ", "need", "coronavirus"}
    assert doc.tokens == tuple(sorted(doc.tokens)) and "educational" in doc.tokens
    assert doc.heading_length == 4
    assert doc.positions["special"] == {0, 5 + tokenize(SEN.secondary_text).index("special")}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("need", [0, 2]),
        ("needs", [0, 2]),
        ("NEEDED", [0, 2]),
        ("supporting children", [0]),
        ("school", [0, 2]),
        ("dental services", [1]),
        ("covid", [0]),
        ("covid-19", [0]),
        ("19", [0]),
        ("môn", [1]),
        ("Mon", []),
        ("children", [0]),
        ("children's", [0]),
        ("nhs dentistry rural", [1]),
        ("nhs education", []),
    ],
)
def test_words_are_stemmed_case_insensitive_and_all_required(
    text: str, expected: list[int]
) -> None:
    assert found(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('"special educational needs"', [0]),
        ('"Special Educational Needs"', [0]),
        ('"special educational need"', []),  # phrases are not stemmed
        ('"educational special needs"', []),  # order matters
        ('"special needs"', []),  # consecutive
        ('"covid 19 outbreak"', [0]),
        ('"children\'s services"', [0]),
        ('"children services"', [0]),  # the possessive is dropped on both sides
        ('"needs"', [0]),
        ('"need"', [2]),
        ('"coronavirus to ask"', []),  # heading | question boundary
        ('"outbreak the department"', []),  # question | answer boundary
        ('"coronavirus"', [0]),
        ('"ask the secretary of state for education"', [0, 2]),
    ],
)
def test_phrases(text: str, expected: list[int]) -> None:
    assert found(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("steps -dentistry", [0]),
        ("steps -rural", [0]),
        ("steps NOT covid", [1]),
        ('steps -"special needs"', [0, 1]),
        ("education -(covid OR funding)", []),
        ("education -(covid funding)", [0, 2]),
        ("dentistry OR covid", [0, 1]),
        ("dentistry OR special rural", [1]),
        ("(dentistry OR special) rural", [1]),
        ("(dentistry OR special) covid", [0]),
        ("dentistry OR special covid", [0, 1]),
        ("need NOT covid OR dental", [1, 2]),
        ("need AND covid", [0]),
        ("steps or dentistry", []),  # lower-case "or" is a word the texts lack
        ("steps --covid", [0]),
    ],
)
def test_exclusion_or_not_and_parentheses(text: str, expected: list[int]) -> None:
    assert found(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("educat*", [0, 2]),
        ("EDUCAT*", [0, 2]),
        ("dentis*", [1]),
        ("childr*", [0]),
        ("educationally*", []),
        ("heading:dent*", [1]),
        ("heading:educat*", [0]),
        ("heading:fin*", [2]),
        ("fin* -heading:fin*", []),
    ],
)
def test_prefixes(text: str, expected: list[int]) -> None:
    assert found(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("member:4138", [0]),
        ("member:4099", [0]),
        ("asker:4138", [0]),
        ("asker:4099", []),
        ("answerer:4099", [0]),
        ("answerer:4138", []),
        ("member:4271 OR member:4138", [0, 1]),
        ("department:60", [0]),
        ("department:17", [1]),
        ("house:commons", [0, 2]),
        ("house:lords", [1]),
        ("house:commons -department:60", [2]),
        ("heading:coronavirus", [0]),
        ("heading:outbreak", []),
        ("heading:need", [0]),
        ('heading:"educational needs"', [0]),
        ('heading:"covid 19"', []),
        ('heading:"rural areas"', [1]),
        ("rural -heading:rural", []),
        ("steps department:17", [1]),
    ],
)
def test_fields(text: str, expected: list[int]) -> None:
    assert found(text) == expected


def test_a_name_resolved_to_an_id_matches_like_the_id() -> None:
    def resolve(field: str, name: str, position: int) -> int:
        return {"Rushanara Ali": 4138, "Department for Education": 60}[name]

    query = parse_query('member:"Rushanara Ali" department:"Department for Education"', resolve)
    assert query == parse_query("department:60 member:4138")
    assert query.matches(DOCS[0])


def test_matches_accepts_a_plain_or_analysed_document() -> None:
    query = parse_query('"special educational needs" member:4138')
    assert matches(query, SEN)
    assert matches(query, DOCS[0])
    assert not matches(query, DENTISTRY)


def test_equivalent_queries_match_alike() -> None:
    a = parse_query("Special  Educational needs")
    b = parse_query("needs special educational")
    assert a.canonical == b.canonical
    assert [a.matches(doc) for doc in DOCS] == [b.matches(doc) for doc in DOCS] == [1, 0, 0]


def test_match_batch_every_query_every_document() -> None:
    queries = {
        "sen": parse_query('"special educational needs"'),
        "steps": parse_query("steps"),
        "none": parse_query("zebra"),
        7: parse_query("house:commons"),
    }
    assert match_batch(queries, DOCS) == {"sen": [0], "steps": [0, 1], 7: [0, 2]}
    assert match_batch(queries, []) == {}
    assert match_batch({}, DOCS) == {}


def test_highlight_terms_are_the_positive_ones() -> None:
    query = parse_query('"special educational needs" child* (support OR covid) -outbreak member:1')
    terms = highlight_terms(query)
    assert terms.phrases == {("special", "educational", "needs")}
    assert terms.prefixes == {"child"}
    assert terms.stems == {"support", "covid"}
    text = SEN.secondary_text
    assert [text[start:end] for start, end in terms.spans(text)] == [
        "support",
        "children",
        "special educational needs",
        "covid",
    ]


def test_highlight_spans_merge_overlaps_and_match_stems() -> None:
    terms = highlight_terms(parse_query('needs "educational needs" Child'))
    text = "Special educational needs; a child's needs."
    assert [text[start:end] for start, end in terms.spans(text)] == [
        "educational needs",
        "child's",
        "needs",
    ]


# --- properties: the position index agrees with a plain scan of each field -------------------

VOCABULARY = ["a", "b", "c", "d"]
FIELD_TEXT = st.lists(st.sampled_from(VOCABULARY), max_size=8).map(" ".join)
PHRASE = st.lists(st.sampled_from(VOCABULARY), min_size=1, max_size=3)


def _contains(tokens: list[str], words: list[str]) -> bool:
    size = len(words)
    return any(tokens[at : at + size] == words for at in range(len(tokens) - size + 1))


@given(FIELD_TEXT, FIELD_TEXT, FIELD_TEXT, PHRASE)
def test_property_phrase_matches_like_a_scan_of_each_field(
    heading: str, question: str, answer: str, words: list[str]
) -> None:
    doc = analyse(Document(heading, question, answer, "Lords"))
    fields = [heading.split(), question.split(), answer.split()]
    phrase = '"' + " ".join(words) + '"'
    assert parse_query(phrase).matches(doc) == any(_contains(f, words) for f in fields)
    assert parse_query("heading:" + phrase).matches(doc) == _contains(fields[0], words)
    assert parse_query(f"{words[0]} -{phrase}").matches(doc) == (
        any(words[0] in f for f in fields) and not any(_contains(f, words) for f in fields)
    )
