"""Retrieval metrics, vectorised over queries (DESIGN.md §6).

Every function takes rankings that the caller has already cut and from which it has already removed the
query itself:

* ``retrieved`` — ``(Q, n)`` integer array: the class labels of the retrieved items, best first.
  ``-1`` marks a missing position (a row shorter than ``n``, e.g. a database smaller than ``k``);
  a missing position is never relevant and has hierarchical similarity 0.
* ``query_labels`` — ``(Q,)`` integer array: the class of each query.
* ``class_counts`` — ``(K,)``: the number of database items of each class. With ``self_in_db=True``
  (leave-one-out: the queries are database items, excluded from their own ranking) the query's own
  class counts one item fewer, both for ``R`` and for the ideal ranking of mAHP.
* ``lca_height`` — ``(K, K)``: the height of the lowest common ancestor of two classes (0 on the
  diagonal) and ``tree_height`` ``H`` = the height of the root. Say which hierarchy scores the
  hierarchical metrics (a given taxonomy or the learned one) wherever the numbers are reported.

Notation: ``rel_i = 1`` if the item at rank ``i`` has the query's class, ``P@i = (1/i) Σ_{j≤i} rel_j``.

Every ``*_per_query`` function returns a ``(Q,)`` float array; a query on which a metric is undefined
(``R_q = 0`` for map@r, a correct top-1 for severity, no retrieved item for hdist) gets ``nan``. The
aggregate is the mean over the queries where it is defined (``nan`` if there is none), so
``evaluate(...)[key] == nanmean(per_query(...)[key])`` for every key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, TypedDict

import numpy as np

from hierqdrant.core.errors import InputError

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "MetricOptions",
    "evaluate",
    "hdist_at_k",
    "hdist_at_k_per_query",
    "hierarchical_precision",
    "mahp_at_k",
    "mahp_at_k_per_query",
    "map_at_k",
    "map_at_k_per_query",
    "map_at_r",
    "map_at_r_per_query",
    "per_query",
    "precision_at_1",
    "precision_at_1_per_query",
    "severity",
    "severity_per_query",
]

MISSING = -1
DEFAULT_KS: tuple[int, ...] = (1, 5, 10, 20, 100, 250)


# ---------------------------------------------------------------------------------------------- checks


def _rankings(retrieved: np.ndarray, query_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ret = np.asarray(retrieved)
    lab = np.asarray(query_labels)
    if ret.ndim == 1 and lab.ndim == 1 and ret.shape[0] == lab.shape[0] == 0:
        ret = ret.reshape(0, 0)
    if ret.ndim != 2:
        raise InputError(
            f"retrieved must be a 2-D (queries × ranks) array, got shape {ret.shape}",
            "pass one row of retrieved class labels per query, padded with -1",
        )
    if lab.ndim != 1 or lab.shape[0] != ret.shape[0]:
        raise InputError(
            f"query_labels has shape {lab.shape} but retrieved has {ret.shape[0]} rows",
            "pass one class label per query",
        )
    for name, arr in (("retrieved", ret), ("query_labels", lab)):
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise InputError(
                f"{name} must hold integer class labels, got dtype {arr.dtype}",
                "convert it with .astype(int)",
            )
    ret = ret.astype(np.int64, copy=False)
    lab = lab.astype(np.int64, copy=False)
    if ret.size and int(ret.min()) < MISSING:
        raise InputError("retrieved holds negative labels other than -1", "pad missing ranks with -1 only")
    if lab.size and int(lab.min()) < 0:
        raise InputError("query_labels holds negative labels", "give every query its class index")
    return ret, lab


def _check_classes(ret: np.ndarray, lab: np.ndarray, num_classes: int, what: str) -> None:
    top = max(int(ret.max()) if ret.size else -1, int(lab.max()) if lab.size else -1)
    if top >= num_classes:
        raise InputError(
            f"class label {top} is out of range for {what} with {num_classes} classes",
            "use class indices 0 … K-1 matching the hierarchy and the class counts",
        )


def _check_k(k: int, minimum: int = 1) -> int:
    if int(k) != k or int(k) < minimum:
        raise InputError(f"k must be an integer ≥ {minimum}, got {k!r}")
    return int(k)


def _cut(ret: np.ndarray, k: int) -> np.ndarray:
    """The first k columns; missing columns (k > n) are padded with -1, i.e. count as missing."""
    if ret.shape[1] >= k:
        return ret[:, :k]
    pad = np.full((ret.shape[0], k - ret.shape[1]), MISSING, dtype=ret.dtype)
    return np.concatenate([ret, pad], axis=1)


def _counts(class_counts: np.ndarray | Sequence[int]) -> np.ndarray:
    counts = np.asarray(class_counts)
    if counts.ndim != 1 or counts.size == 0:
        raise InputError(f"class_counts must be a non-empty 1-D array, got shape {counts.shape}")
    if not np.issubdtype(counts.dtype, np.integer):
        if not np.all(np.isfinite(counts)) or not np.all(counts == np.round(counts)):
            raise InputError("class_counts must hold whole numbers of database items")
    counts = counts.astype(np.int64)
    if int(counts.min()) < 0:
        raise InputError("class_counts holds negative counts")
    return counts


def _relevant_counts(lab: np.ndarray, counts: np.ndarray, self_in_db: bool) -> np.ndarray:
    """R_q = class_counts[y_q] − [self_in_db]."""
    r = counts[lab] - int(bool(self_in_db))
    if r.size and int(r.min()) < 0:
        bad = int(lab[np.argmin(r)])
        raise InputError(
            f"class {bad} has no database item but self_in_db=True says the query is one",
            "pass self_in_db=False when the queries are not in the database",
        )
    return r


def _lca(lca_height: np.ndarray) -> np.ndarray:
    h = np.asarray(lca_height)
    if h.ndim != 2 or h.shape[0] != h.shape[1] or h.shape[0] == 0:
        raise InputError(
            f"lca_height must be a square (K, K) array, got shape {h.shape}",
            "pass Hierarchy.lca_height_matrix()",
        )
    if not np.all(np.isfinite(h)) or float(h.min()) < 0:
        raise InputError("lca_height must hold finite heights ≥ 0", "pass Hierarchy.lca_height_matrix()")
    return h


def _nanmean(x: np.ndarray) -> float:
    ok = ~np.isnan(x)
    return float(x[ok].mean()) if ok.any() else float("nan")


# ------------------------------------------------------------------------------------ flat metrics


def _ap_rows(rel: np.ndarray, cutoff: np.ndarray) -> np.ndarray:
    """(1/c_q) Σ_{i≤c_q} rel_i · P@i for per-row cut-offs c_q ≥ 1 (rel has ≥ max c_q columns)."""
    ranks = np.arange(1, rel.shape[1] + 1)
    prec = np.cumsum(rel, axis=1) / ranks
    inside = ranks[None, :] <= cutoff[:, None]
    return (rel * prec * inside).sum(axis=1) / cutoff


def map_at_k_per_query(retrieved: np.ndarray, query_labels: np.ndarray, k: int) -> np.ndarray:
    """Per-query AP@k as in the paper's code: AP@k_q = (1/k) Σ_{i≤k} rel_i · P@i.

    The sum is divided by ``k``, not by the number of relevant items, so a query whose class has fewer
    than ``k`` other members cannot reach 1. Missing positions (``-1``, or ``k`` beyond the columns
    given) are not relevant.
    """
    ret, lab = _rankings(retrieved, query_labels)
    k = _check_k(k)
    rel = (_cut(ret, k) == lab[:, None]).astype(np.float64)
    return _ap_rows(rel, np.full(ret.shape[0], k, dtype=np.float64))


def map_at_k(retrieved: np.ndarray, query_labels: np.ndarray, k: int) -> float:
    """map@k = mean over queries of (1/k) Σ_{i≤k} rel_i · P@i (see :func:`map_at_k_per_query`)."""
    return _nanmean(map_at_k_per_query(retrieved, query_labels, k))


def map_at_r_per_query(
    retrieved: np.ndarray,
    query_labels: np.ndarray,
    class_counts: np.ndarray | Sequence[int],
    self_in_db: bool = False,
) -> np.ndarray:
    """Per-query AP@R_q = (1/R_q) Σ_{i≤R_q} rel_i · P@i, with R_q = class_counts[y_q] − [self_in_db].

    ``R_q`` is the number of database items of the query's class other than the query itself, so this
    is also R-precision-weighted AP ("MAP@R"). A query with ``R_q = 0`` (the only member of its class
    under leave-one-out, or a class absent from the database) has nothing to retrieve: it gets ``nan``
    and is excluded from the mean. ``retrieved`` must have at least ``max_q R_q`` columns (missing
    positions padded with ``-1``); fewer raise :class:`~hierqdrant.core.errors.InputError`, because the
    ranking would have been cut too early.
    """
    ret, lab = _rankings(retrieved, query_labels)
    counts = _counts(class_counts)
    _check_classes(ret, lab, counts.shape[0], "class_counts")
    r = _relevant_counts(lab, counts, self_in_db)
    out = np.full(ret.shape[0], np.nan)
    if ret.shape[0] == 0:
        return out
    r_max = int(r.max())
    if r_max > ret.shape[1]:
        raise InputError(
            f"map@r needs the top {r_max} results of every query (the largest R), got {ret.shape[1]} columns",
            f"retrieve at least {r_max} items per query",
        )
    ok = r > 0
    if ok.any():
        rel = (ret[ok, :r_max] == lab[ok, None]).astype(np.float64)
        out[ok] = _ap_rows(rel, r[ok].astype(np.float64))
    return out


def map_at_r(
    retrieved: np.ndarray,
    query_labels: np.ndarray,
    class_counts: np.ndarray | Sequence[int],
    self_in_db: bool = False,
) -> float:
    """map@r = mean over queries with R_q > 0 of (1/R_q) Σ_{i≤R_q} rel_i · P@i (queries with R_q = 0
    are excluded; ``nan`` if none is left). See :func:`map_at_r_per_query`."""
    return _nanmean(map_at_r_per_query(retrieved, query_labels, class_counts, self_in_db))


def precision_at_1_per_query(retrieved: np.ndarray, query_labels: np.ndarray) -> np.ndarray:
    """Per-query P@1 = rel_1 (1 if the first result has the query's class; 0 if wrong or missing)."""
    ret, lab = _rankings(retrieved, query_labels)
    return (_cut(ret, 1)[:, 0] == lab).astype(np.float64)


def precision_at_1(retrieved: np.ndarray, query_labels: np.ndarray) -> float:
    """p@1 = mean over queries of rel_1."""
    return _nanmean(precision_at_1_per_query(retrieved, query_labels))


# ----------------------------------------------------------------------------- hierarchical metrics


def _similarity(lca_height: np.ndarray, tree_height: float | None) -> np.ndarray:
    h = _lca(lca_height).astype(np.float64)
    big_h = float(h.max()) if tree_height is None else float(tree_height)
    if not np.isfinite(big_h) or big_h <= 0:
        raise InputError(f"tree_height must be > 0, got {tree_height!r}", "pass Hierarchy.tree_height")
    if float(h.max()) > big_h:
        raise InputError(
            f"lca_height reaches {h.max():g}, above tree_height {big_h:g}",
            "pass the hierarchy's own tree_height",
        )
    return 1.0 - h / big_h


def _ideal_cumsum(sim: np.ndarray, counts: np.ndarray, lab: np.ndarray, k: int, self_in_db: bool) -> np.ndarray:
    """(Q, k): the best possible Σ_{j≤i} s(y_q, ·) over any i database items, i = 1 … k.

    The ideal ranking lists the classes by decreasing similarity to y_q, each repeated as many times
    as it has database items (one fewer for y_q under leave-one-out); positions past the end of the
    database add 0. It depends on y_q only, so it is built once per distinct query class.
    """
    classes, inverse = np.unique(lab, return_inverse=True)
    u, num_classes = classes.shape[0], counts.shape[0]
    c = np.broadcast_to(counts, (u, num_classes)).copy()
    if self_in_db:
        c[np.arange(u), classes] -= 1
    s = sim[classes]
    order = np.argsort(-s, axis=1, kind="stable")
    s_sorted = np.take_along_axis(s, order, axis=1)
    cum = np.cumsum(np.take_along_axis(c, order, axis=1), axis=1)
    # One searchsorted for all rows: offset each row so the flattened array stays sorted; j = the
    # first class (in similarity order) whose cumulative count reaches position i.
    stride = int(cum[:, -1].max()) + k + 1
    rows = np.arange(u)[:, None]
    flat = (cum + rows * stride).ravel()
    pos = rows * stride + np.arange(1, k + 1)[None, :]
    j = np.searchsorted(flat, pos.ravel(), side="left").reshape(u, k) - rows * num_classes
    ideal = np.where(j < num_classes, np.take_along_axis(s_sorted, np.minimum(j, num_classes - 1), axis=1), 0.0)
    return np.cumsum(ideal, axis=1)[inverse]


def hierarchical_precision(
    retrieved: np.ndarray,
    query_labels: np.ndarray,
    lca_height: np.ndarray,
    tree_height: float | None,
    class_counts: np.ndarray | Sequence[int],
    k: int,
    self_in_db: bool = False,
) -> np.ndarray:
    """The hierarchical precision curve HP@1 … HP@k of every query, shape (Q, k).

    HP@i = Σ_{j≤i} s(y_q, y_j) / max over i database items of the same sum (Deng, Berg & Fei-Fei 2011;
    Barz & Denzler 2019), with s(a, b) = 1 − h(LCA(a, b)) / H. Missing positions have s = 0. When the
    best possible sum is 0 (only similarity-0 items exist), HP@i = 1: no ranking could do better.
    ``tree_height=None`` takes H = max(lca_height), which is the root's height unless the root has a
    single child.
    """
    ret, lab = _rankings(retrieved, query_labels)
    k = _check_k(k)
    sim = _similarity(lca_height, tree_height)
    counts = _counts(class_counts)
    if counts.shape[0] != sim.shape[0]:
        raise InputError(
            f"class_counts has {counts.shape[0]} classes, lca_height {sim.shape[0]}",
            "pass both for the same class list",
        )
    _check_classes(ret, lab, sim.shape[0], "lca_height")
    _relevant_counts(lab, counts, self_in_db)
    if ret.shape[0] == 0:
        return np.zeros((0, k))
    top = _cut(ret, k)
    got = np.where(top >= 0, sim[lab[:, None], np.maximum(top, 0)], 0.0)
    num = np.cumsum(got, axis=1)
    best = _ideal_cumsum(sim, counts, lab, k, self_in_db)
    return np.divide(num, best, out=np.ones_like(num), where=best > 0)


def mahp_at_k_per_query(
    retrieved: np.ndarray,
    query_labels: np.ndarray,
    lca_height: np.ndarray,
    tree_height: float | None,
    class_counts: np.ndarray | Sequence[int],
    k: int,
    self_in_db: bool = False,
) -> np.ndarray:
    """Per-query AHP@k = trapz(HP@1 … HP@k, unit spacing) / k
    = (Σ_{i=1}^{k} HP@i − (HP@1 + HP@k)/2) / k, with HP from :func:`hierarchical_precision`.

    This is exactly Barz & Denzler's ``hierarchical_precision(..., compute_ahp=k)``
    (``mean(HP[:k]) − (HP@1 + HP@k)/(2k)``) and the paper's ``np.trapz(HP[:k], dx=1/k)``, so values
    compare with published mAHP@250. Consequence of that normalisation: the area spans k − 1 unit
    steps but is divided by k, so a perfect ranking (HP@i = 1 for all i) scores (k − 1)/k — 0.996 at
    k = 250 — not 1; k must be ≥ 2 (one point has no area). Unlike the paper's code, the ideal ranking
    comes from the class counts of the whole database, as Barz & Denzler do.
    """
    k = _check_k(k, minimum=2)
    hp = hierarchical_precision(retrieved, query_labels, lca_height, tree_height, class_counts, k, self_in_db)
    return (hp.sum(axis=1) - 0.5 * (hp[:, 0] + hp[:, -1])) / k


def mahp_at_k(
    retrieved: np.ndarray,
    query_labels: np.ndarray,
    lca_height: np.ndarray,
    tree_height: float | None,
    class_counts: np.ndarray | Sequence[int],
    k: int,
    self_in_db: bool = False,
) -> float:
    """mAHP@k = mean over queries of trapz(HP@1 … HP@k)/k (Barz & Denzler's normalisation: a perfect
    ranking scores (k − 1)/k). See :func:`mahp_at_k_per_query`."""
    return _nanmean(mahp_at_k_per_query(retrieved, query_labels, lca_height, tree_height, class_counts, k, self_in_db))


def hdist_at_k_per_query(retrieved: np.ndarray, query_labels: np.ndarray, lca_height: np.ndarray, k: int) -> np.ndarray:
    """Per-query hdist@k = mean over the present items among the top k of h(LCA(y_q, y_j))
    (Bertinetto et al. 2020, "Making Better Mistakes"); ``nan`` for a query with no retrieved item."""
    ret, lab = _rankings(retrieved, query_labels)
    k = _check_k(k)
    h = _lca(lca_height).astype(np.float64)
    _check_classes(ret, lab, h.shape[0], "lca_height")
    top = _cut(ret, k)
    present = top >= 0
    heights = np.where(present, h[lab[:, None], np.maximum(top, 0)], 0.0)
    n = present.sum(axis=1)
    return np.divide(heights.sum(axis=1), n, out=np.full(n.shape, np.nan), where=n > 0)


def hdist_at_k(retrieved: np.ndarray, query_labels: np.ndarray, lca_height: np.ndarray, k: int) -> float:
    """hdist@k = mean over queries (with ≥ 1 result) of the mean LCA height of their top k."""
    return _nanmean(hdist_at_k_per_query(retrieved, query_labels, lca_height, k))


def severity_per_query(retrieved: np.ndarray, query_labels: np.ndarray, lca_height: np.ndarray) -> np.ndarray:
    """Per-query mistake severity: h(LCA(y_q, y_1)) when the top-1 result is present and of another
    class, ``nan`` when it is correct or missing."""
    ret, lab = _rankings(retrieved, query_labels)
    h = _lca(lca_height).astype(np.float64)
    _check_classes(ret, lab, h.shape[0], "lca_height")
    first = _cut(ret, 1)[:, 0]
    wrong = (first >= 0) & (first != lab)
    return np.where(wrong, h[lab, np.maximum(first, 0)], np.nan)


def severity(retrieved: np.ndarray, query_labels: np.ndarray, lca_height: np.ndarray) -> float:
    """severity = mean of h(LCA(y_q, y_1)) over the queries whose top-1 result is wrong
    (Bertinetto et al.'s mistake severity); ``nan`` when there is no mistake."""
    return _nanmean(severity_per_query(retrieved, query_labels, lca_height))


# ------------------------------------------------------------------------------------------ bundles


class MetricOptions(TypedDict, total=False):
    """The optional keyword arguments of :func:`per_query`, which :func:`evaluate` passes on."""

    ks: Sequence[int]
    lca_height: np.ndarray | None
    tree_height: float | None
    self_in_db: bool
    mahp_ks: Sequence[int]
    hdist_ks: Sequence[int]


def per_query(
    retrieved: np.ndarray,
    query_labels: np.ndarray,
    *,
    class_counts: np.ndarray | Sequence[int],
    ks: Sequence[int] = DEFAULT_KS,
    lca_height: np.ndarray | None = None,
    tree_height: float | None = None,
    self_in_db: bool = False,
    mahp_ks: Sequence[int] = (250,),
    hdist_ks: Sequence[int] = (10,),
) -> dict[str, np.ndarray]:
    """Every metric per query, as (Q,) arrays under the keys of :func:`evaluate` (for paired tests).

    Keys: ``map@k`` for k in ``ks``, ``map@r``, ``p@1``; with ``lca_height`` also ``mahp@k`` for k in
    ``mahp_ks``, ``hdist@k`` for k in ``hdist_ks`` and ``severity``. Undefined entries are ``nan``
    (see the module docstring).
    """
    out: dict[str, np.ndarray] = {}
    for k in ks:
        out[f"map@{k}"] = map_at_k_per_query(retrieved, query_labels, k)
    out["map@r"] = map_at_r_per_query(retrieved, query_labels, class_counts, self_in_db)
    out["p@1"] = precision_at_1_per_query(retrieved, query_labels)
    if lca_height is not None:
        for k in mahp_ks:
            out[f"mahp@{k}"] = mahp_at_k_per_query(
                retrieved, query_labels, lca_height, tree_height, class_counts, k, self_in_db
            )
        for k in hdist_ks:
            out[f"hdist@{k}"] = hdist_at_k_per_query(retrieved, query_labels, lca_height, k)
        out["severity"] = severity_per_query(retrieved, query_labels, lca_height)
    return out


def evaluate(
    retrieved: np.ndarray,
    query_labels: np.ndarray,
    *,
    class_counts: np.ndarray | Sequence[int],
    **options: Unpack[MetricOptions],
) -> dict[str, float]:
    """All metrics, averaged over queries: ``{key: nanmean(per_query(...)[key])}``; the options are
    those of :func:`per_query`.

    Keys ``map@1``, ``map@5``, … (``ks``), ``map@r``, ``p@1``, and when ``lca_height`` is given
    ``mahp@250`` (``mahp_ks``), ``hdist@10`` (``hdist_ks``) and ``severity``. ``retrieved`` needs at
    least ``max R_q`` columns for map@r; fewer columns than a k count as missing (non-relevant) ranks.
    """
    rows = per_query(retrieved, query_labels, class_counts=class_counts, **options)
    return {key: _nanmean(values) for key, values in rows.items()}
