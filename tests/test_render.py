"""Rendering: digest data to a multipart email, excerpts, templates, golden files, samples."""

from __future__ import annotations

import os
import re
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from pathlib import Path

import pytest
from sqlmodel import Session, select

from alertd.cli import main
from alertd.config import Settings
from alertd.db import open_database
from alertd.digests.excerpt import ELLIPSIS, excerpt_around, mark, wrap_text
from alertd.digests.render import build_environment, digest_subject, render_message
from alertd.digests.view import Block, Digest, DigestItem, DigestSection
from alertd.errors import ConfigError, HeaderInjection, TemplateError
from alertd.items import add_items
from alertd.kinds import written_question
from alertd.kinds.feed_item import FEED_ITEM
from alertd.matching.analysis import highlight_terms, parse_query
from alertd.matching.hits import match_new_items
from alertd.models import Hit, Outbox
from alertd.subscriptions import lifecycle

from digest_cases import CASES, GOLDEN_DIR, NOW, RECIPIENT, case_settings, compose_case, mask
from standin_api import load_2021_answered, load_2024_records

SEN_QUESTION = (
    "To ask the Secretary of State for Education, what steps he is taking to "
    "support children with special educational needs during the covid-19 outbreak."
)
SEN_ANSWER = "Children & young people with <b>SEND</b> are a priority …"
SEN = DigestItem(
    heading="Special Educational Needs: Coronavirus",
    url="https://questions-statements.parliament.uk/written-questions/detail/2021-01-25/141234",
    words=written_question.ANSWER,
    origin="Department for Education",
    people=("Asked by Tulip Siddiq (Labour, Hampstead and Kilburn)", "Answered by Vicky Ford"),
    dates=(("Tabled", date(2021, 1, 25)), ("Answered", date(2021, 2, 1))),
    reference="Commons 141234",
    blocks=(Block("Question", SEN_QUESTION), Block("Answer", SEN_ANSWER, quoted=True)),
    read_label="Read the full question and answer",
)
SURREY = 1726400  # 2024: "Special Educational Needs: Surrey", a long HTML answer


def _digest(*sections: DigestSection, recipient: str = "parent@example.org") -> Digest:
    return Digest(
        recipient=recipient,
        sections=sections,
        unsubscribe_url="http://localhost:8000/unsubscribe/unsubscribe.1.sig",
        manage_url="http://localhost:8000/manage/manage.1.sig",
    )


def _section(label: str, items: tuple[DigestItem, ...], total: int | None = None) -> DigestSection:
    return DigestSection(
        label=label,
        stop_url="http://localhost:8000/alerts/stop/stop.1.sig",
        items=items,
        total=len(items) if total is None else total,
        more_url="http://localhost:8000/manage/manage.1.sig",
    )


