"""How Gaussian each class's features are: squared Mahalanobis radii against χ²_d (DESIGN.md §1.9).

If the projected features z of class c are ``N(μ_c, Σ_c)`` in d dimensions, the squared radii
``r² = (z − μ_c)ᵀ Σ_c⁻¹ (z − μ_c)`` follow ``χ²_d``: mean d, variance 2d. Per class we report

* ``ks`` — the Kolmogorov–Smirnov statistic ``sup_u |F_n(u) − F_{χ²_d}(u)|`` of the radii after scaling
  them to mean d (``u = r² · d / mean(r²)``). The scaling makes it a test of the *shape* only: the shrunk
  covariance of §1.3 and in-sample fitting change the scale of the radii, not whether they look χ².
  0 is a perfect fit; a class made of several clusters, or with heavy tails, scores higher;
* ``mean_ratio = mean(r²)/d`` and ``var_ratio = var(r²)/(2d)`` — both ≈ 1 for a Gaussian (``var_ratio``
  > 1: heavy tails or outliers; < 1 in a class whose spread is concentrated in shells, e.g. a mixture);
* ``axis_ks`` — the largest KS statistic against N(0, 1) of the class's points projected on each of its
  top principal axes, standardised. In many dimensions a split along one direction barely moves the
  radii (χ²_d is a sum of d terms), while its axis shows it directly (bimodal: KS ≈ 0.16 and more).

The radii use the class Gaussians as fitted (:class:`~hierqdrant.core.gaussian.Gaussians`), so a class is
judged by the model that ranks with it. Classes with fewer than ``min_points`` points get ``nan``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hierqdrant.core.gaussian import Gaussians

__all__ = ["ClassGaussianity", "class_gaussianity", "gaussianity_report", "model_gaussianity", "radii_ks"]

#: Fewer points than this give no statistic (nan): a KS statistic of a handful of radii is noise.
MIN_POINTS = 8
#: Principal axes of a class whose 1-D projections ``axis_ks`` checks.
AXES = 3


@dataclass(frozen=True)
class ClassGaussianity:
    """The statistics of one class (see the module docstring)."""

    count: int
    ks: float
    mean_ratio: float
    var_ratio: float
    axis_ks: float

    def to_dict(self) -> dict[str, Any]:
        def num(v: float) -> float | None:
            return None if not np.isfinite(v) else round(float(v), 4)

        return {
            "count": self.count,
            "ks": num(self.ks),
            "mean_ratio": num(self.mean_ratio),
            "var_ratio": num(self.var_ratio),
            "axis_ks": num(self.axis_ks),
        }


def radii_ks(radii: np.ndarray, dims: int) -> float:
    """``sup |F_n − F_{χ²_d}|`` of squared radii scaled to mean ``dims`` (the shape test of the module)."""
    from scipy.stats import chi2, kstest

    r = np.asarray(radii, dtype=np.float64)
    mean = float(r.mean()) if r.size else 0.0
    if r.size == 0 or not mean > 0:
        return float("nan")
    return float(kstest(r * dims / mean, chi2(dims).cdf).statistic)


def _axis_ks(points: np.ndarray, axes: int) -> float:
    from scipy.stats import kstest, norm

    centred = points - points.mean(axis=0)
    _, sing, vt = np.linalg.svd(centred, full_matrices=False)
    worst = 0.0
    for a in range(min(axes, vt.shape[0])):
        if not sing[a] > 0:
            break
        proj = centred @ vt[a]
        worst = max(worst, float(kstest(proj / proj.std(), norm.cdf).statistic))
    return worst


def class_gaussianity(
    points: np.ndarray, labels: np.ndarray, gaussians: Gaussians, *, min_points: int = MIN_POINTS
) -> list[ClassGaussianity]:
    """The statistics of every class of ``gaussians`` on its own ``points`` (projected, (N, d)) and
    ``labels`` (class indices)."""
    z = np.asarray(points, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    d = gaussians.dims
    w, b = gaussians.whitening()
    out: list[ClassGaussianity] = []
    for c in range(gaussians.num):
        rows = z[y == c]
        if rows.shape[0] < min_points:
            out.append(ClassGaussianity(int(rows.shape[0]), *([float("nan")] * 4)))
            continue
        # the class's own radii only: one whitening, not the (N, K) matrix
        r2 = np.sum((rows @ w[c].T - b[c]) ** 2, axis=1)
        out.append(
            ClassGaussianity(
                count=int(rows.shape[0]),
                ks=radii_ks(r2, d),
                mean_ratio=float(r2.mean() / d),
                var_ratio=float(r2.var() / (2 * d)),
                axis_ks=_axis_ks(rows, AXES),
            )
        )
    return out


def gaussianity_report(
    points: np.ndarray, labels: np.ndarray, gaussians: Gaussians, names: list[str]
) -> dict[str, Any]:
    """JSON-ready: per class name its statistics, and the median ``ks`` / ``axis_ks`` over classes."""
    stats = class_gaussianity(points, labels, gaussians)
    ks = np.asarray([s.ks for s in stats])
    axis = np.asarray([s.axis_ks for s in stats])
    return {
        "classes": {name: s.to_dict() for name, s in zip(names, stats, strict=True)},
        "median_ks": None if np.isnan(ks).all() else round(float(np.nanmedian(ks)), 4),
        "median_axis_ks": None if np.isnan(axis).all() else round(float(np.nanmedian(axis)), 4),
    }


def model_gaussianity(model: Any, raw_features: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """:func:`gaussianity_report` of a fitted :class:`~hierqdrant.core.model.HierarchyModel` on the raw
    features and leaf labels it was fitted on (per leaf: a class, or a sub-class)."""
    z = model.transform(raw_features)
    return gaussianity_report(z, labels, model.gaussians, list(model.hierarchy.class_names))
