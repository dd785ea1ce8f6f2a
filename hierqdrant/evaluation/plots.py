"""Figures (matplotlib, an optional extra: ``pip install "hierqdrant[plot]"``).

* :func:`draw_tree` — the class tree as a dendrogram, node height on the y axis;
* :func:`plot_map_at_k` — map@k against k for several methods (the paper's Fig. 2).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hierqdrant.core.errors import InputError, NotFoundError
from hierqdrant.core.hierarchy import Hierarchy

PLOT_SUFFIXES = (".png", ".pdf", ".svg")


def check_plot_path(plot: Path | None) -> None:
    """Before any work: a plot path with a known suffix, in an existing folder, and matplotlib there."""
    if plot is None:
        return
    if plot.suffix.lower() not in PLOT_SUFFIXES:
        raise InputError(f"--plot {plot} must end in {', '.join(PLOT_SUFFIXES)}", "e.g. --plot map_at_k.png")
    if not plot.parent.is_dir():
        raise NotFoundError(f"the folder of --plot {plot} does not exist", "create it or choose another path")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise InputError("--plot needs matplotlib", 'pip install "hierqdrant[plot]"') from None


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InputError("drawing needs matplotlib", 'pip install "hierqdrant[plot]"') from None
    return plt


def _save(plt: Any, fig: Any, ax: Any, out: str | Path, title: str | None) -> Path:
    """Title the axes, save the figure to ``out`` at 150 dpi and close it."""
    if title:
        ax.set_title(title)
    fig.tight_layout()
    path = Path(out)
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


def draw_tree(tree: Hierarchy, out: str | Path, title: str | None = None) -> Path:
    """Dendrogram of ``tree``: leaves on the x axis in depth-first order, nodes at their height."""
    plt = _pyplot()
    order: list[int] = []
    stack = [tree.root]
    while stack:
        v = stack.pop()
        if v < tree.num_leaves:
            order.append(v)
        else:
            stack.extend(reversed(tree.children(v)))
    x = {leaf: float(i) for i, leaf in enumerate(order)}
    for v in sorted(range(tree.num_leaves, tree.num_nodes), key=lambda n: tree.height[n]):
        kids = tree.children(v)
        x[v] = sum(x[c] for c in kids) / len(kids)
    width = max(6.0, 0.28 * tree.num_leaves)
    fig, ax = plt.subplots(figsize=(width, 1.2 + 1.1 * max(tree.tree_height, 1)))
    for v in range(tree.num_leaves, tree.num_nodes):
        y = float(tree.height[v])
        kids = tree.children(v)
        xs = [x[c] for c in kids]
        ax.plot([min(xs), max(xs)], [y, y], color="0.3", lw=1)
        for c in kids:
            ax.plot([x[c], x[c]], [float(tree.height[c]), y], color="0.3", lw=1)
        if tree.num_leaves <= 60:
            ax.annotate(
                tree.node_names[v],
                (x[v], y),
                textcoords="offset points",
                xytext=(0, 3),
                ha="center",
                fontsize=7,
                color="tab:blue",
            )
    ax.set_xticks([x[leaf] for leaf in order])
    ax.set_xticklabels([tree.class_names[leaf] for leaf in order], rotation=90, fontsize=7)
    ax.set_ylabel("height")
    ax.set_yticks(range(tree.tree_height + 1))
    ax.spines[["top", "right"]].set_visible(False)
    return _save(plt, fig, ax, out, title)


def plot_map_at_k(
    curves: Mapping[str, Mapping[int, float]],
    out: str | Path,
    title: str | None = None,
    highlight: Sequence[str] = (),
) -> Path:
    """One line per method: map@k against k (log-scaled x axis)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for name, curve in curves.items():
        ks = sorted(curve)
        ax.plot(ks, [curve[k] for k in ks], marker="o", lw=2.2 if name in highlight else 1.2, label=name)
    ax.set_xscale("log")
    ax.set_xlabel("k")
    ax.set_ylabel("mAP@k")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(plt, fig, ax, out, title)