def _render(digest: Digest, settings: Settings | None = None) -> EmailMessage:
    settings = settings or Settings()
    rendered = render_message(
        digest, settings, build_environment(settings), message_id="<m1@localhost>", now=NOW
    )
    parsed = message_from_bytes(rendered.message, policy=default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def _parts(message: EmailMessage) -> tuple[str, str]:
    text, html = message.get_body(("plain",)), message.get_body(("html",))
    assert text is not None and html is not None
    return (
        str(text.get_content()).replace("\r\n", "\n"),
        str(html.get_content()).replace("\r\n", "\n"),
    )


# ---------------------------------------------------------------------------------------------
# The message


def test_multipart_with_headers() -> None:
    message = _render(_digest(_section('"special educational needs"', (SEN,))))
    assert message["Subject"] == '1 new answer: "special educational needs"'
    assert message["To"] == "parent@example.org"
    assert message["From"] == "alertd <alerts@localhost>"
    assert message["Message-ID"] == "<m1@localhost>"
    assert message["List-Id"] == "alertd digests <digests.localhost>"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["Precedence"] == "bulk"
    assert message["List-Unsubscribe"] == "<http://localhost:8000/unsubscribe/unsubscribe.1.sig>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message.get_content_type() == "multipart/alternative"
    plain, markup = _parts(message)
    for part in (plain, markup):
        assert "Special Educational Needs: Coronavirus" in part
        assert "Department for Education" in part
        assert "Asked by Tulip Siddiq (Labour, Hampstead and Kilburn)" in part
        assert "Answered by Vicky Ford" in part
        assert "25 January 2021" in part and "1 February 2021" in part
        assert SEN.url in part
    # The answer excerpt is text: autoescaped in HTML, verbatim in the text part.
    assert "&lt;b&gt;SEND&lt;/b&gt;" in markup and "<b>SEND</b>" not in markup
    assert "Children & young people with <b>SEND</b>" in plain


def test_rendering_is_pure() -> None:
    digest = _digest(_section("schools", (SEN,)))
    assert _render(digest).as_bytes() == _render(digest).as_bytes()


@pytest.mark.parametrize(
    ("from_name", "label"),
    [
        ("alertd", "schools"),
        ("Alertes «Parlement» Café", "écoles et collèges"),
        ('Jo "the" Bloggs, Alerts Ltd', "x" * 200),
        ("A display name long enough that the From header must be folded over lines", "a=b"),
    ],
)
def test_wire_bytes_are_crlf_seven_bit_and_read_back(from_name: str, label: str) -> None:
    settings = Settings.model_validate({"mail": {"from_name": from_name}})
    digest = _digest(_section(label, (SEN,)))
    rendered = render_message(
        digest, settings, build_environment(settings), message_id="<m1@localhost>", now=NOW
    )
    wire = rendered.message
    assert wire.isascii() and b"\n" not in wire.replace(b"\r\n", b"")
    head, _, body = wire.partition(b"\r\n\r\n")
    # Quoted-printable lines stay within RFC 2045's 76 characters.
    assert max(len(line) for line in body.split(b"\r\n")) <= 76
    parsed = message_from_bytes(wire, policy=default)
    assert isinstance(parsed, EmailMessage)
    assert parsed["Subject"] == rendered.subject == digest_subject(digest)
    assert parsed["From"].addresses[0].display_name == from_name
    assert parsed["To"] == "parent@example.org"
    plain, markup = _parts(parsed)
    assert SEN.url in plain and SEN.url in markup
    assert (
        render_message(
            digest, settings, build_environment(settings), message_id="<m1@localhost>", now=NOW
        )
        == rendered
    )


def test_text_part_wraps_at_72_and_lists_links() -> None:
    long_heading = "A heading " * 12
    item = DigestItem(**{**SEN.__dict__, "heading": long_heading, "also_matches": ("x",) * 30})
    plain, _ = _parts(_render(_digest(_section("sen", (item,), total=30))))
    lines = plain.splitlines()
    assert all(len(line) <= 72 for line in lines if "://" not in line)
    # Every link stands whole on its own line.
    for url in (SEN.url, "http://localhost:8000/alerts/stop/stop.1.sig"):
        assert url in lines
    assert "http://localhost:8000/manage/manage.1.sig" in lines
    assert "http://localhost:8000/unsubscribe/unsubscribe.1.sig" in lines


def test_wrap_never_breaks_a_word_or_url() -> None:
    url = "https://example.org/" + "x" * 90
    assert wrap_text(f"see {url} now", 20).splitlines() == ["see", url, "now"]
    assert wrap_text("one\n\ntwo", 72) == "one\n\ntwo"


def test_more_than_shown_and_also_matches() -> None:
    item = DigestItem(**{**SEN.__dict__, "also_matches": ("member:4138",)})
    plain, markup = _parts(_render(_digest(_section("sen", (item,), total=5))))
    assert "... and 4 more for this alert:\nhttp://localhost:8000/manage/manage.1.sig" in plain
    assert "Also matches: member:4138" in plain
    assert '<a href="http://localhost:8000/manage/manage.1.sig"' in markup
    assert "and 4 more for this alert</a>" in markup
    assert "also matches: member:4138" in markup


def test_count_per_alert_and_why() -> None:
    digest = _digest(
        DigestSection(
            label="Rushanara Ali",
            stop_url="http://localhost:8000/alerts/stop/s",
            items=(SEN,),
            total=1,
            reason="you follow Rushanara Ali",
        ),
        _section('"special educational needs"', (SEN, SEN)),
    )
    plain, markup = _parts(_render(digest))
    assert "Rushanara Ali: 1 new answer\n" in plain
    assert '"special educational needs": 2 new answers\n' in plain
    assert "Why you got this: you follow Rushanara Ali" in plain
    assert 'Why you got this: your alert "special educational needs"' in plain
    assert "3 new answers to written questions" in plain
    assert "\N{MIDDLE DOT} 2 new answers" in markup


def test_corrected_answers_are_labelled() -> None:
    item = replace(SEN, status="Corrected answer")
    plain, markup = _parts(_render(_digest(_section("sen", (item,)))))
    assert "Special Educational Needs: Coronavirus (Corrected answer)" in plain
    assert ">Corrected answer</span>" in markup


def test_feed_items_name_their_feed() -> None:
    # A feed item's card: its feed (not a department), no asker and no question.
    item = replace(
        SEN,
        words=FEED_ITEM,
        origin="TheyWorkForYou",
        origin_label="From ",
        people=("Answered by Vicky Ford",),
        dates=(("Published", date(2021, 2, 1)),),
        blocks=(Block("Summary", SEN_ANSWER, quoted=True),),
        read_label="Read it in full",
    )
    plain, markup = _parts(_render(_digest(_section("sen", (item,)))))
    assert "From TheyWorkForYou" in plain and "Asked by" not in plain
    assert "Question:" not in plain and "Summary:" in plain
    assert "TheyWorkForYou" in markup and "Asked by" not in markup


def test_a_long_feed_name_is_wrapped_after_its_from() -> None:
    # "From " goes before the wrapped name, as it always did: the first line may run past 72.
    name = "The Very Long Named Parliamentary Education And Schools Policy Feed Of Notes"
    item = replace(SEN, origin=name, origin_label="From ")
    plain, _ = _parts(_render(_digest(_section("sen", (item,)))))
    assert f"\nFrom {name.removesuffix(' Notes')}\nNotes\n" in plain


def test_html_is_one_inlined_column_with_dark_mode_and_nothing_remote() -> None:
    _, markup = _parts(_render(_digest(_section("sen", (SEN,)))))
    assert 'name="viewport" content="width=device-width, initial-scale=1"' in markup
    assert 'name="color-scheme" content="light dark"' in markup
    assert "@media (prefers-color-scheme: dark)" in markup
    # CSS inlined at render time: only the @media rules are left in a <style>.
    assert re.search(r'<div class="wrap" style="[^"]*max-width: 640px', markup)
    style = re.search(r"<style>(.*?)</style>", markup, re.S)
    assert (
        style is not None
        and re.sub(r"@media[^{]*\{.*?\}\s*\}", "", style.group(1), flags=re.S).strip() == ""
    )
    assert "<img" not in markup and "<link" not in markup and "url(" not in markup
    assert not re.search(r'src="https?:', markup)


def test_highlights_are_marked() -> None:
    query = parse_query('"special educational needs"')
    marked = mark(SEN_QUESTION, highlight_terms(query))
    item = replace(
        SEN,
        blocks=(
            Block("Question", marked.text, marked.spans),
            Block(
                "Answer",
                "Pupils with special educational needs & disabilities",
                ((12, 37),),
                quoted=True,
            ),
        ),
    )
    plain, markup = _parts(_render(_digest(_section("sen", (item,)))))
    assert "children with *special educational needs* during" in plain
    assert "Pupils with *special educational needs* & disabilities" in plain
    assert "children with <mark" in markup and ">special educational needs</mark> during" in markup
    assert ">special educational needs</mark> &amp; disabilities" in markup


def test_answer_html_from_outside_is_sanitised(tmp_path: Path) -> None:
    (tmp_path / "digest.html").write_text(
        "{% for s in digest.sections %}{% for i in s.items %}{{ i.body_markup }}"
        "{% endfor %}{% endfor %}"
    )
    settings = Settings.model_validate({"digest": {"templates_dir": str(tmp_path)}})
    evil = '<p onclick="x()">Fine <script>alert(1)</script><img src="https://t.example/p.gif"></p>'
    item = replace(SEN, body_html=evil)
    _, markup = _parts(_render(_digest(_section("sen", (item,))), settings))
    assert "<p>Fine </p>" in markup
    assert "script" not in markup and "onclick" not in markup and "<img" not in markup


# ---------------------------------------------------------------------------------------------
# Subject and header injection


def test_subject_names_count_and_alerts() -> None:
    digest = _digest(
        _section("special educational needs", (SEN, SEN)), _section("Rushanara Ali", (SEN,))
    )
    assert digest_subject(digest) == "3 new answers: special educational needs, Rushanara Ali"


def test_subject_counts_answers_not_shown() -> None:
    assert digest_subject(_digest(_section("schools", (SEN,), total=25))).startswith("25 new")


def test_long_subject_is_shortened() -> None:
    sections = tuple(_section(f"a rather long alert query number {n}", (SEN,)) for n in range(6))
    subject = digest_subject(_digest(*sections))
    assert len(subject) <= 90
    assert subject.startswith("6 new answers: a rather long alert query number 0")
    assert subject.endswith("more alerts")


@pytest.mark.parametrize(
    "recipient",
    [
        "parent@example.org\r\nBcc: victim@example.org",
        "parent@example.org\nBcc: victim@example.org",
        "parent@example.org, victim@example.org",
        "Parent <parent@example.org>\r\n",
    ],
)
def test_header_injection_in_the_address_is_refused(recipient: str) -> None:
    with pytest.raises(HeaderInjection):
        _render(_digest(_section("x", (SEN,)), recipient=recipient))


def test_header_injection_in_a_link_is_refused() -> None:
    digest = Digest(
        recipient="parent@example.org",
        sections=(_section("x", (SEN,)),),
        unsubscribe_url="http://localhost/u>\r\nBcc: victim@example.org",
    )
    with pytest.raises(HeaderInjection):
        _render(digest)


def test_line_breaks_in_a_query_never_make_a_header() -> None:
    # Queries are saved on one line; even one that was not cannot add a header.
    label = "schools\r\nBcc: victim@example.org"
    message = _render(_digest(_section(label, (SEN,))))
    assert message["Subject"] == "1 new answer: schools Bcc: victim@example.org"
    assert message["Bcc"] is None
    headers = message.as_bytes().split(b"\n\n", 1)[0]
    assert b"\nBcc:" not in headers


def test_line_breaks_in_names_stay_in_the_body() -> None:
    item = replace(SEN, people=("Asked by Jo\r\nBcc: victim@example.org", "Answered by Vicky Ford"))
    message = _render(_digest(_section("x", (item,))))
    assert message["Bcc"] is None


@pytest.mark.parametrize(
    ("section", "values"),
    [
        ("mail", {"from_name": "alertd\r\nBcc: victim@example.org"}),
        ("mail", {"from": "alerts@example.org\r\nBcc: victim@example.org"}),
        ("mail", {"verp_address": "bounces+x@example.org"}),
    ],
)
def test_config_refuses_header_values_with_line_breaks(
    section: str, values: dict[str, str]
) -> None:
    from alertd.config import load_settings

    with pytest.raises(ConfigError):
        load_settings(
            environ={f"ALERTD_{section.upper()}__{k.upper()}": v for k, v in values.items()}
        )


def test_saved_queries_are_one_line(tmp_path: Path) -> None:
    engine = open_database(case_settings(tmp_path, "mixed").database)
    for query in ("schools\r\nBcc: b@example.org", "schools\nfunding"):
        alert = lifecycle.subscribe(
            engine, "a@example.org", query, "daily", confirmed=True, now=NOW
        )
        assert "\n" not in alert.query and "\r" not in alert.query
    engine.dispose()


# ---------------------------------------------------------------------------------------------
# Excerpts


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [("short text", 100, "short text"), ("one two three four", 10, "one two …")],
)
def test_excerpt_without_highlights_cuts_at_a_word(text: str, limit: int, expected: str) -> None:
    assert excerpt_around(text, None, limit).text == expected


