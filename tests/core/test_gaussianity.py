"""The Gaussianity statistics (issue 15): a Gaussian class passes, a two-cluster or heavy-tailed one does not."""

from __future__ import annotations

import numpy as np

from hierqdrant.core.gaussian import Gaussians
from hierqdrant.core.gaussianity import class_gaussianity, gaussianity_report, radii_ks


def test_radii_of_a_gaussian_fit_chi2_and_of_a_mixture_do_not() -> None:
    rng = np.random.default_rng(1)
    d, n = 8, 600
    gauss = rng.normal(size=(n, d))
    mixed = rng.normal(size=(n, d))
    mixed[: n // 2, 0] += 6.0
    mixed[n // 2 :, 0] -= 6.0
    tails = rng.standard_t(2.5, size=(n, d))
    x = np.vstack([gauss, mixed, tails])
    y = np.repeat([0, 1, 2], n)
    stats = class_gaussianity(x, y, Gaussians.fit(x, y, 3))
    ok, two, heavy = stats
    assert ok.ks < 0.08 and ok.axis_ks < 0.08 and 0.8 < ok.var_ratio < 1.25
    assert two.axis_ks > 0.15 > ok.axis_ks  # the split axis shows it
    assert heavy.var_ratio > 2.0 and heavy.ks > ok.ks  # heavy tails: radii far too spread
    assert abs(ok.mean_ratio - 1.0) < 0.1


def test_the_shape_test_ignores_scale_and_small_classes_get_none() -> None:
    rng = np.random.default_rng(2)
    r = rng.chisquare(5, size=400)
    assert abs(radii_ks(r, 5) - radii_ks(3.0 * r, 5)) < 1e-12
    x = rng.normal(size=(40, 3))
    y = np.r_[np.zeros(36, int), np.ones(4, int)]
    report = gaussianity_report(x, y, Gaussians.fit(x, y, 2), ["big", "tiny"])
    assert report["classes"]["tiny"]["ks"] is None and report["classes"]["tiny"]["count"] == 4
    assert report["classes"]["big"]["ks"] is not None and report["median_ks"] == report["classes"]["big"]["ks"]
