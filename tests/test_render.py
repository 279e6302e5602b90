"""Rendering: a pure function from digest data to a multipart email."""

from __future__ import annotations

from datetime import UTC, date, datetime
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default

import pytest

from alertd.config import Settings
from alertd.render import (
    Digest,
    DigestItem,
    DigestSection,
    build_environment,
    digest_subject,
    excerpt,
    render_digest,
)

NOW = datetime(2021, 2, 1, 18, 0, tzinfo=UTC)
SEN = DigestItem(
    heading="Special Educational Needs: Coronavirus",
    department="Department for Education",
    asked_by="Tulip Siddiq (Labour, Hampstead and Kilburn)",
    answered_by="Vicky Ford",
    date_tabled=date(2021, 1, 25),
    date_answered=date(2021, 2, 1),
    question_text="To ask the Secretary of State for Education, what steps he is taking to "
    "support children with special educational needs during the covid-19 outbreak.",
    answer_excerpt="Children & young people with <b>SEND</b> are a priority …",
    url="https://questions-statements.parliament.uk/written-questions/detail/2021-01-25/141234",
    uin="141234",
    house="Commons",
    corrected=False,
)


def _digest(*sections: DigestSection) -> Digest:
    return Digest(
        recipient="parent@example.org",
        sections=sections,
        unsubscribe_url="http://localhost:8000/unsubscribe/unsubscribe.1.sig",
    )


def _section(label: str, items: tuple[DigestItem, ...], total: int | None = None) -> DigestSection:
    return DigestSection(
        label=label,
        stop_url="http://localhost:8000/alerts/stop/stop.1.sig",
        items=items,
        total=len(items) if total is None else total,
    )


def _render(digest: Digest) -> EmailMessage:
    message = render_digest(
        digest, Settings(), build_environment(), message_id="<m1@localhost>", now=NOW
    )
    parsed = message_from_bytes(message.as_bytes(), policy=default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def test_multipart_with_headers() -> None:
    message = _render(_digest(_section('"special educational needs"', (SEN,))))
    assert message["Subject"] == '1 new answer: "special educational needs"'
    assert message["To"] == "parent@example.org"
    assert message["From"] == "alertd <alerts@localhost>"
    assert message["Message-ID"] == "<m1@localhost>"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["List-Unsubscribe"] == "<http://localhost:8000/unsubscribe/unsubscribe.1.sig>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    plain, markup = text.get_content(), html.get_content()
    for part in (plain, markup):
        assert "Special Educational Needs: Coronavirus" in part
        assert "Department for Education" in part
        assert "Tulip Siddiq (Labour, Hampstead and Kilburn)" in part
        assert "1 February 2021" in part
        assert SEN.url in part
    assert all(len(line) <= 72 or "http" in line for line in plain.splitlines())
    # The answer excerpt is text: autoescaped in HTML, verbatim in the text part.
    assert "&lt;b&gt;SEND&lt;/b&gt;" in markup and "<b>SEND</b>" not in markup
    assert "Children & young people with <b>SEND</b>" in plain


def test_rendering_is_pure() -> None:
    digest = _digest(_section("schools", (SEN,)))
    assert _render(digest).as_bytes() == _render(digest).as_bytes()


def test_more_than_shown_and_also_matches() -> None:
    item = DigestItem(**{**SEN.__dict__, "also_matches": ("member:4138",)})
    message = _render(_digest(_section("sen", (item,), total=5)))
    text = message.get_body(("plain",))
    assert text is not None
    assert "and 4 more" in text.get_content()
    assert "Also matches: member:4138" in text.get_content()


def test_subject_names_count_and_alerts() -> None:
    digest = _digest(
        _section("special educational needs", (SEN, SEN)), _section("Rushanara Ali", (SEN,))
    )
    assert digest_subject(digest) == "3 new answers: special educational needs, Rushanara Ali"


def test_long_subject_is_shortened() -> None:
    sections = tuple(_section(f"a rather long alert query number {n}", (SEN,)) for n in range(6))
    subject = digest_subject(_digest(*sections))
    assert len(subject) <= 90
    assert subject.startswith("6 new answers: a rather long alert query number 0")
    assert subject.endswith("more alerts")


def test_header_injection_is_refused() -> None:
    digest = Digest(
        recipient="parent@example.org\r\nBcc: victim@example.org",
        sections=(_section("x", (SEN,)),),
        unsubscribe_url="http://localhost/u",
    )
    with pytest.raises(ValueError):
        _render(digest)


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [("short text", 100, "short text"), ("one two three four", 10, "one two …")],
)
def test_excerpt(text: str, limit: int, expected: str) -> None:
    assert excerpt(text, limit) == expected
