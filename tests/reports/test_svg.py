"""The inline SVG figures (hierqdrant.reports.svg)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np

from hierqdrant.core.hierarchy import Hierarchy
from hierqdrant.reports.svg import map_at_k_svg, tree_svg
from tests.reports.helpers import EVIL

NS = "{http://www.w3.org/2000/svg}"


def test_tree_svg_draws_every_leaf_once_with_escaped_names() -> None:
    # leaves 0..3, {0,1} → 4, {2,3} → 5, root 6
    tree = Hierarchy(parent=np.array([4, 4, 5, 5, 6, 6, -1]), num_leaves=4, class_names=["a", EVIL, "c", "d"])
    svg = ET.fromstring(tree_svg(tree))  # well-formed XML, so nothing escaped its text
    texts = [t.text or "" for t in svg.iter(f"{NS}text")]
    assert sorted(texts) == sorted(["a", EVIL, "c", "d"])
    assert len([c for c in svg.iter(f"{NS}circle") if c.get("r") == "4"]) == 3  # the inner nodes
    # siblings are adjacent rows: a and EVIL (under node 4) are 16 px apart
    y = {t.text: float(t.get("y", 0)) for t in svg.iter(f"{NS}text")}
    assert abs(y["a"] - y[EVIL]) == 16 and abs(y["c"] - y["d"]) == 16


def test_tree_svg_puts_deeper_nodes_further_right() -> None:
    tree = Hierarchy(parent=np.array([3, 3, 4, 4, -1]), num_leaves=3)
    svg = ET.fromstring(tree_svg(tree))
    xs = sorted({float(c.get("cx", 0)) for c in svg.iter(f"{NS}circle")})
    assert len(xs) == 3  # root, node 3, leaves: one column per height


def test_map_at_k_plot_has_a_line_per_method_and_log_axis() -> None:
    curves = {"cosine": {1: 0.5, 10: 0.4, 250: 0.2}, "overlap": {1: 0.6, 10: 0.5, 250: 0.3}, EVIL: {1: float("nan")}}
    text = map_at_k_svg(curves)
    svg = ET.fromstring(text)
    lines = list(svg.iter(f"{NS}polyline"))
    assert len(lines) == 2  # the all-NaN method is left out
    widths = [float(p.get("stroke-width", 0)) for p in lines]
    assert widths[1] > widths[0]  # overlap highlighted
    assert "k (log scale)" in [t.text for t in svg.iter(f"{NS}text")]
    # the higher map@1 is drawn higher (smaller y)
    first = [float(p.get("points", "").split()[0].split(",")[1]) for p in lines]
    assert first[1] < first[0]


def test_map_at_k_plot_linear_for_a_narrow_range() -> None:
    svg = ET.fromstring(map_at_k_svg({"cosine": {1: 0.5, 5: 0.4, 10: 0.3}}))
    assert "k" in [t.text for t in svg.iter(f"{NS}text")]
