"""Answer HTML: sanitised with an allowlist, and turned into readable text."""

from __future__ import annotations

from alertd.htmltext import html_to_text, sanitise_html


def test_sanitise_keeps_structure_drops_danger() -> None:
    dirty = (
        '<p onclick="x()">Funding <strong>rose</strong><script>alert(1)</script></p>'
        '<img src="https://tracker.example/p.gif"><a href="javascript:evil()">x</a>'
        '<table><tr><td colspan="2">£1m</td></tr></table>'
    )
    clean = sanitise_html(dirty)
    assert "<p>Funding <strong>rose</strong></p>" in clean
    for bad in ("script", "onclick", "<img", "javascript:"):
        assert bad not in clean
    assert '<td colspan="2">£1m</td>' in clean


def test_html_to_text_paragraphs_and_entities() -> None:
    html = "<p>The Government&#8217;s plan&nbsp;is:</p><ul><li>one</li><li>two</li></ul>"
    assert html_to_text(html) == "The Government’s plan is:\n\none\n\ntwo"
