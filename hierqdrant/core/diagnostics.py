"""Warnings that say when a fitted model's results mean little: pure functions, one string per warning.

Each function looks at one thing and returns a list of one-line warnings (empty when all is well), each
naming the problem and what to do about it. ``ingest``, ``hierarchy build``, ``eval`` and ``tune`` call
them and print what they return (tables: in yellow under the table; ``--json``: a ``warnings`` list).

* :func:`narrow_pca` — fewer kept PCA dimensions than K − 1: K class means span up to K − 1 directions,
  so a narrower projection can merge classes that the features separate;
* :func:`flat_tree` — the overlap tree has height 1 at every threshold tried: one level under the root,
  so ``h(LCA)/H`` only says "same predicted class or not";
* :func:`few_per_class` — classes with fewer than 2 images in the fitting data: their Gaussian has no
  spread of its own (it borrows the pooled covariance);
* :func:`low_leaf_accuracy` — the Mahalanobis leaf is the true class for fewer than half of the images:
  the hierarchy term then mostly pushes the right images away. The caller says on which data (the
  fitting data, which flatters it, or held-out / validation images);
* :func:`grid_edge` — a tuned value on the edge of its grid: the optimum may lie outside.

:func:`model_warnings` runs the first four on a model and the labelled data it was fitted on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from hierqdrant.core.model import HierarchyModel

__all__ = [
    "LOW_LEAF_ACCURACY",
    "MIN_PER_CLASS",
    "few_per_class",
    "flat_tree",
    "grid_edge",
    "leaf_accuracy",
    "low_leaf_accuracy",
    "model_warnings",
    "narrow_pca",
]

#: A class Gaussian needs at least this many images for a spread of its own.
MIN_PER_CLASS = 2
#: Below this share of images whose leaf is their class, the leaves are mostly wrong.
LOW_LEAF_ACCURACY = 0.5


def narrow_pca(dims: int, num_classes: int, available: int | None = None) -> list[str]:
    """A warning when the PCA keeps fewer than K − 1 dimensions for K classes (``available``: the most
    it could keep, the features' dims; keeping all of them leaves nothing to warn about PCA)."""
    if available is not None and dims >= available:
        return []
    if num_classes >= 2 and dims < num_classes - 1:
        return [
            f"PCA keeps {dims} dimensions for {num_classes} classes (fewer than K − 1 = {num_classes - 1}): "
            "classes the features separate can collapse; keep more variance (--pca 0.99 or all, or tune --pcas)"
        ]
    return []


def flat_tree(heights: Sequence[tuple[float | None, int]], builder: str = "overlap") -> list[str]:
    """A warning when every tree tried has height ≤ 1; ``heights``: (threshold, tree height) pairs."""
    tried = [(t, h) for t, h in heights]
    if not tried or any(h > 1 for _, h in tried):
        return []
    ts = sorted({t for t, _ in tried if t is not None})
    where = (
        f"at every threshold tried (t = {', '.join(f'{t:g}' for t in ts)})"
        if len(ts) > 1
        else (f"at t = {ts[0]:g}" if ts else "")
    )
    fix = (
        "smaller thresholds (hierqdrant tune --thresholds)"
        if len(ts) > 1
        else "a smaller threshold (--threshold, or --tune)"
    )
    return [
        f"the {builder} tree is flat (height 1) {where}".rstrip()
        + ": h(LCA)/H only tells whether two images share a leaf, there is no hierarchy; "
        f"try {fix} or more PCA dimensions"
    ]


def few_per_class(labels: np.ndarray, num_classes: int, class_names: Sequence[str] | None = None) -> list[str]:
    """A warning when some classes have fewer than :data:`MIN_PER_CLASS` images in the fitting data."""
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    counts = np.bincount(y[y >= 0], minlength=num_classes)[:num_classes]
    few = np.flatnonzero(counts < MIN_PER_CLASS)
    if few.size == 0:
        return []
    names = [class_names[i] if class_names is not None else str(i) for i in few[:5].tolist()]
    more = f" and {few.size - 5} more" if few.size > 5 else ""
    return [
        f"{few.size} of {num_classes} classes have fewer than {MIN_PER_CLASS} images to fit on "
        f"({', '.join(names)}{more}): their Gaussians borrow the pooled covariance and their leaves are unreliable; "
        "add images"
    ]


def leaf_accuracy(leaves: np.ndarray, labels: np.ndarray) -> float:
    """Share of labelled items (label ≥ 0) whose leaf is their class; nan when none is labelled."""
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    leaf = np.asarray(leaves, dtype=np.int64).reshape(-1)
    known = y >= 0
    return float(np.mean(leaf[known] == y[known])) if known.any() else float("nan")


def low_leaf_accuracy(accuracy: float, where: str) -> list[str]:
    """A warning when the leaf accuracy is under :data:`LOW_LEAF_ACCURACY`; ``where`` names the data
    it was measured on (e.g. "on the fitting data", "on 2000 held-out queries")."""
    if np.isfinite(accuracy) and accuracy < LOW_LEAF_ACCURACY:
        return [
            f"leaf accuracy {accuracy:.1%} {where} (under {LOW_LEAF_ACCURACY:.0%}): most images get another class's "
            "leaf, so the hierarchy term mostly pushes the right images away; use better features "
            "(a trained backbone) or fewer, coarser classes"
        ]
    return []


def grid_edge(
    name: str,
    value: float | int | None,
    grid: Sequence[float | int | None],
    *,
    widened: bool = False,
    bound: bool = False,
) -> list[str]:
    """A warning when a tuned ``value`` of ``name`` sits on the smallest or largest value of ``grid``
    (a grid of one value is pinned, never an edge). ``widened``: the grid was already widened once;
    ``bound``: the edge is also the value's limit (e.g. t = 1, α = 0), so the grid cannot grow there."""
    values = [v for v in grid if v is not None]
    if value is None or len(set(values)) < 2:
        return []
    lo, hi = min(values), max(values)
    if value not in (lo, hi):
        return []
    side = "smallest" if value == lo else "largest"
    grid_text = ", ".join(f"{v:g}" for v in sorted(set(values)))
    if bound:
        why = "which is also its limit"
    elif widened:
        why = "even after the grid was widened once; the optimum may lie further out"
    else:
        why = "the optimum may lie outside the grid"
    return [f"tuned {name} = {value:g} is the {side} value of its grid ({grid_text}), {why}"]


def model_warnings(
    model: HierarchyModel,
    features: np.ndarray,
    labels: np.ndarray,
    *,
    projected: bool = False,
    where: str = "on the fitting data",
) -> list[str]:
    """The warnings of a fitted ``model`` and the labelled items it was fitted on (``features``: raw, or
    projected with ``projected=True``): narrow PCA, flat tree (at its own threshold), classes with too
    few images, and the leaf accuracy on those items (``where`` says which they are)."""
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    out = narrow_pca(model.dims, model.num_classes, model.input_dims)
    if model.builder == "overlap":
        out += flat_tree([(model.threshold, model.tree_height)])
    out += few_per_class(y, len(model.class_names), model.class_names)  # labels are classes, sub-classes or not
    if y.size:
        leaves = model.class_of_leaf(model.assign(features, projected=projected))
        out += low_leaf_accuracy(leaf_accuracy(leaves, y), where)
    return out


#: Below this share of training images in their own sub-class in the model's space, the split blurs.
MIN_SUBCLASS_AGREEMENT = 0.9


def subclass_agreement(
    leaves: np.ndarray, split_labels: np.ndarray, subclass_of: np.ndarray, dims: int, input_dims: int
) -> list[str]:
    """A warning when the model's sub-class of the labelled images of split classes (``leaves``: the query
    classifier's best sub-class of their class, in the PCA space) often differs from the split's
    (``split_labels``, made on the raw features): the PCA dropped the directions that split the class."""
    got = np.asarray(leaves, dtype=np.int64).reshape(-1)
    want = np.asarray(split_labels, dtype=np.int64).reshape(-1)
    of = np.asarray(subclass_of, dtype=np.int64)
    split = np.bincount(of)[of[want]] > 1  # images of classes with several sub-classes
    share = float(np.mean(got[split] == want[split])) if split.any() else 1.0
    if share >= MIN_SUBCLASS_AGREEMENT:
        return []
    fix = "try --pca all or a higher --pca" if dims < input_dims else "the sub-classes overlap: fewer splits may do"
    return [
        f"only {share:.0%} of the split classes' training images fall in their own sub-class in the model's "
        f"{dims}-dim space "
        f"(the split was made on the {input_dims}-dim features): {fix}"
    ]
