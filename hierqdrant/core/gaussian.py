"""PCA, shrunk class Gaussians, the Bhattacharyya coefficient and Mahalanobis leaf assignment.

All heavy arithmetic is vectorised: Bhattacharyya coefficients are computed for chunks of class pairs
with one batched Cholesky factorisation per chunk, and Mahalanobis distances for chunks of points
against all classes with one batched matrix product.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy.linalg import solve_triangular

from hierqdrant.core.errors import InputError
from hierqdrant.core.features import check_scale

Estimator = Literal["ledoit-wolf", "oas"]
ESTIMATORS: tuple[str, ...] = ("ledoit-wolf", "oas")

# Floor added to every covariance's diagonal, relative to the mean per-dimension variance, so a class
# whose images are all identical still has a positive-definite covariance.
_RIDGE = 1e-6


@dataclass
class Projection:
    """Centring and PCA projection: ``z = (x − mean) · componentsᵀ``."""

    mean: np.ndarray  # (D,)
    components: np.ndarray  # (d, D), orthonormal rows
    explained_variance_ratio: np.ndarray  # (d,)

    @property
    def input_dims(self) -> int:
        return int(self.mean.shape[0])

    @property
    def dims(self) -> int:
        return int(self.components.shape[0])

    @classmethod
    def fit(cls, features: np.ndarray, n_components: int | float | None = 0.95) -> Projection:
        """Fit PCA on ``features`` (N, D).

        ``n_components``: a float in (0, 1] keeps the fewest components whose explained variance
        reaches that share (the paper: 0.95); an int keeps that many; ``None`` keeps all.
        """
        from sklearn.decomposition import PCA

        x = np.asarray(features, dtype=np.float64)
        n, dim = x.shape
        limit = min(n, dim)
        if isinstance(n_components, float) and n_components == 1.0:
            n_components = None
        if isinstance(n_components, float):
            if not 0.0 < n_components < 1.0:
                raise InputError(
                    f"PCA variance share {n_components:g} is not in (0, 1]",
                    "e.g. pca=0.95 (a share), pca=64 (an int: components) or pca=None (all)",
                )
        elif isinstance(n_components, int):
            if not 1 <= n_components <= limit:
                raise InputError(f"PCA components {n_components} is not between 1 and min(images, dims) = {limit}")
        check_spread(x)
        pca = PCA(n_components=n_components, svd_solver="full")
        pca.fit(x)
        return cls(
            mean=pca.mean_.astype(np.float64),
            components=pca.components_.astype(np.float64),
            explained_variance_ratio=pca.explained_variance_ratio_.astype(np.float64),
        )

    def transform(self, features: np.ndarray) -> np.ndarray:
        x = np.asarray(features, dtype=np.float64)
        if x.ndim == 1:
            x = x[None, :]
        if x.shape[-1] != self.input_dims:
            raise InputError(
                f"features have {x.shape[-1]} dimensions but the model expects {self.input_dims}",
                "use features from the same extractor the model was fitted on",
            )
        return (x - self.mean) @ self.components.T


def check_spread(x: np.ndarray) -> None:
    """Refuse features without variance: every image the same vector leaves no direction for PCA, and
    every centred (stored) vector would be zero, so every cosine 0. Relative to the features' size, so a
    constant extractor's rounding noise counts as none."""
    check_scale(x)  # squares that overflow or underflow would look like no spread at all
    spread = float(x.var(axis=0).sum())
    if not spread > _FLAT * float(np.mean(x * x) * x.shape[1]):
        raise InputError(
            f"the features have zero variance after centring: all {x.shape[0]} images give the same vector",
            "check the backbone and its weights (or the features file): a constant extractor cannot be indexed",
        )


# Below this share of the features' mean square (a spread under a millionth of their size, a few float32
# roundings), the variance is noise: a constant extractor.
_FLAT = 1e-12


