"""How a model is fitted: the settings that ``ingest``, ``eval`` and ``tune`` share, in one place.

:class:`FitSettings` holds the choices that shape a :class:`~hierqdrant.core.model.HierarchyModel`
(PCA, the Gaussians' covariance estimator, the tree builder with its threshold or taxonomy, the
default α) and the leaf sources: the query classifier and how stored images get their leaf (DESIGN.md
§1.5). Tuning chooses the threshold and α on a validation split instead
(:class:`hierqdrant.evaluation.tuning.TuneSettings` holds the grids).

The defaults are what wins on the data measured (issue 13): the ``tied`` (LDA) query leaf and the
database's labels as leaves. :meth:`FitSettings.paper` is the paper's exact setting — per-class
Mahalanobis leaves for queries and stored images alike, 95 % PCA — for comparisons.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from hierqdrant.core.build import Builder
from hierqdrant.core.classifiers import LEAF_FROM, QUERY_CLASSIFIERS, LeafFrom, LinearClassifier, QueryClassifier
from hierqdrant.core.errors import InputError
from hierqdrant.core.gaussian import Estimator
from hierqdrant.core.hierarchy import Hierarchy
from hierqdrant.core.model import HierarchyModel, check_alpha

__all__ = ["LEAF_FROM", "PAPER", "QUERY_CLASSIFIERS", "FitSettings", "LeafFrom", "QueryClassifier"]

_S = TypeVar("_S", bound="FitSettings")

#: The settings that ``--paper`` fixes: the paper's leaf sources and PCA.
PAPER: dict[str, Any] = {"query_classifier": "mahalanobis", "leaf_from": "predicted", "pca": 0.95}


@dataclass
class FitSettings:
    """The settings of :meth:`HierarchyModel.fit`, leaf sources included.

    ``pca``: a variance share to keep, a number of components, or None for every component.
    ``query_classifier``: ``tied`` (LDA), ``mahalanobis`` (the paper) or ``head`` (the network's final
    layer: :meth:`fit_model` then needs ``head=``). ``leaf_from``: ``label`` (a stored image's label where
    it has one, else the query classifier) or ``predicted`` (the query classifier for all).
    ``pinned``: which of them were given explicitly; tuning searches the others.
    """

    builder: Builder = "overlap"
    threshold: float = 0.3
    alpha: float = 3.0
    taxonomy: str | Path | Hierarchy | None = None
    pca: int | float | None = 0.95
    covariance: Estimator = "ledoit-wolf"
    leaf_from: LeafFrom = "label"
    query_classifier: QueryClassifier = "tied"
    #: The settings the user fixed (``pca``, ``query_classifier``): tuning keeps them instead of searching.
    pinned: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        # Checked here, before an ingest embeds a single image (DESIGN.md §3.13 bounds α).
        self.alpha = check_alpha(self.alpha)

    @classmethod
    def paper(cls: type[_S], **settings: Any) -> _S:
        """The paper's exact setting (:data:`PAPER`: Mahalanobis query leaf, predicted leaves for stored
        images, 95 % PCA) with the other ``settings`` (builder, threshold, α, …)."""
        clash = sorted(set(settings) & set(PAPER))
        if clash:
            raise InputError(
                f"the paper's setting (--paper) fixes {', '.join(clash)}", "drop them, or do not ask for --paper"
            )
        return cls(**PAPER, **settings, pinned=frozenset(PAPER))

    @property
    def is_paper(self) -> bool:
        """Whether the leaf sources and PCA are the paper's."""
        return all(getattr(self, key) == value for key, value in PAPER.items())

    def fit_model(
        self,
        features: np.ndarray,
        labels: np.ndarray,
        *,
        class_names: Sequence[str] | None = None,
        extractor: Mapping[str, Any] | None = None,
        head: LinearClassifier | None = None,
        subclass_of: np.ndarray | None = None,
    ) -> HierarchyModel:
        """:meth:`HierarchyModel.fit` with these settings (``head``: the network's final layer, for
        ``query_classifier="head"``; ``subclass_of``: sub-class leaves, ``labels`` then name sub-classes)."""
        return HierarchyModel.fit(
            features,
            labels,
            class_names=class_names,
            subclass_of=subclass_of,
            builder=self.builder,
            threshold=self.threshold,
            alpha=self.alpha,
            taxonomy=self.taxonomy,
            n_components=self.pca,
            covariance=self.covariance,
            extractor=extractor,
            query_classifier=self.query_classifier,
            leaf_from=self.leaf_from,
            head=head,
        )
