"""Escaping and the page frame (hierqdrant.reports.html)."""

from __future__ import annotations

from html.parser import HTMLParser

from hierqdrant.reports.html import attr, esc, page
from tests.reports.helpers import EVIL


class Tags(HTMLParser):
    """Every start tag with its attributes, and the text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(text: str) -> Tags:
    p = Tags()
    p.feed(text)
    return p


def test_esc_escapes_markup_and_both_quotes() -> None:
    out = esc(EVIL)
    assert "<" not in out and ">" not in out and '"' not in out and "'" not in out
    assert out == "&lt;script&gt;alert(1)&lt;/script&gt;&amp;&quot;&#x27;"


def test_text_and_attributes_round_trip_without_new_elements() -> None:
    doc = page(EVIL, f"<p{attr('title', EVIL)}>{esc(EVIL)}</p>")
    parsed = parse(doc)
    assert [t for t, _ in parsed.tags if t == "script"] == []
    (p_attrs,) = [a for t, a in parsed.tags if t == "p"]
    assert p_attrs["title"] == EVIL  # the browser sees the label itself, as an attribute value
    assert EVIL in "".join(parsed.text)


def test_page_has_no_external_assets_and_a_strict_policy() -> None:
    doc = page("t", "<p>x</p>")
    assert doc.startswith("<!DOCTYPE html>")
    assert "default-src 'none'" in doc and "img-src data:" in doc
    assert "http://" not in doc and "https://" not in doc
