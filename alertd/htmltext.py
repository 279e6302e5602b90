"""Answer HTML from outside: sanitise it with an allowlist, and turn it into plain text."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import nh3

ALLOWED_TAGS = {
    "p",
    "br",
    "ul",
    "ol",
    "li",
    "strong",
    "b",
    "em",
    "i",
    "u",
    "sub",
    "sup",
    "a",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
    "caption",
    "blockquote",
    "h3",
    "h4",
    "span",
}
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "td": {"colspan", "rowspan"},
    "th": {"colspan", "rowspan"},
}
_BLOCK_TAGS = {
    "p",
    "br",
    "li",
    "tr",
    "table",
    "ul",
    "ol",
    "blockquote",
    "h3",
    "h4",
    "div",
    "caption",
}


def sanitise_html(html: str) -> str:
    """Keep only harmless markup: no scripts, styles, images, event handlers or odd URLs."""
    return nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer",
    )


MAX_LINK_CHARS = 2000


def web_link(link: str, base: str | None = None) -> str | None:
    """``link`` if it is an absolute http(s) URL (a relative one resolved against ``base``
    first), else None: javascript:, data:, vbscript:, file: and the like never reach a page
    or a mail, nor do links with control characters or spaces (browsers strip some of them,
    which turns "java\tscript:" back into a script)."""
    link = link.strip()
    if base is not None and link:
        link = urljoin(base, link)
    if (
        not link
        or len(link) > MAX_LINK_CHARS
        or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in link)
    ):
        return None
    try:
        parts = urlsplit(link)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    return link


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCK_TAGS:
            self.parts.append("\n")
        elif tag in ("td", "th"):
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def html_to_text(html: str) -> str:
    """Plain text of an HTML fragment: paragraphs on their own lines, spaces folded."""
    extractor = _TextExtractor()
    extractor.feed(html)
    extractor.close()
    text = "".join(extractor.parts).replace("\xa0", " ")
    lines = (re.sub(r"[ \t\r\f\v]+", " ", line).strip() for line in text.split("\n"))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def looks_like_html(text: str) -> bool:
    return bool(re.search(r"<(p|br|table|div|ul|ol|a|span|strong|em)\b", text, re.IGNORECASE))
