"""The fitting options that ``ingest`` and ``hierarchy build`` share: PCA, the leaf sources and ``--paper``.

Each is ``None`` unless given, so ``--paper`` (the paper's exact setting: Mahalanobis query leaf, predicted
stored leaves, 95 % PCA) can refuse an explicit value it would override instead of silently dropping it.
"""

from __future__ import annotations

from typing import Any, TypeVar

import typer

from hierqdrant.core.settings import FitSettings

from .choices import LeafFromName, QueryClassifierName
from .common import parse_pca

_S = TypeVar("_S", bound=FitSettings)

PAPER_HELP = (
    "The paper's exact setting, for comparisons: Mahalanobis query leaf, predicted stored leaves, 95 % PCA "
    "(instead of the defaults: tied query leaf, labels as stored leaves)."
)


def pca_option() -> Any:
    return typer.Option(
        None, "--pca", help="Variance share to keep (0.95), a number of components (64) or 'all'. Default: 0.95."
    )


def query_classifier_option() -> Any:
    return typer.Option(
        None,
        "--query-classifier",
        help="Leaf of a query (and of a stored image without a label): tied (one shared shrunk covariance, "
        "LDA; the default), mahalanobis (per-class Gaussians, the paper) or head (the network's final layer "
        "on the raw features: needs a checkpoint with a head for these classes).",
    )


def leaf_from_option() -> Any:
    return typer.Option(
        None,
        "--leaf-from",
        help="Leaf of a stored image: label (its label where it has one, the default) or predicted "
        "(the query classifier for every image, the paper).",
    )


def paper_option() -> Any:
    return typer.Option(False, "--paper", help=PAPER_HELP)


def fit_settings(
    cls: type[_S],
    *,
    paper: bool,
    pca: str | None,
    query_classifier: QueryClassifierName | None,
    leaf_from: LeafFromName | None,
    **settings: Any,
) -> _S:
    """``cls(...)`` (FitSettings or a subclass) from the command line's values; ``--paper`` refuses a
    leaf source or PCA given beside it."""
    given: dict[str, Any] = {}
    if pca is not None:
        given["pca"] = parse_pca(pca)
    if query_classifier is not None:
        given["query_classifier"] = query_classifier.value
    if leaf_from is not None:
        given["leaf_from"] = leaf_from.value
    if paper:
        clash = sorted(given)
        if clash:
            from hierqdrant.core.errors import InputError

            flags = ", ".join("--" + name.replace("_", "-") for name in clash)
            raise InputError(f"--paper fixes {flags}", f"drop {flags}, or drop --paper")
        return cls.paper(**settings)
    return cls(**given, **settings, pinned=frozenset(given) & {"pca", "query_classifier"})