def _surrey_answer() -> str:
    (record,) = [r for r in load_2024_records(full_text_only=True) if r["id"] == SURREY]
    return written_question.parse(record).body_text


def test_excerpt_is_about_400_characters_around_the_first_match() -> None:
    answer = _surrey_answer()
    highlights = highlight_terms(parse_query("safety valve"))
    marked = excerpt_around(answer, highlights, 400)
    assert len(answer) > 600
    assert 300 <= len(marked.text) <= 400 + 4
    assert marked.text.startswith(ELLIPSIS + " ") and not marked.text.startswith("Surrey had")
    first = marked.spans[0]
    assert marked.text[first[0] : first[1]] == "Safety"
    # The match is near the end of the answer: the window is the answer's last 400 or so.
    assert marked.text.endswith("local high needs system")
    assert [marked.text[s:e].lower() for s, e in marked.spans] == ["safety", "valve"]


def test_excerpt_window_starts_a_little_before_a_match_in_the_middle() -> None:
    answer = _surrey_answer()
    marked = excerpt_around(answer, highlight_terms(parse_query("track")), 400)
    (first, *_) = marked.spans
    assert marked.text[first[0] : first[1]] == "track"
    # Some lead-in (from the start of its sentence), and the rest of the window after it.
    assert marked.text.startswith(ELLIPSIS + " The department")
    assert 20 < first[0] < 200
    assert marked.text.endswith(" " + ELLIPSIS) and 300 < len(marked.text) <= 404


