"""Escaping and the page frame shared by every HTML report.

Every piece of text that reaches a page (labels, paths, class and node names, numbers) goes through
:func:`esc`, which escapes ``<``, ``>``, ``&`` and both quotes, so a label such as
``<script>alert(1)</script>&"'`` shows as text in element content and in attribute values alike.
"""

from __future__ import annotations

import html

__all__ = ["CSS", "attr", "esc", "page"]

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em; color: #222; background: #fff; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; } h3 { font-size: 1em; margin: .8em 0 .3em; }
.note { color: #555; font-size: .9em; }
.warn { color: #8a5300; font-size: .9em; }
.case { border-top: 1px solid #ddd; padding-top: .6em; margin-top: 1em; }
.query { display: flex; gap: 1em; align-items: center; }
.row { display: flex; gap: .5em; align-items: flex-start; margin: .3em 0; }
.hits { display: flex; gap: .5em; flex-wrap: wrap; flex: 1; }
.row-name { flex: 0 0 7.5em; font-weight: 600; font-size: .9em; padding-top: .3em; }
.hit { width: 116px; font-size: .72em; line-height: 1.25; border: 2px solid transparent; padding: 2px; }
.hit img, .query img { display: block; image-rendering: pixelated; }
.hit img { width: 96px; height: 96px; object-fit: contain; background: #f3f3f3; }
.query img { width: 128px; height: 128px; object-fit: contain; background: #f3f3f3; }
.noimg { width: 96px; height: 96px; background: #eee; color: #999; display: flex; align-items: center;
         justify-content: center; font-size: .8em; }
.match { color: #16794a; font-weight: 600; } .match-box { border-color: #2e9d63; }
.miss { color: #b3261e; } .miss-box { border-color: #e7a29c; }
.unknown { color: #333; }
.path { color: #777; word-break: break-all; }
.num { white-space: nowrap; }
table { border-collapse: collapse; font-size: .85em; margin: .5em 0; }
th, td { border: 1px solid #ddd; padding: .25em .5em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
tr.ours td { font-weight: 600; background: #f4f9ff; }
svg text { font-family: system-ui, sans-serif; }
"""


def esc(value: object) -> str:
    """``value`` as text safe in HTML element content and in double- or single-quoted attributes."""
    return html.escape(str(value), quote=True)


def attr(name: str, value: object) -> str:
    """`` name="value"`` with the value escaped (the name is ours, never user text)."""
    return f' {name}="{esc(value)}"'


def page(title: str, body: str) -> str:
    """A complete HTML5 document: no scripts, no external assets (a strict CSP says so to the browser)."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\">"
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{esc(title)}</title>'
        f"<style>{CSS}</style></head><body>\n{body}\n</body></html>\n"
    )
