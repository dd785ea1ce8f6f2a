"""Linear leaf classifiers: the tied (LDA) score by hand, agreement with scikit-learn, the head."""

from __future__ import annotations

import numpy as np
import pytest

from hierqdrant.core.classifiers import LinearClassifier, fit_tied
from hierqdrant.core.errors import InputError
from hierqdrant.core.gaussian import shrunk_covariance


def test_tied_score_is_the_shared_covariance_gaussian_posterior() -> None:
    rng = np.random.default_rng(0)
    means = np.array([[0.0, 0.0], [3.0, 1.0], [0.0, 4.0]])
    y = np.repeat([0, 1, 2], [30, 20, 10])
    z = means[y] + rng.standard_normal((60, 2)) @ np.array([[1.0, 0.3], [0.0, 0.5]])
    clf = fit_tied(z, y, 3)
    mu = np.stack([z[y == c].mean(axis=0) for c in range(3)])
    cov, _ = shrunk_covariance(z - mu[y])
    cov += np.eye(2) * 1e-6 * np.trace(cov) / 2
    inv = np.linalg.inv(cov)
    q = np.array([[1.4, 0.6], [0.2, 2.1], [2.9, 3.0]])
    want = q @ inv @ mu.T - 0.5 * np.einsum("kd,de,ke->k", mu, inv, mu) + np.log([0.5, 1 / 3, 1 / 6])
    np.testing.assert_allclose(clf.scores(q), want, rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(clf(q), want.argmax(axis=1))


def test_tied_agrees_with_scikit_learn_lda_on_separated_classes() -> None:
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    rng = np.random.default_rng(1)
    centres = rng.standard_normal((6, 8)) * 4
    y = np.repeat(np.arange(6), 50)
    z = centres[y] + rng.standard_normal((300, 8))
    q = centres[rng.integers(0, 6, 200)] + rng.standard_normal((200, 8))
    ours = fit_tied(z, y, 6)(q)
    theirs = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit(z, y).predict(q)
    assert (ours == theirs).mean() > 0.97


def test_tied_refuses_a_class_without_points() -> None:
    with pytest.raises(InputError, match=r"classes \[1\]"):
        fit_tied(np.zeros((3, 2)), np.array([0, 0, 2]), 3)


def test_linear_classifier_checks_shapes_and_breaks_ties_to_the_lowest_class() -> None:
    head = LinearClassifier(np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), np.zeros(3))
    np.testing.assert_array_equal(head(np.array([[2.0, 1.0], [0.0, 5.0]])), [0, 2])
    with pytest.raises(InputError, match="3-d"):
        head(np.zeros((1, 3)))
    with pytest.raises(InputError, match="finite"):
        LinearClassifier(np.array([[np.nan, 0.0]]), np.zeros(1))