def shrunk_covariance(points: np.ndarray, estimator: Estimator = "ledoit-wolf") -> tuple[np.ndarray, float]:
    """Covariance of ``points`` (n, d) shrunk toward ``μ·I`` (μ = mean variance); returns (Σ, shrinkage).

    Ledoit–Wolf or OAS from scikit-learn: ``Σ = (1 − s)·S + s·μ·I`` with the shrinkage ``s`` that
    minimises the expected squared error; well conditioned even when n < d.
    """
    from sklearn.covariance import ledoit_wolf, oas

    if estimator == "ledoit-wolf":
        cov, shrink = ledoit_wolf(points)
    elif estimator == "oas":
        cov, shrink = oas(points)
    else:
        raise InputError(f"unknown covariance estimator {estimator!r}", f"use one of {', '.join(ESTIMATORS)}")
    return np.asarray(cov, dtype=np.float64), float(shrink)


@dataclass
class Gaussians:
    """One Gaussian per class (or node) in PCA space: means (K, d), covariances (K, d, d)."""

    means: np.ndarray
    covariances: np.ndarray
    counts: np.ndarray  # (K,) images per class
    estimator: str = "ledoit-wolf"
    tied: np.ndarray | None = None  # (K,) bool: classes with < 2 images that use the pooled covariance

    @property
    def num(self) -> int:
        return int(self.means.shape[0])

    @property
    def dims(self) -> int:
        return int(self.means.shape[1])

    @classmethod
    def fit(
        cls, points: np.ndarray, labels: np.ndarray, num_classes: int, estimator: Estimator = "ledoit-wolf"
    ) -> Gaussians:
        """Mean and shrunk covariance of every class's points.

        A class with a single image has no spread of its own: it gets the pooled within-class
        covariance of the other classes (marked in ``tied``). Every class needs at least one image.
        """
        z = np.asarray(points, dtype=np.float64)
        labels = np.asarray(labels)
        d = z.shape[1]
        counts = np.bincount(labels, minlength=num_classes)
        empty = np.flatnonzero(counts == 0)
        if empty.size:
            raise InputError(
                f"classes {empty.tolist()[:8]} have no images",
                "drop them from the class list or add images",
            )
        order = np.argsort(labels, kind="stable")
        bounds = np.concatenate([[0], np.cumsum(counts)])
        means = np.zeros((num_classes, d))
        covs = np.zeros((num_classes, d, d))
        tied = counts < 2
        for c in range(num_classes):
            members = z[order[bounds[c] : bounds[c + 1]]]
            means[c] = members.mean(axis=0)
            if not tied[c]:
                covs[c] = shrunk_covariance(members, estimator)[0]
        if tied.any():
            if tied.all():
                raise InputError(
                    "every class has a single image: no covariance can be estimated",
                    "give at least one class two or more images",
                )
            centred = z - means[labels]
            pooled_rows = centred[~tied[labels]]
            covs[tied] = shrunk_covariance(pooled_rows, estimator)[0]
        covs = add_ridge(covs)
        return cls(means=means, covariances=covs, counts=counts, estimator=estimator, tied=tied)

    def pooled(self, group_of: np.ndarray, num_groups: int) -> Gaussians:
        """The Gaussian of each group of these as their mixture's moments (groups: ``group_of`` (K,)):
        ``n_g = Σ n_s``, ``μ_g = Σ n_s μ_s / n_g``, ``Σ_g = Σ n_s (Σ_s + (μ_s − μ_g)(μ_s − μ_g)ᵀ) / n_g``
        — a class from its sub-classes when the points are not at hand."""
        g = np.asarray(group_of, dtype=np.int64)
        n = self.counts.astype(np.float64)
        total = np.bincount(g, weights=n, minlength=num_groups)
        if (total <= 0).any():
            raise InputError(f"groups {np.flatnonzero(total <= 0).tolist()[:8]} have no images")
        means = np.zeros((num_groups, self.dims))
        np.add.at(means, g, n[:, None] * self.means)
        means /= total[:, None]
        spread = self.means - means[g]
        covs = np.zeros((num_groups, self.dims, self.dims))
        np.add.at(covs, g, n[:, None, None] * (self.covariances + spread[:, :, None] * spread[:, None, :]))
        covs /= total[:, None, None]
        return Gaussians(means, covs, total.astype(np.int64), self.estimator, np.zeros(num_groups, dtype=bool))

    def whitening(self) -> tuple[np.ndarray, np.ndarray]:
        """``W_c = L_c⁻¹`` (K, d, d) with ``Σ_c = L_c L_cᵀ``, and ``b_c = W_c μ_c`` (K, d)."""
        chol = _cholesky(self.covariances)
        eye = np.broadcast_to(np.eye(self.dims), chol.shape)
        # Contiguous, so mahalanobis_squared's stacked (K·d, d) view needs no copy per call.
        w = np.ascontiguousarray(solve_triangular(chol, eye, lower=True, check_finite=False))
        return w, np.einsum("kij,kj->ki", w, self.means)

    def mahalanobis_squared(self, points: np.ndarray, chunk: int = 4096) -> np.ndarray:
        """(N, K) squared Mahalanobis distances ``(x − μ_c)ᵀ Σ_c⁻¹ (x − μ_c) = ‖W_c x − b_c‖²``."""
        w, b = self.whitening()
        return mahalanobis_squared(points, w, b, chunk=chunk)


