"""How a model is fitted: the settings that ``ingest``, ``eval`` and ``tune`` share, in one place.

:class:`FitSettings` holds the choices that shape a :class:`~hierqdrant.core.model.HierarchyModel`
(PCA, the Gaussians' covariance estimator, the tree builder with its threshold or taxonomy, the
default α) and how stored images get their leaf. Tuning chooses the threshold and α on a validation
split instead (:class:`hierqdrant.evaluation.tuning.TuneSettings` holds the grids).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from hierqdrant.core.build import Builder
from hierqdrant.core.gaussian import Estimator
from hierqdrant.core.hierarchy import Hierarchy
from hierqdrant.core.model import HierarchyModel

__all__ = ["LEAF_FROM", "FitSettings", "LeafFrom"]

#: The leaf of a stored image: ``predicted`` (nearest class Gaussian by Mahalanobis distance, the
#: paper) or its ``label``.
LeafFrom = Literal["predicted", "label"]
LEAF_FROM: tuple[str, ...] = get_args(LeafFrom)


@dataclass
class FitSettings:
    """The settings of :meth:`HierarchyModel.fit` plus the leaf source of stored images.

    ``pca``: a variance share to keep, a number of components, or None for every component.
    """

    builder: Builder = "overlap"
    threshold: float = 0.3
    alpha: float = 3.0
    taxonomy: str | Path | Hierarchy | None = None
    pca: int | float | None = 0.95
    covariance: Estimator = "ledoit-wolf"
    leaf_from: LeafFrom = "predicted"

    def fit_model(
        self,
        features: np.ndarray,
        labels: np.ndarray,
        *,
        class_names: Sequence[str] | None = None,
        extractor: Mapping[str, Any] | None = None,
    ) -> HierarchyModel:
        """:meth:`HierarchyModel.fit` with these settings."""
        return HierarchyModel.fit(
            features,
            labels,
            class_names=class_names,
            builder=self.builder,
            threshold=self.threshold,
            alpha=self.alpha,
            taxonomy=self.taxonomy,
            n_components=self.pca,
            covariance=self.covariance,
            extractor=extractor,
        )
