"""What a query report shows, independent of the output format: :class:`QueryCase` and :class:`ReportHit`.

A case is one query with its leaf, its class when known (e.g. the name of its folder) and rows of hits
— ``cosine`` and ``hierarchical`` for ``hierqdrant query``, or the methods an evaluation compares. The
HTML page (:mod:`~hierqdrant.reports.query_report`) and the contact sheet (:mod:`~hierqdrant.reports.grid`)
render the same cases.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hierqdrant.reports.thumbnails import ImageFinder

if TYPE_CHECKING:
    from hierqdrant.core.model import HierarchyModel
    from hierqdrant.store.search import SearchHit

__all__ = ["QueryCase", "ReportHit", "hits_from_search", "query_cases", "shared_path", "truth_from_path"]


@dataclass
class ReportHit:
    """One result as a report shows it: its ``label`` (class name, None when unlabelled), D, the cosine,
    the LCA node's name and height, the node names from the LCA up to the root (``shared``: the part of
    the tree path it shares with the query), the payload ``path`` and the image file found for it."""

    label: str | None
    distance: float | None = None
    cosine: float | None = None
    lca: str | None = None
    lca_height: int | None = None
    shared: list[str] = field(default_factory=list)
    path: str | None = None
    image: Path | None = None


@dataclass
class QueryCase:
    """One query: its name (a path or ``file.npz#i``), its image file if any, its leaf's class name, its
    true class when known (``truth``) and the rows of hits by method, in display order."""

    name: str
    image: Path | None
    leaf: str | None
    truth: str | None
    rows: dict[str, list[ReportHit]]
    note: str = ""

    def matches(self, hit: ReportHit) -> bool | None:
        """Whether the hit has the query's class; None when either class is unknown."""
        if self.truth is None or hit.label is None:
            return None
        return hit.label == self.truth


def shared_path(model: HierarchyModel, lca: int) -> list[str]:
    """The node names from ``lca`` up to the root: what a hit shares with the query in the tree."""
    tree = model.hierarchy
    if not 0 <= lca < tree.num_nodes:
        return []
    return [tree.node_names[v] for v in tree.ancestors(lca)]


def truth_from_path(name: str, class_names: Sequence[str]) -> str | None:
    """The query's class from its folder's name (``…/seven/0001.png`` → ``seven``) when that is a class."""
    folder = Path(name).parent.name
    return folder if folder in class_names else None


def hits_from_search(
    model: HierarchyModel, hits: Sequence[SearchHit], payload_key: str, finder: ImageFinder | None
) -> list[ReportHit]:
    """:class:`~hierqdrant.store.search.SearchHit` → :class:`ReportHit`, with each hit's image looked up."""
    out = []
    names = model.hierarchy.node_names
    for h in hits:
        hq: dict[str, Any] = h.payload.get(payload_key) or {}
        label = hq.get("label")
        path = h.payload.get("path")
        out.append(
            ReportHit(
                label=str(label) if label is not None else None,
                distance=float(h.distance),
                cosine=float(h.cosine),
                lca=names[h.lca] if 0 <= h.lca < len(names) else None,
                lca_height=int(h.lca_height),
                shared=shared_path(model, int(h.lca)),
                path=str(path) if path is not None else None,
                image=finder.find(path) if finder is not None else None,
            )
        )
    return out


def query_cases(
    model: HierarchyModel,
    names: Sequence[str],
    rows: dict[str, Sequence[Sequence[SearchHit]]],
    payload_key: str,
    finder: ImageFinder | None,
) -> list[QueryCase]:
    """One case per query name from the searcher's answers per method (e.g. ``{"cosine": …,
    "hierarchical": …}``, each a list of hit lists in query order). A query's image is its own path
    when that is a file (else looked up like a result's); its leaf comes from the explanation of its
    hits (search with ``explain=True``); its class from its folder's name."""
    cases = []
    for i, name in enumerate(names):
        per_method = {
            method: hits_from_search(model, answers[i], payload_key, finder) for method, answers in rows.items()
        }
        leaf = None
        for answers in rows.values():
            first = answers[i][0] if answers[i] else None
            if first is not None and first.explanation:
                leaf = str(first.explanation["query_leaf_name"])
                break
        own = Path(name)
        image = own if own.is_file() else (finder.find(name) if finder is not None else None)
        cases.append(QueryCase(name, image, leaf, truth_from_path(name, model.class_names), per_method))
    return cases
