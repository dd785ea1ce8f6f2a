"""The query report: one self-contained HTML page of query cases (``hierqdrant query --html``, the demo).

Per query: the query image, its leaf and class, then one row per method (cosine top-k, hierarchical
top-k), each hit with its thumbnail, its label (green when it is the query's class, red when not, plain
when either is unknown), D, the cosine and the LCA node; the part of the tree path the hit shares with
the query (LCA → root) is the hover title of the hit and the line under the LCA.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hierqdrant.reports.cases import QueryCase, ReportHit
from hierqdrant.reports.html import attr, esc, page
from hierqdrant.reports.thumbnails import THUMB, data_uri, thumbnail

__all__ = ["Thumbs", "case_html", "query_page", "write_query_report"]

NO_THUMBNAILS = (
    "thumbnails need image paths: no result's payload 'path' is an image file found here (a collection "
    "ingested from a features file has none); for images, pass --image-root DIR, the folder that was ingested"
)


class Thumbs:
    """Data URIs of thumbnails, one per file however often it appears (the page inlines each copy)."""

    def __init__(self, size: int = THUMB) -> None:
        self.size = size
        self._cache: dict[tuple[Path, int], str | None] = {}

    def uri(self, path: Path | None, size: int | None = None) -> str | None:
        """The thumbnail of ``path`` as a data URI, None without a readable image."""
        if path is None:
            return None
        key = (path, size or self.size)
        if key not in self._cache:
            img = thumbnail(path, key[1])
            self._cache[key] = data_uri(img) if img is not None else None
        return self._cache[key]


def _img(uri: str | None, alt: str, title: str, size: int) -> str:
    if uri is None:
        return f'<div class="noimg"{attr("title", title)}>no image</div>'
    return f'<img{attr("src", uri)}{attr("alt", alt)}{attr("title", title)} width="{size}" height="{size}">'


def _fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def hit_html(case: QueryCase, rank: int, hit: ReportHit, thumbs: Thumbs) -> str:
    """One hit: thumbnail, label (coloured by whether it is the query's class), D, cosine, LCA."""
    match = case.matches(hit)
    cls = "unknown" if match is None else ("match" if match else "miss")
    label = hit.label if hit.label is not None else "(unlabelled)"
    shared = " › ".join(hit.shared) if hit.shared else ""
    title = f"#{rank} {label}" + (f" — {hit.path}" if hit.path else "") + (f"\nshared path: {shared}" if shared else "")
    lines = [f'<span class="{cls}">{esc(label)}</span>']
    numbers = ([f"D {_fmt(hit.distance)}"] if hit.distance is not None else []) + (
        [f"cos {_fmt(hit.cosine)}"] if hit.cosine is not None else []
    )
    if numbers:
        lines.append(f'<span class="num">{" · ".join(numbers)}</span>')
    if hit.lca is not None:
        tip = attr("title", f"shared path: {shared}" if shared else hit.lca)
        lines.append(f"<span{tip}>LCA {esc(hit.lca)} (h={esc(hit.lca_height)})</span>")
    if shared:
        lines.append(f'<span class="path">{esc(shared)}</span>')
    box = "" if match is None else (" match-box" if match else " miss-box")
    return (
        f'<div class="hit{box}"{attr("title", title)}>{_img(thumbs.uri(hit.image), label, title, thumbs.size)}'
        + "<br>".join(lines)
        + "</div>"
    )


def case_html(case: QueryCase, thumbs: Thumbs, k: int | None = None) -> str:
    """One query case: the query image, its leaf and class, and a row of hits per method."""
    leaf = f"leaf {esc(case.leaf)}" if case.leaf is not None else ""
    truth = f"{' · ' if leaf else ''}class {esc(case.truth)}" if case.truth is not None else ""
    head = (
        f'<div class="query">{_img(thumbs.uri(case.image, 128), case.name, case.name, 128)}'
        f"<div><h3>{esc(case.name)}</h3><div>{leaf}{truth}</div>"
        + (f'<div class="note">{esc(case.note)}</div>' if case.note else "")
        + "</div></div>"
    )
    rows = []
    for method, hits in case.rows.items():
        cells = "".join(hit_html(case, r, h, thumbs) for r, h in enumerate(hits[:k] if k else hits, 1))
        rows.append(f'<div class="row"><div class="row-name">{esc(method)}</div><div class="hits">{cells}</div></div>')
    return f'<section class="case">{head}{"".join(rows)}</section>'


def query_page(
    cases: Sequence[QueryCase], title: str, facts: Sequence[str] = (), notes: Sequence[str] = (), k: int | None = None
) -> str:
    """The whole page: the title, one line of facts, notes (e.g. that thumbnails are missing) and the cases."""
    thumbs = Thumbs()
    body = [f"<h1>{esc(title)}</h1>"]
    if facts:
        body.append(f'<p class="note">{" · ".join(esc(f) for f in facts)}</p>')
    body += [f'<p class="warn">{esc(n)}</p>' for n in notes]
    body.append(
        '<p class="note">Labels are <span class="match">green</span> when they are the query\'s class, '
        '<span class="miss">red</span> when not; hover a result for the tree path it shares with the query.</p>'
    )
    body += [case_html(c, thumbs, k) for c in cases]
    return page(title, "\n".join(body))


def has_images(cases: Sequence[QueryCase]) -> bool:
    """Whether any hit of any case has an image file (else the report says thumbnails need paths)."""
    return any(h.image is not None for c in cases for hits in c.rows.values() for h in hits)


def write_query_report(
    path: Path, cases: Sequence[QueryCase], title: str, facts: Sequence[str] = (), notes: Sequence[str] = ()
) -> list[str]:
    """Write the page to ``path`` (atomically); returns the notes it carries (the thumbnails one included)."""
    notes = list(notes)
    if cases and not has_images(cases):
        notes.append(NO_THUMBNAILS)
    write_text(path, query_page(cases, title, facts, notes))
    return notes


def write_text(path: Path, text: str) -> None:
    """Write a report: to a temporary file beside it, then renamed, so a reader never sees half a page."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