def test_excerpt_marks_phrases_and_stems() -> None:
    answer = _surrey_answer()
    marked = excerpt_around(
        answer, highlight_terms(parse_query('"special educational needs" inspect')), 400
    )
    shown = [marked.text[s:e] for s, e in marked.spans]
    assert shown[:2] == ["special educational needs", "inspection"]
    assert marked.text.startswith("Surrey had")  # the match is near the start: no cut before
    assert marked.text.endswith(" " + ELLIPSIS)


def test_excerpt_without_a_match_in_the_answer_is_its_start() -> None:
    answer = _surrey_answer()
    marked = excerpt_around(answer, highlight_terms(parse_query("heading:surrey")), 400)
    assert marked.text.startswith("Surrey had") and len(marked.text) <= 402


def test_excerpt_of_a_member_alert_marks_nothing() -> None:
    marked = excerpt_around(_surrey_answer(), highlight_terms(parse_query("member:4138")), 400)
    assert marked.spans == ()


def test_excluded_words_are_not_marked() -> None:
    marked = mark("Schools and academies", highlight_terms(parse_query("schools -academies")))
    assert [marked.text[s:e] for s, e in marked.spans] == ["Schools"]


# ---------------------------------------------------------------------------------------------
# Templates: overrides, the sandbox, start-up checks


