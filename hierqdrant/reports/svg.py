"""Inline SVG figures drawn here, without matplotlib: the learned tree and map@k against k.

Both return an ``<svg>`` element as text, every label escaped, ready to be placed in an HTML page.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from hierqdrant.core.hierarchy import Hierarchy
from hierqdrant.reports.html import attr, esc

__all__ = ["PALETTE", "map_at_k_svg", "tree_svg"]

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
ROW = 16  # pixels per leaf of the tree
LEVEL = 70  # pixels per unit of node height


def tree_svg(tree: Hierarchy, title: str = "") -> str:
    """The tree as a left-to-right dendrogram: the root at the left, a node's x by its height, the
    leaves (class names) in a column at the right. Hover a node for its name, height and classes."""
    root = tree.root
    height = tree.height
    order: list[int] = []  # leaves in depth-first order, so every subtree's leaves are adjacent
    stack = [root]
    while stack:
        v = stack.pop()
        kids = tree.children(v)
        if not kids:
            order.append(v)
        stack.extend(reversed(kids))
    y: dict[int, float] = {leaf: 20 + ROW * i for i, leaf in enumerate(order)}
    top = int(height[root])
    label_w = 8 + 7 * max((len(tree.node_names[v]) for v in order), default=1)
    x_of = {v: 20 + LEVEL * (top - int(height[v])) for v in range(tree.num_nodes)}
    for v in _postorder(tree, root):
        kids = tree.children(v)
        if kids:
            y[v] = sum(y[c] for c in kids) / len(kids)
    parts: list[str] = []
    for v in _postorder(tree, root):
        kids = tree.children(v)
        if not kids:
            continue
        xv = x_of[v]
        ys = [y[c] for c in kids]
        parts.append(f'<line x1="{xv}" y1="{min(ys):.1f}" x2="{xv}" y2="{max(ys):.1f}" stroke="#666"/>')
        for c in kids:
            parts.append(f'<line x1="{xv}" y1="{y[c]:.1f}" x2="{x_of[c]}" y2="{y[c]:.1f}" stroke="#666"/>')
        classes = [tree.class_names[c] for c in tree.leaves_under(v)]
        shown = ", ".join(classes[:12]) + (f", … ({len(classes)})" if len(classes) > 12 else "")
        tip = f"{tree.node_names[v]} (height {int(height[v])}): {shown}"
        parts.append(f'<circle cx="{xv}" cy="{y[v]:.1f}" r="4" fill="#1f77b4"><title>{esc(tip)}</title></circle>')
    for leaf in order:
        parts.append(
            f'<circle cx="{x_of[leaf]}" cy="{y[leaf]:.1f}" r="2.5" fill="#444"/>'
            f'<text x="{x_of[leaf] + 6}" y="{y[leaf] + 4:.1f}" font-size="12">{esc(tree.node_names[leaf])}</text>'
        )
    width = 20 + LEVEL * top + label_w + 20
    height_px = 20 + ROW * len(order) + 10
    caption = f"<title>{esc(title)}</title>" if title else ""
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height_px}" '
        f'viewBox="0 0 {width} {height_px}" role="img"{attr("aria-label", title or "class tree")}>'
        f"{caption}{''.join(parts)}</svg>"
    )


def _postorder(tree: Hierarchy, root: int) -> list[int]:
    """Nodes children-first (iterative: deep trees do not hit the recursion limit)."""
    out: list[int] = []
    stack: list[tuple[int, bool]] = [(root, False)]
    while stack:
        v, done = stack.pop()
        if done:
            out.append(v)
            continue
        stack.append((v, True))
        stack.extend((c, False) for c in tree.children(v))
    return out


def map_at_k_svg(
    curves: Mapping[str, Mapping[int, float]], highlight: Sequence[str] = ("overlap",), title: str = "map@k"
) -> str:
    """map@k against k, one line per method (``highlight`` drawn thicker), k on a log axis when the ks
    span more than a factor of 20; y from 0 to 1. Methods without a finite value are left out."""
    w, h, left, right, top, bottom = 640, 360, 50, 150, 30, 40
    series = {
        m: sorted((int(k), float(v)) for k, v in pts.items() if isinstance(v, (int, float)) and math.isfinite(v))
        for m, pts in curves.items()
    }
    series = {m: pts for m, pts in series.items() if pts}
    ks = sorted({k for pts in series.values() for k, _ in pts}) or [1]
    lo, hi = ks[0], ks[-1]
    log = hi / max(lo, 1) > 20

    def sx(k: float) -> float:
        if hi == lo:
            return left + (w - left - right) / 2
        if log:
            return left + (math.log(k) - math.log(lo)) / (math.log(hi) - math.log(lo)) * (w - left - right)
        return left + (k - lo) / (hi - lo) * (w - left - right)

    def sy(v: float) -> float:
        return top + (1.0 - v) * (h - top - bottom)

    parts = [f'<text x="{w / 2:.0f}" y="18" text-anchor="middle" font-size="14">{esc(title)}</text>']
    for v in (0.0, 0.25, 0.5, 0.75, 1.0):  # horizontal grid and y labels
        parts.append(f'<line x1="{left}" y1="{sy(v):.1f}" x2="{w - right}" y2="{sy(v):.1f}" stroke="#e3e3e3"/>')
        parts.append(f'<text x="{left - 6}" y="{sy(v) + 4:.1f}" text-anchor="end" font-size="11">{v:.2f}</text>')
    for k in ks:
        parts.append(f'<line x1="{sx(k):.1f}" y1="{top}" x2="{sx(k):.1f}" y2="{h - bottom}" stroke="#f0f0f0"/>')
        parts.append(f'<text x="{sx(k):.1f}" y="{h - bottom + 16}" text-anchor="middle" font-size="11">{k}</text>')
    parts.append(
        f'<text x="{(left + w - right) / 2:.0f}" y="{h - 6}" text-anchor="middle" font-size="12">'
        f"k{' (log scale)' if log else ''}</text>"
    )
    for i, (method, pts) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        bold = method in highlight
        coords = " ".join(f"{sx(k):.1f},{sy(v):.1f}" for k, v in pts)
        tip = f"{method}: " + ", ".join(f"map@{k} {v:.3f}" for k, v in pts)
        parts.append(
            f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="{3 if bold else 1.5}">'
            f"<title>{esc(tip)}</title></polyline>"
        )
        parts += [f'<circle cx="{sx(k):.1f}" cy="{sy(v):.1f}" r="{3 if bold else 2}" fill="{colour}"/>' for k, v in pts]
        ly = top + 16 * i + 8
        weight = ' font-weight="bold"' if bold else ""
        parts.append(
            f'<line x1="{w - right + 12}" y1="{ly}" x2="{w - right + 32}" y2="{ly}" stroke="{colour}" '
            f'stroke-width="{3 if bold else 1.5}"/><text x="{w - right + 38}" y="{ly + 4}" font-size="12"'
            f"{weight}>{esc(method)}</text>"
        )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img"'
        f"{attr('aria-label', title)}>{''.join(parts)}</svg>"
    )
