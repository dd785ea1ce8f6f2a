"""Paired comparison of two retrieval methods scored on the same queries.

Given per-query scores ``a_i`` and ``b_i`` (e.g. ``metrics.per_query(...)["map@10"]`` of two methods),
the differences ``d_i = a_i − b_i`` are compared two ways:

* a 95 % percentile bootstrap confidence interval of the mean difference ``d̄ = (1/n) Σ d_i``: draw
  ``B`` resamples of the n queries with replacement, take ``d̄*_b`` of each, and report the 2.5th and
  97.5th percentiles of ``{d̄*_b}``;
* a two-sided paired randomisation (sign-flip) test of H0 "a and b are exchangeable per query":
  under H0 every ``d_i`` is as likely to be ``−d_i``, so with random signs ``ε_i ∈ {−1, +1}``,
  ``p = (1 + #{b : |Σ ε_bi d_i| ≥ |Σ d_i|}) / (1 + B)``. When ``2^n ≤ B`` all sign patterns are
  enumerated and ``p = #{ε : |Σ ε_i d_i| ≥ |Σ d_i|} / 2^n`` is exact.

Both are vectorised over resamples, in chunks that bound memory to a few tens of MB.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hierqdrant.core.errors import InputError

__all__ = ["PairedResult", "paired_test"]

# Elements per chunk of resamples (chunk × n): ~32 MB of float64.
_CHUNK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class PairedResult:
    """The outcome of :func:`paired_test`.

    Attributes:
        mean_a, mean_b: the means of the two methods over the n paired queries.
        diff: mean(a − b).
        ci_low, ci_high: 95 % percentile-bootstrap confidence interval of ``diff``.
        p_value: two-sided paired sign-flip randomisation p-value of H0 "no difference".
        n: the number of paired queries used (pairs with a ``nan`` on either side are dropped).
    """

    mean_a: float
    mean_b: float
    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    n: int


def _chunks(total: int, n: int) -> list[int]:
    size = max(1, _CHUNK_ELEMENTS // max(n, 1))
    return [min(size, total - start) for start in range(0, total, size)]


def _bootstrap_means(d: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """d̄*_b = (1/n) Σ_i d[I_bi], I_bi uniform on {0 … n−1}, for b = 1 … B."""
    n = d.shape[0]
    parts = [d[rng.integers(0, n, size=(size, n))].mean(axis=1) for size in _chunks(n_resamples, n)]
    return np.concatenate(parts)


def _sign_flip_p(d: np.ndarray, n_resamples: int, rng: np.random.Generator) -> float:
    """Two-sided sign-flip p-value of |Σ d_i| (exact enumeration when 2^n ≤ n_resamples)."""
    n = d.shape[0]
    observed = abs(float(d.sum()))
    # Sums of the same numbers in another order may differ in the last bits: count those as ties.
    tol = 1e-9 * float(np.abs(d).sum())
    if n < 63 and (1 << n) <= n_resamples:
        patterns = np.arange(1 << n, dtype=np.int64)[:, None]
        signs = 1.0 - 2.0 * ((patterns >> np.arange(n)) & 1)
        return float(np.mean(np.abs(signs @ d) >= observed - tol))
    hits = 0
    for size in _chunks(n_resamples, n):
        signs = 1.0 - 2.0 * rng.integers(0, 2, size=(size, n), dtype=np.int8)
        hits += int(np.count_nonzero(np.abs(signs @ d) >= observed - tol))
    return (1 + hits) / (1 + n_resamples)


def paired_test(a: np.ndarray, b: np.ndarray, *, n_resamples: int = 10000, seed: int = 0) -> PairedResult:
    """Compare per-query scores ``a`` and ``b`` of two methods on the same queries.

    ``diff = mean(a − b)``; ``[ci_low, ci_high]`` = 2.5th / 97.5th percentiles of the bootstrap means
    of ``a − b`` (``n_resamples`` resamples); ``p_value`` = two-sided sign-flip test (see the module
    docstring). Pairs where either score is ``nan`` (a metric undefined for that query) are dropped.
    Identical inputs (all differences 0) give ``diff = 0``, CI ``[0, 0]`` and ``p = 1``; n = 1 gives a
    zero-width CI at the single difference and ``p = 1`` (both signs are equally extreme).
    The result depends only on the inputs, ``n_resamples`` and ``seed``.
    """
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise InputError(
            f"paired scores must be two 1-D arrays of equal length, got {x.shape} and {y.shape}",
            "pass one score per query for each method, in the same query order",
        )
    if int(n_resamples) != n_resamples or n_resamples < 1:
        raise InputError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    if np.isinf(x).any() or np.isinf(y).any():
        raise InputError("paired scores contain infinite values", "check the metric that produced them")
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    n = int(x.shape[0])
    if n == 0:
        raise InputError("no query has a score for both methods", "compare metrics defined on the same queries")
    d = x - y
    rng = np.random.default_rng(seed)
    boot = _bootstrap_means(d, int(n_resamples), rng)
    low, high = np.percentile(boot, [2.5, 97.5])
    p = _sign_flip_p(d, int(n_resamples), rng)
    return PairedResult(
        mean_a=float(x.mean()),
        mean_b=float(y.mean()),
        diff=float(d.mean()),
        ci_low=float(low),
        ci_high=float(high),
        p_value=float(min(1.0, p)),
        n=n,
    )