def _override(tmp_path: Path, name: str, source: str) -> Settings:
    (tmp_path / name).write_text(source)
    return Settings.model_validate({"digest": {"templates_dir": str(tmp_path)}})


def test_operator_template_overrides_the_shipped_one(tmp_path: Path) -> None:
    settings = _override(
        tmp_path, "digest.txt", "Hello! {{ digest.total }} for {{ digest.recipient }}\n"
    )
    plain, markup = _parts(_render(_digest(_section("x", (SEN,))), settings))
    assert plain == "Hello! 1 for parent@example.org\n"
    assert "Special Educational Needs: Coronavirus" in markup  # the shipped HTML still used


def test_broken_template_stops_start_up_with_file_and_line(tmp_path: Path) -> None:
    settings = _override(
        tmp_path, "digest.html", "<p>\n{{ digest.total }}\n{{ digest.nonesuch }}\n"
    )
    with pytest.raises(TemplateError) as raised:
        build_environment(settings)
    assert f"{tmp_path / 'digest.html'}:3" in str(raised.value)
    assert "nonesuch" in str(raised.value)


def test_template_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    settings = _override(tmp_path, "digest.txt", "ok\n{% for x in %}\n")
    with pytest.raises(TemplateError, match=re.escape(f"{tmp_path / 'digest.txt'}:2")):
        build_environment(settings)