def mahalanobis_squared(points: np.ndarray, w: np.ndarray, b: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """(N, K) ``‖W_c x − b_c‖²`` for whitening matrices ``w`` (K, d, d) and offsets ``b`` (K, d).

    One matrix product per chunk of points on the stacked (K·d, d) matrix. BLAS runs on one thread:
    these products are small, and on a busy machine spinning BLAS threads made them 10–30× slower.
    """
    z = np.asarray(points, dtype=np.float64)
    if z.ndim == 1:
        z = z[None, :]
    k, d, _ = w.shape
    stacked = w.reshape(k * d, d)
    offsets = b.reshape(k * d, 1)
    out = np.empty((z.shape[0], k))
    # Bound the (K·d, chunk) intermediate to ~64 MB.
    step = max(1, min(chunk, (8 << 20) // max(1, k * d)))
    with _blas_controller().limit(limits=1, user_api="blas"):
        for start in range(0, z.shape[0], step):
            block = z[start : start + step]
            proj = (stacked @ block.T - offsets).reshape(k, d, -1)
            out[start : start + step] = np.einsum("kdn,kdn->nk", proj, proj)
    return out


# Unit roundoff of float32.
_U32 = float(np.finfo(np.float32).eps) / 2


@dataclass(frozen=True)
class NearestClass:
    """``argmin_c ‖W_c x − b_c‖²`` (the Mahalanobis leaf), screened in float32 and settled in float64.

    The float32 pass reads half the memory of a float64 one (the stacked W is K·d² numbers, megabytes
    that a single query has to stream in). Rounding bounds it: each float32 residual is off by at most
    ``E_c = γ (‖W_c‖_F ‖x‖ + ‖b_c‖)`` with ``γ = 2(d + 4)u``, so the float32 distance is within
    ``β_c = 2(√d₃₂ + E_c) E_c + E_c² + γ d₃₂`` of the exact one. Classes whose interval
    ``[d₃₂ − β, d₃₂ + β]`` can hold the minimum are recomputed in float64; usually there is one.
    """

    w: np.ndarray  # (K, d, d) float64 whitening matrices
    b: np.ndarray  # (K, d) float64 offsets
    stacked32: np.ndarray  # (K·d, d) float32
    b32: np.ndarray  # (K·d,) float32
    w_norm: np.ndarray  # (K,) ‖W_c‖_F
    b_norm: np.ndarray  # (K,) ‖b_c‖
    w_norm_max: float
    b_norm_max: float

    @classmethod
    def of(cls, w: np.ndarray, b: np.ndarray) -> NearestClass:
        k, d, _ = w.shape
        w_norm = np.sqrt(np.einsum("kij,kij->k", w, w))
        b_norm = np.linalg.norm(b, axis=1)
        return cls(
            w=w,
            b=b,
            stacked32=np.ascontiguousarray(w.reshape(k * d, d), dtype=np.float32),
            b32=np.ascontiguousarray(b.reshape(k * d), dtype=np.float32),
            w_norm=w_norm,
            b_norm=b_norm,
            w_norm_max=float(w_norm.max()),
            b_norm_max=float(b_norm.max()),
        )

    def __call__(self, points: np.ndarray, chunk: int = 4096) -> np.ndarray:
        z = np.atleast_2d(np.asarray(points, dtype=np.float64))
        k, d, _ = self.w.shape
        gamma = 2 * (d + 4) * _U32
        out = np.empty(z.shape[0], dtype=np.int64)
        step = max(1, min(chunk, (16 << 20) // max(1, k * d)))  # (rows, K·d) float32 ≤ 64 MB
        with _blas_controller().limit(limits=1, user_api="blas"):
            if z.shape[0] == 1 and (one := self._one(z[0], gamma)) is not None:
                out[0] = one  # a single query: no per-class bookkeeping when the minimum is clear
                return out
            for start in range(0, z.shape[0], step):
                block = z[start : start + step]
                r = block.astype(np.float32) @ self.stacked32.T
                r -= self.b32
                r3 = r.reshape(-1, k, d)
                d32 = np.einsum("nkd,nkd->nk", r3, r3).astype(np.float64)
                e = gamma * (np.linalg.norm(block, axis=1)[:, None] * self.w_norm + self.b_norm)
                slack = 2 * (np.sqrt(d32) + e) * e + e * e + gamma * d32
                maybe = d32 - slack <= (d32 + slack).min(axis=1, keepdims=True)
                out[start : start + step] = self._settle(block, maybe)
        return out

    def _one(self, x: np.ndarray, gamma: float) -> int | None:
        """The class of one row when the two smallest float32 distances are apart by more than their
        bounds (with the largest ‖W_c‖, ‖b_c‖ for every class); None when it needs :meth:`_settle`."""
        k, d, _ = self.w.shape
        r = self.stacked32 @ x.astype(np.float32)
        r -= self.b32
        r2 = r.reshape(k, d)
        d32 = np.einsum("kd,kd->k", r2, r2)
        if k < 2:
            return 0
        first, second = (float(v) for v in np.partition(d32, 1)[:2])
        e = gamma * (float(np.linalg.norm(x)) * self.w_norm_max + self.b_norm_max)

        def slack(v: float) -> float:
            return 2 * (v**0.5 + e) * e + e * e + gamma * v

        # x − slack(x) grows with x once √x > e/(1 − γ), so the runner-up bounds every other class.
        if second**0.5 > 2 * e and second - slack(second) > first + slack(first):
            return int(np.argmin(d32))
        return None

    def _settle(self, block: np.ndarray, maybe: np.ndarray) -> np.ndarray:
        """The argmin per row among the classes ``maybe`` marks: free where one is marked, else float64."""
        leaf = np.argmax(maybe, axis=1)
        rows = np.flatnonzero(maybe.sum(axis=1) > 1)
        if rows.size:
            exact = np.full((rows.size, maybe.shape[1]), np.inf)
            r_idx, c_idx = np.nonzero(maybe[rows])
            for a in range(0, r_idx.size, 256):  # bounds the gathered (pairs, d, d) stack
                ri, ci = r_idx[a : a + 256], c_idx[a : a + 256]
                res = np.einsum("pij,pj->pi", self.w[ci], block[rows[ri]]) - self.b[ci]
                exact[ri, ci] = np.einsum("pi,pi->p", res, res)
            leaf[rows] = np.argmin(exact, axis=1)
        return leaf


@functools.cache
def _blas_controller() -> Any:
    """One threadpoolctl controller per process (building one scans the loaded libraries: ~4 ms)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def add_ridge(covs: np.ndarray) -> np.ndarray:
    """``Σ + ε·I`` in place, with ε = 1e-6 × the mean per-dimension variance of the stack."""
    d = covs.shape[-1]
    scale = float(np.trace(covs, axis1=-2, axis2=-1).mean()) / d
    diagonal = np.einsum("...ii->...i", covs)  # a writable view of every diagonal
    diagonal += _RIDGE * (scale if scale > 0 else 1.0)
    return covs


def _cholesky(mats: np.ndarray) -> np.ndarray:
    try:
        return np.linalg.cholesky(mats)
    except np.linalg.LinAlgError:
        raise InputError(
            "a class covariance is not positive definite",
            "check the features for constant or duplicated columns",
        ) from None


def log_determinants(covs: np.ndarray, chunk: int = 256) -> np.ndarray:
    """``ln det Σ`` for a stack (K, d, d), via Cholesky: ``2 Σ_i ln L_ii`` (in chunks to bound memory)."""
    out = np.empty(covs.shape[0])
    for start, stop in _chunks(covs.shape[0], chunk):
        chol = _cholesky(covs[start:stop])
        out[start:stop] = 2.0 * np.log(np.diagonal(chol, axis1=-2, axis2=-1)).sum(axis=-1)
    return out


def bhattacharyya_distance_pairs(
    means: np.ndarray,
    covs: np.ndarray,
    pairs: np.ndarray,
    logdets: np.ndarray | None = None,
    chunk: int | None = None,
) -> np.ndarray:
    """Bhattacharyya distance for the given class pairs (P, 2).

    ``D_B = ⅛ Δμᵀ Σ⁻¹ Δμ + ½ ln( det Σ / √(det Σ_i det Σ_j) )`` with ``Σ = (Σ_i + Σ_j)/2``.
    Each chunk of pairs is factorised with one batched Cholesky: ``Σ = L Lᵀ`` gives
    ``ln det Σ = 2 Σ ln L_kk`` and ``Δμᵀ Σ⁻¹ Δμ = ‖L⁻¹ Δμ‖²``.
    """
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    d = means.shape[1]
    if logdets is None:
        logdets = log_determinants(covs)
    if chunk is None:
        chunk = max(1, (32 << 20) // (8 * d * d))  # ~32 MB of matrices per chunk
    out = np.empty(pairs.shape[0])
    for start, stop in _chunks(pairs.shape[0], chunk):
        i, j = pairs[start:stop, 0], pairs[start:stop, 1]
        sigma = 0.5 * (covs[i] + covs[j])
        chol = _cholesky(sigma)
        delta = (means[i] - means[j])[:, :, None]
        white = solve_triangular(chol, delta, lower=True, check_finite=False)[:, :, 0]
        maha = np.einsum("pd,pd->p", white, white)
        logdet = 2.0 * np.log(np.diagonal(chol, axis1=-2, axis2=-1)).sum(axis=-1)
        out[start:stop] = maha / 8.0 + 0.5 * (logdet - 0.5 * (logdets[i] + logdets[j]))
    return out


def bhattacharyya_matrix(means: np.ndarray, covs: np.ndarray) -> np.ndarray:
    """(K, K) Bhattacharyya coefficients ``BC = exp(−D_B) ∈ [0, 1]``; 1 on the diagonal."""
    k = means.shape[0]
    iu = np.triu_indices(k, 1)
    pairs = np.stack(iu, axis=1)
    bc = np.eye(k)
    if pairs.size:
        values = np.exp(-bhattacharyya_distance_pairs(means, covs, pairs))
        bc[iu] = values
        bc[iu[1], iu[0]] = values
    return bc


def eigenvalues(covs: np.ndarray, chunk: int = 256) -> np.ndarray:
    """(K, d) ascending eigenvalues of a stack of symmetric matrices (in chunks to bound memory).

    One decomposition gives both what the overlap builder needs: ``ln det Σ = Σ ln λ`` and ``λ_max``.
    """
    return np.concatenate([np.linalg.eigvalsh(covs[a:b]) for a, b in _chunks(covs.shape[0], chunk)])


def overlap_candidates(means: np.ndarray, lam_max: np.ndarray, pairs: np.ndarray, threshold: float) -> np.ndarray:
    """Mask of the pairs whose BC may reach ``threshold``; the others provably have BC < t.

    The log-determinant term of D_B is ≥ 0 (ln det is concave), and
    ``Δμᵀ Σ⁻¹ Δμ ≥ ‖Δμ‖² / λ_max(Σ) ≥ 2‖Δμ‖² / (λ_max(Σ_i) + λ_max(Σ_j))``, so
    ``D_B ≥ ‖Δμ‖² / (4 (λ_max(Σ_i) + λ_max(Σ_j)))``; BC ≥ t needs that bound ≤ −ln t.
    """
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    i, j = pairs[:, 0], pairs[:, 1]
    # ‖μ_i − μ_j‖² from the Gram matrix (no (P, d) temporary); the slack covers the cancellation error.
    sq = np.einsum("kd,kd->k", means, means)
    gram = means @ means.T
    gap = sq[i] + sq[j] - 2.0 * gram[i, j]
    gap = np.maximum(gap - 1e-9 * (sq[i] + sq[j]), 0.0)
    lower = gap / (4.0 * (lam_max[i] + lam_max[j]))
    # A hair of slack keeps rounding from pruning a pair that sits exactly at the threshold.
    return np.asarray(lower <= -np.log(threshold) * (1 + 1e-9) + 1e-12, dtype=bool)


def _chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, size):
        yield start, min(n, start + size)
