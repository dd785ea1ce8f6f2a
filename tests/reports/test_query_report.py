"""The query report page and the contact sheet (hierqdrant.reports.query_report, .grid, .cases)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from hierqdrant.reports.cases import QueryCase, ReportHit, truth_from_path
from hierqdrant.reports.grid import CELL, GREEN, RED, contact_sheet, write_grid
from hierqdrant.reports.query_report import NO_THUMBNAILS, query_page, write_query_report
from tests.reports.helpers import EVIL, make_cases
from tests.reports.test_html import parse


def test_page_inlines_one_image_per_query_and_hit(tmp_path: Path) -> None:
    cases = make_cases(tmp_path)
    parsed = parse(query_page(cases, "t"))
    imgs = [a for t, a in parsed.tags if t == "img"]
    assert len(imgs) == 2 * (1 + 2 * 3)  # per query: itself + 2 rows of 3 hits
    assert all((a["src"] or "").startswith("data:image/png;base64,") for a in imgs)
    assert [t for t, _ in parsed.tags if t in ("script", "link", "iframe")] == []


def test_labels_are_coloured_by_the_query_class(tmp_path: Path) -> None:
    cases = make_cases(tmp_path)
    parsed = parse(query_page(cases[:1], "t"))
    spans = [a.get("class") for t, a in parsed.tags if t == "span" and a.get("class") in ("match", "miss", "unknown")]
    # the legend's two, then cat: cosine [cat, dog, cat], hierarchical [cat, cat, EVIL+x]
    assert spans == ["match", "miss"] + ["match", "miss", "match", "match", "match", "miss"]


def test_hostile_labels_and_paths_stay_text(tmp_path: Path) -> None:
    cases = make_cases(tmp_path)
    doc = query_page(cases, EVIL, facts=[EVIL], notes=[EVIL])
    parsed = parse(doc)
    assert "<script>" not in doc
    assert [t for t, _ in parsed.tags if t == "script"] == []
    titles = [a["title"] for t, a in parsed.tags if t == "div" and a.get("title")]
    assert any(f"shared path: n5 › {EVIL} › root" in (t or "") for t in titles)  # hover shows the tree path
    assert "".join(parsed.text).count(EVIL) >= 5


def test_without_images_the_report_says_thumbnails_need_paths(tmp_path: Path) -> None:
    cases = make_cases(tmp_path, with_images=False)
    for c in cases:
        c.image = None
    out = tmp_path / "r.html"
    notes = write_query_report(out, cases, "t")
    text = out.read_text(encoding="utf-8")
    assert notes == [NO_THUMBNAILS]
    assert "thumbnails need image paths" in text
    assert [t for t, _ in parse(text).tags if t == "img"] == []
    assert text.count('class="noimg"') == 2 * 7
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, nothing left behind


def test_truth_from_the_query_folder() -> None:
    assert truth_from_path("digits/test/seven/0001.png", ["six", "seven"]) == "seven"
    assert truth_from_path("elsewhere/x.png", ["six", "seven"]) is None
    case = QueryCase("q", None, None, None, {})
    assert case.matches(ReportHit(label="seven")) is None


def test_contact_sheet_frames_hits_green_or_red(tmp_path: Path) -> None:
    cases = make_cases(tmp_path)
    sheet = contact_sheet(cases)
    px = np.asarray(sheet)
    assert px.std() > 10  # not blank
    colours = {tuple(c) for c in px.reshape(-1, 3)}
    assert tuple(GREEN) in colours and tuple(RED) in colours
    out = tmp_path / "g.png"
    write_grid(out, cases, k=2)
    with Image.open(out) as im:
        assert im.format == "PNG"
        assert im.width < sheet.width  # k=2 is narrower than all three hits
        assert im.height >= 4 * CELL  # two queries × two rows