def test_templates_render_in_the_sandbox(tmp_path: Path) -> None:
    settings = _override(tmp_path, "digest.txt", "{{ digest.__class__.__init__.__globals__ }}\n")
    with pytest.raises(TemplateError, match="SecurityError|undefined"):
        build_environment(settings)


def test_missing_templates_dir_is_a_config_error(tmp_path: Path) -> None:
    settings = Settings.model_validate({"digest": {"templates_dir": str(tmp_path / "none")}})
    with pytest.raises(ConfigError, match="digest.templates_dir"):
        build_environment(settings)


def test_render_sample_stops_on_a_broken_template(tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "digest.txt").write_text("{{ digest.total + }}\n")
    config = tmp_path / "alertd.toml"
    config.write_text(
        f'[database]\nurl = "sqlite:///{tmp_path}/a.db"\n'
        f'[digest]\ntemplates_dir = "{tmp_path / "t"}"\n'
    )
    assert main(["render-sample", "x@example.org", "--config", str(config)]) == 1


# ---------------------------------------------------------------------------------------------
# Golden files: real recorded questions through store, match and compose


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_digest(tmp_path: Path, name: str) -> None:
    rendered = mask(compose_case(tmp_path, name))
    golden = GOLDEN_DIR / f"{name}.eml"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.write_text(rendered)
    assert rendered == golden.read_text(), f"regenerate with UPDATE_GOLDEN=1 if intended: {golden}"


@pytest.mark.slow
def test_golden_mixed_digest_reads_right(tmp_path: Path) -> None:
    parsed = message_from_bytes(compose_case(tmp_path, "mixed"), policy=default)
    assert isinstance(parsed, EmailMessage)
    plain, markup = _parts(parsed)
    assert parsed["Subject"] == (
        # 27 answers, two of them answered together (groupedQuestions): shown as one. Labels
        # in words: a phrase without its quotes, a Member by name (member:4113).
        "26 new answers: special educational needs, pupils, Nadhim Zahawi, carers"
    )
    # The SEN answer also matches "pupils": shown once, under the first alert.
    assert plain.count("Special Educational Needs: Coronavirus") == 1
    assert "Also matches: pupils" in plain
    assert "Carers: Coronavirus (Corrected answer)" in plain
    assert "Why you got this: you follow Nadhim Zahawi" in plain
    assert "Answered by Nadhim Zahawi" in plain
    assert "For those *pupils* and" in plain and ">special educational needs</mark>" in markup
    assert "... and 15 more for this alert:" in plain


# ---------------------------------------------------------------------------------------------
# alertd render-sample


def _sample_config(tmp_path: Path) -> Path:
    config = tmp_path / "alertd.toml"
    config.write_text(
        f'[database]\nurl = "sqlite:///{tmp_path}/alertd.db"\n[mail]\nfrom = "alerts@alertd.test"\n'
    )
    return config


def _store_recorded(tmp_path: Path, *, alert: bool) -> None:
    engine = open_database(_sample_settings(tmp_path).database)
    lifecycle.subscribe(engine, RECIPIENT, "pupils", "daily", confirmed=True, now=NOW)
    answered = [written_question.parse(r) for r in load_2021_answered()]
    add_items(
        engine, written_question.SOURCE, answered, now=NOW, today=NOW.date(), never_alert=not alert
    )
    if alert:
        assert match_new_items(engine, now=NOW + timedelta(minutes=1)) == 6
    engine.dispose()


def _sample_settings(tmp_path: Path) -> Settings:
    return Settings.model_validate({"database": {"url": f"sqlite:///{tmp_path}/alertd.db"}})


