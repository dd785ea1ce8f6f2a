"""Linear leaf classifiers: one shared shrunk covariance (``tied``, linear discriminant analysis) and the
trained network's own class scores (``head``).

Both are ``argmax_c (W x + b)_c`` for a (K, d) matrix W and a (K,) offset b, one matrix–vector product
per query instead of the K whitened distances of the per-class Mahalanobis leaf
(:class:`hierqdrant.core.gaussian.NearestClass`).

* ``tied`` (LDA, in the projected space z): class means ``μ_c``, priors ``π_c = n_c / N`` and one covariance
  ``Σ`` of the within-class residuals ``z − μ_y``, shrunk (Ledoit–Wolf or OAS) plus a small ridge. The
  Gaussian posterior with a shared covariance gives ``score_c(z) = zᵀ Σ⁻¹ μ_c − ½ μ_cᵀ Σ⁻¹ μ_c + ln π_c``.
  Where classes have few images or the space is wide, one pooled estimate is far steadier than K
  per-class ones.
* ``head``: the network's final linear layer on the raw penultimate features x, ``score_c(x) = (W x + b)_c``;
  its classes must be the model's.

Ties go to the lowest class index (``argmax``), so the leaf of a point is deterministic.

The vocabularies of where leaves come from (DESIGN.md §1.5) live here too: :data:`QueryClassifier` (the
leaf of a query, and of a stored point without a usable label) and :data:`LeafFrom` (stored points).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
from scipy.linalg import cho_factor, cho_solve

from hierqdrant.core.errors import InputError
from hierqdrant.core.gaussian import Estimator, shrunk_covariance

__all__ = ["LEAF_FROM", "QUERY_CLASSIFIERS", "LeafFrom", "LinearClassifier", "QueryClassifier", "fit_tied"]

#: How a query's leaf is found: ``mahalanobis`` (the nearest class Gaussian, per-class covariances: the
#: paper), ``tied`` (one shared shrunk covariance: LDA, on the PCA vector) or ``head`` (the trained
#: network's final layer on the raw feature).
QueryClassifier = Literal["mahalanobis", "tied", "head"]
QUERY_CLASSIFIERS: tuple[str, ...] = get_args(QueryClassifier)

#: The leaf of a stored image: ``predicted`` (the query classifier, for every image: the paper) or its
#: ``label`` where it has one (the query classifier for the others).
LeafFrom = Literal["predicted", "label"]
LEAF_FROM: tuple[str, ...] = get_args(LeafFrom)

_RIDGE = 1e-6  # relative to the mean per-dimension variance, as for the class Gaussians


@dataclass(frozen=True)
class LinearClassifier:
    """``leaf(x) = argmax_c (x · weightᵀ + bias)_c``."""

    weight: np.ndarray  # (K, d)
    bias: np.ndarray  # (K,)

    def __post_init__(self) -> None:
        w, b = np.asarray(self.weight), np.asarray(self.bias)
        if w.ndim != 2 or b.shape != (w.shape[0],) or not (np.isfinite(w).all() and np.isfinite(b).all()):
            raise InputError(
                f"a linear classifier needs a finite (K, d) weight and (K,) bias, got {w.shape} and {b.shape}"
            )

    @property
    def num_classes(self) -> int:
        return int(self.weight.shape[0])

    @property
    def input_dims(self) -> int:
        return int(self.weight.shape[1])

    def scores(self, points: np.ndarray) -> np.ndarray:
        """(N, K) class scores of (N, d) points."""
        x = np.atleast_2d(np.asarray(points, dtype=np.float64))
        if x.shape[1] != self.input_dims:
            raise InputError(f"the classifier takes {self.input_dims}-d vectors, got {x.shape[1]}-d")
        return x @ self.weight.T + self.bias

    def __call__(self, points: np.ndarray, chunk: int = 65536) -> np.ndarray:
        x = np.atleast_2d(np.asarray(points, dtype=np.float64))
        out = np.empty(x.shape[0], dtype=np.int64)
        for start in range(0, x.shape[0], chunk):
            out[start : start + chunk] = self.scores(x[start : start + chunk]).argmax(axis=1)
        return out


def fit_tied(
    points: np.ndarray, labels: np.ndarray, num_classes: int, estimator: Estimator = "ledoit-wolf"
) -> LinearClassifier:
    """Linear discriminant analysis with one shrunk covariance of the within-class residuals (see the
    module docstring for the score). Every class needs at least one point."""
    z = np.asarray(points, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(y, minlength=num_classes)
    if (counts == 0).any():
        missing = np.flatnonzero(counts == 0)[:5].tolist()
        raise InputError(f"classes {missing} have no points to fit the tied classifier on")
    means = np.zeros((num_classes, z.shape[1]))
    np.add.at(means, y, z)
    means /= counts[:, None]
    cov, _ = shrunk_covariance(z - means[y], estimator)  # the residuals' mean is already 0
    cov[np.diag_indices_from(cov)] += _RIDGE * max(float(np.trace(cov)) / cov.shape[0], 1e-300)
    weight = cho_solve(cho_factor(cov), means.T).T  # Σ⁻¹ μ_c, row per class
    bias = -0.5 * np.einsum("kd,kd->k", weight, means) + np.log(counts / counts.sum())
    return LinearClassifier(weight, bias)
