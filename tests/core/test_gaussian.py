"""Gaussian math against values computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from hierqdrant.core.errors import InputError
from hierqdrant.core.gaussian import (
    Gaussians,
    Projection,
    bhattacharyya_distance_pairs,
    bhattacharyya_matrix,
    overlap_candidates,
)


def test_bc_of_two_1d_gaussians_by_hand() -> None:
    # N(0, 1) and N(1, 2): Σ = 1.5, D_B = 1/8·1/1.5 + 1/2·ln(1.5/√2) = 0.112779…, BC = 0.893348
    means = np.array([[0.0], [1.0]])
    covs = np.array([[[1.0]], [[2.0]]])
    bc = bhattacharyya_matrix(means, covs)
    assert bc[0, 1] == pytest.approx(0.8933479858, abs=1e-9)
    assert bc[1, 0] == bc[0, 1]
    assert bc[0, 0] == 1.0


def test_bc_of_two_2d_gaussians_by_hand() -> None:
    # μ1 = (0,0), Σ1 = diag(1,4); μ2 = (2,0), Σ2 = diag(3,4); Σ = diag(2,4)
    # D_B = 1/8·(4/2) + 1/2·ln(8/√(4·12)) = 0.25 + 0.0719205 = 0.3219205, BC = 0.7247558
    means = np.array([[0.0, 0.0], [2.0, 0.0]])
    covs = np.array([np.diag([1.0, 4.0]), np.diag([3.0, 4.0])])
    d_b = bhattacharyya_distance_pairs(means, covs, np.array([[0, 1]]))
    assert d_b[0] == pytest.approx(0.3219205181, abs=1e-9)
    assert bhattacharyya_matrix(means, covs)[0, 1] == pytest.approx(0.7247557930, abs=1e-9)


def test_bc_is_one_for_identical_gaussians_and_symmetric() -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((5, 5))
    cov = a @ a.T + np.eye(5)
    means = np.stack([np.ones(5), np.ones(5), np.zeros(5)])
    covs = np.stack([cov, cov, 2 * cov])
    bc = bhattacharyya_matrix(means, covs)
    assert bc[0, 1] == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(bc, bc.T)
    assert np.all((bc >= 0) & (bc <= 1 + 1e-12))


def test_pairs_in_small_chunks_match_one_chunk() -> None:
    rng = np.random.default_rng(1)
    k, d = 7, 4
    means = rng.standard_normal((k, d))
    covs = np.stack([(lambda a: a @ a.T + np.eye(d))(rng.standard_normal((d, d))) for _ in range(k)])
    pairs = np.stack(np.triu_indices(k, 1), axis=1)
    np.testing.assert_allclose(
        bhattacharyya_distance_pairs(means, covs, pairs, chunk=2),
        bhattacharyya_distance_pairs(means, covs, pairs),
    )


def test_pruning_never_drops_an_overlapping_pair() -> None:
    rng = np.random.default_rng(2)
    k, d = 40, 6
    means = rng.standard_normal((k, d)) * 3
    covs = np.stack([(lambda a: a @ a.T / d + 0.1 * np.eye(d))(rng.standard_normal((d, d))) for _ in range(k)])
    pairs = np.stack(np.triu_indices(k, 1), axis=1)
    bc = np.exp(-bhattacharyya_distance_pairs(means, covs, pairs))
    for t in (0.01, 0.1, 0.3, 0.7):
        keep = overlap_candidates(means, np.linalg.eigvalsh(covs)[:, -1], pairs, t)
        assert np.all(keep[bc >= t])
        assert keep.sum() < pairs.shape[0]  # and it does prune something


def test_pca_keeps_the_variance_share() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 10)) * np.array([10, 5, 3, 1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])
    p = Projection.fit(x, 0.95)
    assert p.explained_variance_ratio.sum() >= 0.95
    assert p.explained_variance_ratio[:-1].sum() < 0.95  # the fewest components that reach it
    assert Projection.fit(x, 4).dims == 4
    z = p.transform(x)
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-9)
    with pytest.raises(InputError, match="dimensions"):
        p.transform(np.zeros((2, 3)))
    with pytest.raises(InputError, match="between 1"):
        Projection.fit(x, 11)


def test_shrinkage_with_three_images_in_50_dims() -> None:
    rng = np.random.default_rng(0)
    z = rng.standard_normal((15, 50))
    labels = np.repeat(np.arange(5), 3)
    g = Gaussians.fit(z, labels, 5)
    assert np.all(np.linalg.eigvalsh(g.covariances) > 0)
    d2 = g.mahalanobis_squared(z)
    assert d2.shape == (15, 5)
    assert np.all(np.isfinite(d2))


def test_mahalanobis_against_direct_inverse() -> None:
    rng = np.random.default_rng(4)
    z = rng.standard_normal((60, 3)) @ np.diag([1.0, 2.0, 0.5])
    labels = np.repeat(np.arange(3), 20)
    g = Gaussians.fit(z, labels, 3)
    d2 = g.mahalanobis_squared(z[:5])
    for c in range(3):
        inv = np.linalg.inv(g.covariances[c])
        diff = z[:5] - g.means[c]
        np.testing.assert_allclose(d2[:, c], np.einsum("nd,de,ne->n", diff, inv, diff), rtol=1e-9)


def test_a_class_with_one_image_gets_the_pooled_covariance() -> None:
    rng = np.random.default_rng(5)
    z = rng.standard_normal((21, 4))
    labels = np.array([0] * 10 + [1] * 10 + [2])
    g = Gaussians.fit(z, labels, 3)
    assert g.tied is not None and g.tied.tolist() == [False, False, True]
    assert np.all(np.linalg.eigvalsh(g.covariances[2]) > 0)


def test_every_class_needs_an_image() -> None:
    with pytest.raises(InputError, match="no images"):
        Gaussians.fit(np.zeros((4, 2)), np.array([0, 0, 2, 2]), 3)


def test_log_determinant_from_cholesky_and_from_the_spectrum_agree() -> None:
    from hierqdrant.core.gaussian import eigenvalues, log_determinants

    rng = np.random.default_rng(6)
    covs = np.stack([(lambda a: a @ a.T + np.eye(7))(rng.standard_normal((7, 7))) for _ in range(300)])
    np.testing.assert_allclose(log_determinants(covs, chunk=64), np.log(eigenvalues(covs, chunk=100)).sum(axis=1))
    np.testing.assert_allclose(log_determinants(covs[:1]), [np.linalg.slogdet(covs[0])[1]])


def test_nearest_class_equals_the_float64_argmin() -> None:
    from hierqdrant.core.gaussian import NearestClass, mahalanobis_squared

    rng = np.random.default_rng(11)
    z = rng.standard_normal((600, 6)) * 3 + np.repeat(rng.standard_normal((30, 6)) * 2, 20, axis=0)
    g = Gaussians.fit(z, np.repeat(np.arange(30), 20), 30)
    w, b = g.whitening()
    queries = rng.standard_normal((500, 6)) * 4
    want = np.argmin(mahalanobis_squared(queries, w, b), axis=1)
    nearest = NearestClass.of(w, b)
    np.testing.assert_array_equal(nearest(queries, chunk=64), want)
    np.testing.assert_array_equal([nearest(q)[0] for q in queries[:100]], want[:100])


def test_nearest_class_settles_float32_ties_in_float64() -> None:
    from hierqdrant.core.gaussian import NearestClass, mahalanobis_squared

    # Three classes whose means differ by less than float32 can tell apart at this distance.
    d = 4
    w = np.stack([np.eye(d)] * 3)
    means = np.array([[1000.0, 0, 0, 0], [1000.0 + 1e-9, 0, 0, 0], [1000.0 - 1e-9, 0, 0, 0]])
    b = np.einsum("kij,kj->ki", w, means)
    queries = np.array([[0.0, 1, 2, 3], [2000.0, 0, 0, 0], [1000.0, 5, 0, 0]])
    want = np.argmin(mahalanobis_squared(queries, w, b), axis=1)
    assert want.tolist() == [2, 1, 0]
    nearest = NearestClass.of(w, b)
    np.testing.assert_array_equal(nearest(queries), want)
    assert [int(nearest(q[None])[0]) for q in queries] == want.tolist()  # the one-row path too


def test_pooled_gaussians_are_the_moments_of_the_union() -> None:
    """Two groups' mixture moments equal the mean and (biased) covariance of their points pooled."""
    rng = np.random.default_rng(4)
    parts = [rng.normal(size=(n, 3)) + shift for n, shift in ((30, 0.0), (50, 4.0), (20, -2.0))]
    y = np.repeat([0, 1, 2], [30, 50, 20])

    def plain(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return points.mean(axis=0), np.cov(points.T, bias=True)

    # Unshrunk sub-class Gaussians, so the pooled one must match the union's moments exactly.
    stats = [plain(p) for p in parts]
    g = Gaussians(np.stack([m for m, _ in stats]), np.stack([c for _, c in stats]), np.bincount(y))
    pooled = g.pooled(np.array([0, 1, 1]), 2)
    union = np.concatenate(parts[1:])
    np.testing.assert_allclose(pooled.means[1], union.mean(axis=0))
    np.testing.assert_allclose(pooled.covariances[1], np.cov(union.T, bias=True), atol=1e-12)
    np.testing.assert_allclose(pooled.means[0], parts[0].mean(axis=0))
    assert pooled.counts.tolist() == [30, 70]
    with pytest.raises(InputError):
        g.pooled(np.array([0, 0, 0]), 2)  # group 1 has no member