@pytest.mark.slow
def test_render_sample_from_recent_answers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _store_recorded(tmp_path, alert=False)
    days = (datetime.now(UTC).date() - date(2021, 2, 1)).days + 1
    out = tmp_path / "sample"
    argv = ["render-sample", RECIPIENT, "--config", str(_sample_config(tmp_path))]
    assert main([*argv, "--out", str(out), "--days", str(days)]) == 0
    printed = capsys.readouterr()
    assert printed.out.split() == [f"{out}.eml", f"{out}.html"]
    assert "6 new answers: pupils (not sent)" in printed.err
    message = message_from_bytes((tmp_path / "sample.eml").read_bytes(), policy=default)
    assert message["To"] == RECIPIENT and message["List-Unsubscribe"]
    html = (tmp_path / "sample.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "<mark" in html


@pytest.mark.slow
def test_render_sample_from_pending_hits_claims_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _store_recorded(tmp_path, alert=True)
    argv = ["render-sample", RECIPIENT, "--config", str(_sample_config(tmp_path))]
    assert main([*argv, "--out", str(tmp_path / "s"), "--days", "1"]) == 0
    assert "6 new answers: pupils (not sent)" in capsys.readouterr().err
    engine = open_database(_sample_settings(tmp_path).database)
    with Session(engine) as session:
        assert session.exec(select(Outbox)).all() == []
        assert all(hit.outbox_id is None for hit in session.exec(select(Hit)).all())
    engine.dispose()


@pytest.mark.slow
def test_render_sample_into_a_folder_writes_inside_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _store_recorded(tmp_path, alert=True)
    argv = ["render-sample", RECIPIENT, "--config", str(_sample_config(tmp_path))]
    typed = tmp_path / "new-folder"
    # A trailing slash names a folder: it must exist, nothing is written beside it.
    assert main([*argv, "--out", f"{typed}/"]) == 2
    assert "does not exist" in capsys.readouterr().err
    typed.mkdir()
    for out in (f"{typed}/", str(typed)):
        assert main([*argv, "--out", out]) == 0
        assert capsys.readouterr().out.split() == [
            f"{typed}/digest-sample.eml",
            f"{typed}/digest-sample.html",
        ]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("new-folder")) == [
        "new-folder"
    ]


@pytest.mark.slow
def test_render_sample_without_answers_or_subscriber(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(_sample_config(tmp_path))
    assert main(["render-sample", "nobody@example.org", "--config", config]) == 2
    assert "no subscriber" in capsys.readouterr().err
    _store_recorded(tmp_path, alert=False)
    assert main(["render-sample", RECIPIENT, "--config", config, "--days", "1"]) == 1
    assert "nothing to show" in capsys.readouterr().err


@pytest.mark.slow
def test_golden_statements_digest_reads_right(tmp_path: Path) -> None:
    parsed = message_from_bytes(compose_case(tmp_path, "statements"), policy=default)
    assert isinstance(parsed, EmailMessage)
    plain, markup = _parts(parsed)
    # 16 answers, of which answers given together (groupedQuestions) are shown once: 13.
    assert parsed["Subject"].startswith("13 new answers and 6 new statements: ")
    # Under one alert: the answers, then the statements in their own group.
    hong_kong = plain.split("hong kong: 2 new answers and 2 new statements")[1]
    answers, statements = hong_kong.split("Written statements", 1)
    assert "Answered by" in answers and "Made by" not in answers
    assert "Made by Priti Patel, The Secretary of State for the Home Department" in statements
    assert "Made 1 February 2021 (Commons HCWS751)" in statements
    assert "*Hong Kong*" in statements
    assert (
        "https://questions-statements.parliament.uk/written-statements/detail/2021-02-01/HCWS751"
        in statements
    )
    # type:question keeps the "Design Update" statements out; type:statement the answers.
    assert "design, written questions: 11 new answers\n" in plain
    assert "Design Update" not in plain
    assert "trade, written statements: 4 new statements" in plain
    assert '<h3 class="group"' in markup and "Read the full statement" in markup
    assert ">Hong Kong</mark>" in markup
