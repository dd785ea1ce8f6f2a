"""Sub-classes: split a class whose features are not one Gaussian into Gaussian sub-clusters (DESIGN.md §1.9).

After Venkataramanan et al., "Gaussian Latent Representations for Uncertainty Estimation using Mahalanobis
Distance in Deep Classifiers" (ICCVW 2023): a class whose latent distribution is several clusters is
replaced by one sub-class per cluster, each mapped back to its class (``subclass_of``).

The number of clusters is chosen x-means style, by the Bayesian information criterion of Gaussian
mixtures: for k = 1 … ``max_k``, ``BIC(k) = −2 ln L̂_k + p_k ln n`` (scikit-learn's ``GaussianMixture``,
full covariances), the smallest wins; k = 1 keeps the class whole. The mixtures are fitted on the class's
top ``dims`` principal axes (its own PCA): a full covariance in 64 or 512 dimensions has too many
parameters for BIC ever to prefer two of them on a few hundred points, while the clusters that matter
show in the leading axes. A split whose smallest cluster has fewer than ``min_size`` points is refused
(k is lowered). Everything is seeded: the same input gives the same sub-classes.

Sub-classes are numbered by class, then by cluster size (largest first), so ``subclass_of`` is
non-decreasing and a class that is not split keeps one sub-class.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hierqdrant.core.errors import InputError

__all__ = [
    "SubclassMap",
    "SubclassSplit",
    "Splitter",
    "check_subclass_of",
    "compact",
    "false_negative_rates",
    "split_classes",
    "subclass_names",
]

#: Leading principal axes of a class the mixtures are fitted on.
SPLIT_DIMS = 8
#: The most clusters one class is split into at once.
MAX_K = 4


@dataclass(frozen=True)
class SubclassSplit:
    """Sub-class labels (N,) and ``subclass_of`` (K',): the class of every sub-class."""

    labels: np.ndarray
    subclass_of: np.ndarray

    @property
    def num_subclasses(self) -> int:
        return int(self.subclass_of.shape[0])


#: Gives the sub-classes of labelled items: ``(features (N, d), class labels (N,)) → SubclassSplit`` — an
#: x-means split (:func:`split_classes`) or a network head's best sub-class of each item's class. Tuning
#: calls it on its fit part only, so the validation items never shape the sub-classes that are scored.
Splitter = Callable[[np.ndarray, np.ndarray], "SubclassSplit"]


@dataclass(frozen=True)
class SubclassMap:
    """A model's sub-class leaves (DESIGN.md §1.9): the K class names (the labels' vocabulary) and the class
    of each of the K' leaves. Stored in the model manifest as ``{"classes": [...], "subclass_of": [...]}``."""

    classes: list[str]
    subclass_of: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "subclass_of", check_subclass_of(self.subclass_of, len(self.classes)))

    @property
    def leaf_names(self) -> list[str]:
        return subclass_names(self.classes, self.subclass_of)

    def to_dict(self) -> dict[str, Any]:
        return {"classes": list(self.classes), "subclass_of": self.subclass_of.tolist()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SubclassMap:
        return cls([str(c) for c in data["classes"]], np.asarray(data["subclass_of"], dtype=np.int64))


def check_subclass_of(subclass_of: Sequence[int] | np.ndarray, num_classes: int | None = None) -> np.ndarray:
    """``subclass_of`` as int64 (K',): non-decreasing class indices ≥ 0 covering every class 0 … K − 1."""
    s = np.asarray(subclass_of, dtype=np.int64).reshape(-1)
    k = int(s.max()) + 1 if s.size else 0
    if num_classes is not None and k != num_classes:
        raise InputError(f"the sub-class map names {k} classes, expected {num_classes}")
    if s.size == 0 or (s < 0).any() or (np.diff(s) < 0).any() or np.unique(s).size != k:
        raise InputError("a sub-class map must list every class, each sub-class after those of lower classes")
    return s


def subclass_names(class_names: Sequence[str], subclass_of: np.ndarray) -> list[str]:
    """Leaf names: a class with one sub-class keeps its name; a split class's sub-classes are ``name~1`` …"""
    s = np.asarray(subclass_of)
    counts = np.bincount(s, minlength=len(class_names))
    seen = np.zeros(len(class_names), dtype=np.int64)
    out = []
    for c in s.tolist():
        seen[c] += 1
        out.append(class_names[c] if counts[c] == 1 else f"{class_names[c]}~{seen[c]}")
    return out


def compact(labels: np.ndarray, subclass_of: np.ndarray) -> SubclassSplit:
    """Drop the sub-classes no item has (a head's argmax may leave one empty) and renumber the rest in order.

    Every class must keep at least one sub-class (an item of it)."""
    y = np.asarray(labels, dtype=np.int64)
    s = check_subclass_of(subclass_of)
    used = np.bincount(y, minlength=s.size) > 0
    if np.unique(s[used]).size != np.unique(s).size:
        raise InputError("every class needs at least one item in one of its sub-classes")
    new = np.cumsum(used) - 1
    return SubclassSplit(new[y], s[used])


def false_negative_rates(true: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """(K,) per class ``FN_c / n_c`` from the confusion matrix (nan for a class without items)."""
    t = np.asarray(true, dtype=np.int64)
    p = np.asarray(predicted, dtype=np.int64)
    n = np.bincount(t, minlength=num_classes).astype(np.float64)
    hits = np.bincount(t[t == p], minlength=num_classes).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, 1.0 - hits / n, np.nan)


def _best_k(points: np.ndarray, max_k: int, dims: int, min_size: int, seed: int) -> np.ndarray:
    """Cluster labels of one class's points (all 0 when k = 1 wins), largest cluster first."""
    from sklearn.mixture import GaussianMixture

    n = points.shape[0]
    centred = points - points.mean(axis=0)
    _, sing, vt = np.linalg.svd(centred, full_matrices=False)
    p = int(min(dims, vt.shape[0], max(1, n // 10)))
    x = centred @ vt[:p].T
    scale = float(sing[0]) / np.sqrt(max(n - 1, 1)) if sing.size and sing[0] > 0 else 1.0
    x = x / scale  # one common scale: BIC compares likelihoods, not units
    best_bic, best = np.inf, np.zeros(n, dtype=np.int64)
    for k in range(1, max_k + 1):
        if k * min_size > n:
            break
        gm = GaussianMixture(k, covariance_type="full", reg_covar=1e-4, n_init=2, random_state=seed).fit(x)
        assigned = gm.predict(x)
        if k > 1 and np.bincount(assigned, minlength=k).min() < min_size:
            continue
        bic = float(gm.bic(x))
        if bic < best_bic:
            best_bic, best = bic, assigned
    order = np.argsort(-np.bincount(best), kind="stable")  # largest cluster first
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return np.asarray(rank[best], dtype=np.int64)


def split_classes(
    points: np.ndarray,
    groups: np.ndarray,
    group_of: np.ndarray,
    *,
    candidates: Sequence[int] | np.ndarray | None = None,
    max_k: int = MAX_K,
    dims: int = SPLIT_DIMS,
    min_size: int | None = None,
    seed: int = 0,
) -> SubclassSplit:
    """Split the ``candidates`` among the current groups (all by default) x-means style (module docstring).

    ``groups`` (N,) are the current (sub-)class labels of ``points`` (N, d) and ``group_of`` (G,) the class
    of each group (``np.arange(K)`` on a first split); a group may be split again. Returns the new
    sub-class labels and their map to the classes.
    """
    x = np.asarray(points, dtype=np.float64)
    g = np.asarray(groups, dtype=np.int64)
    parents = check_subclass_of(group_of)
    if x.ndim != 2 or g.shape != (x.shape[0],) or (g < 0).any() or (g >= parents.size).any():
        raise InputError(f"groups must be {x.shape[0]} indices into the {parents.size} groups")
    if max_k < 1:
        raise InputError(f"max_k={max_k} must be ≥ 1")
    todo = set(range(parents.size) if candidates is None else (int(c) for c in candidates))
    size = int(min_size) if min_size is not None else max(10, 2 * dims)
    new_labels = np.empty_like(g)
    new_of: list[int] = []
    for group in range(parents.size):
        rows = np.flatnonzero(g == group)
        clusters = np.zeros(rows.size, dtype=np.int64)
        if group in todo and rows.size >= 2 * size:
            clusters = _best_k(x[rows], max_k, dims, size, seed + group)
        k = int(clusters.max()) + 1 if rows.size else 1
        new_labels[rows] = len(new_of) + clusters
        new_of.extend([int(parents[group])] * k)
    return SubclassSplit(new_labels, np.asarray(new_of, dtype=np.int64))
