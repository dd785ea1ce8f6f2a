"""Retrieval metrics against hand-computed values (DESIGN.md §6) and a naive per-query reference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hierqdrant.core.errors import InputError
from hierqdrant.evaluation import metrics as m

# A 2-level tree over 4 classes: {0, 1} under node A, {2, 3} under node B, A and B under the root.
# Heights: leaves 0, A = B = 1, root 2 → H = 2 and s = 1 − h/2: same class 1, sibling 0.5, other 0.
LCA = np.array(
    [
        [0, 1, 2, 2],
        [1, 0, 2, 2],
        [2, 2, 0, 1],
        [2, 2, 1, 0],
    ]
)
H = 2


def approx(x: float) -> object:
    return pytest.approx(x, abs=1e-12)


# --------------------------------------------------------------------------------------------- map@k


def test_map_at_k_by_hand() -> None:
    retrieved = np.array(
        [
            [0, 1, 0, 0, 2],  # query class 0: rel 1 0 1 1 0
            [1, 2, 2, 3, 2],  # query class 2: rel 0 1 1 0 1
        ]
    )
    labels = np.array([0, 2])
    per = m.map_at_k_per_query(retrieved, labels, 5)
    # q0: P@1 + P@3 + P@4 = 1 + 2/3 + 3/4 = 29/12 → /5 = 29/60
    # q1: P@2 + P@3 + P@5 = 1/2 + 2/3 + 3/5 = 53/30 → /5 = 53/150
    assert per[0] == approx(29 / 60)
    assert per[1] == approx(53 / 150)
    assert m.map_at_k(retrieved, labels, 5) == approx((29 / 60 + 53 / 150) / 2)
    # k = 3: q0: (1 + 2/3)/3 = 5/9; q1: (1/2 + 2/3)/3 = 7/18
    assert m.map_at_k_per_query(retrieved, labels, 3).tolist() == [approx(5 / 9), approx(7 / 18)]
    # k = 1 is P@1
    assert m.map_at_k(retrieved, labels, 1) == approx(0.5)


def test_map_divides_by_k_not_by_number_relevant() -> None:
    # One relevant item, at rank 1: AP@4 = P@1 / 4 = 1/4 (not 1).
    assert m.map_at_k(np.array([[0, 1, 1, 1]]), np.array([0]), 4) == approx(0.25)


def test_ties_are_just_order() -> None:
    # Two items that tie in distance: whatever order the caller gives is the ranking.
    labels = np.array([0])
    assert m.map_at_k(np.array([[0, 1]]), labels, 2) == approx(0.5)  # P@1 / 2
    assert m.map_at_k(np.array([[1, 0]]), labels, 2) == approx(0.25)  # P@2 / 2 = (1/2)/2


def test_k_larger_than_database_pads_as_non_relevant() -> None:
    labels = np.array([0])
    padded = np.array([[0, 1, 0, -1, -1]])
    # rel 1 0 1 then nothing: (P@1 + P@3)/8 = (1 + 2/3)/8 = 5/24
    assert m.map_at_k(padded, labels, 8) == approx(5 / 24)
    # the same when the caller gives fewer columns than k
    assert m.map_at_k(np.array([[0, 1, 0]]), labels, 8) == approx(5 / 24)
    # an empty database: nothing relevant
    assert m.map_at_k(np.full((1, 3), -1), labels, 3) == 0.0
    assert m.precision_at_1(np.full((1, 3), -1), labels) == 0.0


# --------------------------------------------------------------------------------------------- map@r


def test_map_at_r_leave_one_out_by_hand() -> None:
    counts = [4, 2, 3, 1]  # database items per class; the queries are among them
    retrieved = np.array(
        [
            [0, 1, 0, 0, 2],  # class 0, R = 4 − 1 = 3: rel 1 0 1 → (1 + 2/3)/3 = 5/9
            [1, 0, 0, 0, 2],  # class 1, R = 1: rel 1 → 1
            [3, 2, 2, 0, 0],  # class 2, R = 2: rel 0 1 → (1/2)/2 = 1/4
            [2, 2, 0, 0, 0],  # class 3, R = 0 (its only member is the query) → excluded
        ]
    )
    labels = np.array([0, 1, 2, 3])
    per = m.map_at_r_per_query(retrieved, labels, counts, self_in_db=True)
    assert per[:3].tolist() == [approx(5 / 9), approx(1.0), approx(0.25)]
    assert math.isnan(per[3])
    assert m.map_at_r(retrieved, labels, counts, self_in_db=True) == approx((5 / 9 + 1 + 1 / 4) / 3)


def test_map_at_r_singleton_class_without_leave_one_out() -> None:
    # A class with one database item and an external query: R = 1, AP@1 = rel_1.
    counts = [3, 1]
    assert m.map_at_r(np.array([[1, 0, 0]]), np.array([1]), counts) == approx(1.0)
    assert m.map_at_r(np.array([[0, 1, 0]]), np.array([1]), counts) == approx(0.0)
    # Under leave-one-out the same query has R = 0: no query left → nan
    assert math.isnan(m.map_at_r(np.array([[0, 0, 0]]), np.array([1]), counts, self_in_db=True))


def test_map_at_r_needs_max_r_columns() -> None:
    with pytest.raises(InputError, match="at least 4"):
        m.map_at_r(np.array([[0, 0, 0]]), np.array([0]), [4, 1])
    with pytest.raises(InputError, match="self_in_db"):
        m.map_at_r(np.array([[0]]), np.array([1]), [4, 0], self_in_db=True)


def test_perfect_ranking_scores_one_on_map_r_and_p1() -> None:
    counts = [2, 1, 2, 1]
    retrieved = np.array([[0, 0, 1, 2, 2, 3], [2, 2, 3, 0, 0, 1], [3, 2, 2, 0, 0, 1]])
    labels = np.array([0, 2, 3])
    assert m.map_at_r(retrieved, labels, counts) == approx(1.0)
    assert m.precision_at_1(retrieved, labels) == approx(1.0)


# -------------------------------------------------------------------------------------- hierarchical


def test_hierarchical_precision_and_mahp_by_hand() -> None:
    counts = [2, 1, 2, 1]  # self_in_db: the query's own class has one item fewer
    retrieved = np.array(
        [
            [1, 2, 0, 3, 2],  # query class 0
            [2, 0, -1, -1, -1],  # query class 3, a database of 5 others but only 2 returned
        ]
    )
    labels = np.array([0, 3])
    # q0: counts → [1, 1, 2, 1]; ideal sims 1, .5, 0, 0, 0 → cum 1, 1.5, 1.5, 1.5, 1.5
    #     got sims .5, 0, 1, 0, 0 → cum .5, .5, 1.5, 1.5, 1.5 → HP .5, 1/3, 1, 1, 1
    # q1: counts → [2, 1, 2, 0]; ideal sims .5, .5, 0, 0, 0 → cum .5, 1, 1, 1, 1
    #     got sims .5, 0, (missing → 0) … → cum .5, .5, .5, .5, .5 → HP 1, .5, .5, .5, .5
    hp = m.hierarchical_precision(retrieved, labels, LCA, H, counts, 5, self_in_db=True)
    np.testing.assert_allclose(hp, [[0.5, 1 / 3, 1, 1, 1], [1, 0.5, 0.5, 0.5, 0.5]], atol=1e-12)
    # AHP@5 = (Σ HP − (HP@1 + HP@5)/2) / 5
    # q0: (23/6 − 3/4)/5 = 37/60;  q1: (3 − 3/4)/5 = 9/20
    per = m.mahp_at_k_per_query(retrieved, labels, LCA, H, counts, 5, self_in_db=True)
    assert per.tolist() == [approx(37 / 60), approx(9 / 20)]
    assert m.mahp_at_k(retrieved, labels, LCA, H, counts, 5, self_in_db=True) == approx((37 / 60 + 9 / 20) / 2)
    # AHP@3 of q0 = (.5 + 1/3 + 1 − (.5 + 1)/2)/3 = 13/36
    assert m.mahp_at_k_per_query(retrieved[:1], labels[:1], LCA, H, counts, 3, self_in_db=True)[0] == approx(13 / 36)


def test_mahp_without_leave_one_out_uses_full_counts() -> None:
    # External query of class 0, counts [2, 1, 2, 1]: ideal 1, 1, .5, 0 → cum 1, 2, 2.5, 2.5
    # got classes 0, 1, 0, 2 → sims 1, .5, 1, 0 → cum 1, 1.5, 2.5, 2.5 → HP 1, .75, 1, 1
    # AHP@4 = (3.75 − (1 + 1)/2)/4 = 11/16
    got = m.mahp_at_k(np.array([[0, 1, 0, 2]]), np.array([0]), LCA, H, [2, 1, 2, 1], 4)
    assert got == approx(11 / 16)


def test_perfect_ranking_has_hp_one_and_mahp_k_minus_one_over_k() -> None:
    counts = [2, 1, 2, 1]
    retrieved = np.array([[0, 0, 1, 2, 2, 3], [3, 2, 2, 0, 0, 1]])
    labels = np.array([0, 3])
    hp = m.hierarchical_precision(retrieved, labels, LCA, H, counts, 6)
    np.testing.assert_allclose(hp, 1.0)
    # Barz & Denzler's normalisation: trapezoid over k − 1 unit steps, divided by k.
    assert m.mahp_at_k(retrieved, labels, LCA, H, counts, 6) == approx(5 / 6)


def test_hp_is_one_when_nothing_similar_exists() -> None:
    # Flat tree (H = 1): other classes have s = 0; class 1's only member is the query → best sum 0.
    flat = 1 - np.eye(3, dtype=int)
    hp = m.hierarchical_precision(np.array([[0, 2, 0]]), np.array([1]), flat, 1, [2, 1, 1], 3, self_in_db=True)
    np.testing.assert_allclose(hp, 1.0)


def test_mahp_rejects_k_below_two_and_bad_heights() -> None:
    with pytest.raises(InputError):
        m.mahp_at_k(np.array([[0]]), np.array([0]), LCA, H, [1, 1, 1, 1], 1)
    with pytest.raises(InputError, match="tree_height"):
        m.mahp_at_k(np.array([[0, 1]]), np.array([0]), LCA, 1, [1, 1, 1, 1], 2)
    with pytest.raises(InputError, match="out of range"):
        m.mahp_at_k(np.array([[7, 1]]), np.array([0]), LCA, H, [1, 1, 1, 1], 2)


def test_hdist_and_severity_by_hand() -> None:
    retrieved = np.array(
        [
            [1, 2, 0, 3, 2],  # q class 0: heights 1, 2, 0, 2, 2
            [2, 0, -1, -1, -1],  # q class 3: heights 1, 2 (then missing)
            [2, 3, 0, 0, 1],  # q class 2: heights 0, 1, 2, 2, 2 (top-1 correct)
            [-1, -1, -1, -1, -1],  # q class 1: nothing retrieved
        ]
    )
    labels = np.array([0, 3, 2, 1])
    per3 = m.hdist_at_k_per_query(retrieved, labels, LCA, 3)
    # q0: (1+2+0)/3 = 1; q1: (1+2)/2 = 1.5 over the present items; q2: (0+1+2)/3 = 1; q3: none → nan
    assert per3[:3].tolist() == [approx(1.0), approx(1.5), approx(1.0)]
    assert math.isnan(per3[3])
    assert m.hdist_at_k(retrieved, labels, LCA, 3) == approx(3.5 / 3)
    # hdist@5 of q0 = 7/5
    assert m.hdist_at_k_per_query(retrieved, labels, LCA, 5)[0] == approx(1.4)
    # severity: wrong top-1 at q0 (class 1, h = 1) and q1 (class 2, h = 1); q2 correct, q3 missing
    sev = m.severity_per_query(retrieved, labels, LCA)
    assert sev[:2].tolist() == [1.0, 1.0] and np.isnan(sev[2:]).all()
    top1 = np.array([[2], [2], [2]])  # classes 0, 3, 2: h = 2, 1, correct → mean 1.5
    assert m.severity(top1, np.array([0, 3, 2]), LCA) == approx(1.5)


def test_severity_is_nan_without_mistakes() -> None:
    assert math.isnan(m.severity(np.array([[0, 1], [2, 2]]), np.array([0, 2]), LCA))


# --------------------------------------------------------------------------------------------- bundle


def test_evaluate_keys_and_consistency() -> None:
    counts = [2, 1, 2, 1]
    retrieved = np.array([[1, 2, 0, 3, 2], [2, 0, 1, 0, 2], [2, 3, 0, 0, 1]])
    labels = np.array([0, 3, 2])
    flat = m.evaluate(retrieved, labels, class_counts=counts, self_in_db=True)
    assert list(flat) == ["map@1", "map@5", "map@10", "map@20", "map@100", "map@250", "map@r", "p@1"]
    full = m.evaluate(
        retrieved,
        labels,
        class_counts=counts,
        lca_height=LCA,
        tree_height=H,
        self_in_db=True,
        ks=(1, 5),
        mahp_ks=(5, 250),
        hdist_ks=(3, 10),
    )
    assert list(full) == [
        "map@1",
        "map@5",
        "map@r",
        "p@1",
        "mahp@5",
        "mahp@250",
        "hdist@3",
        "hdist@10",
        "severity",
    ]
    assert full["map@5"] == approx(m.map_at_k(retrieved, labels, 5))
    assert full["map@r"] == approx(m.map_at_r(retrieved, labels, counts, True))
    assert full["p@1"] == approx(1 / 3)
    assert full["mahp@5"] == approx(m.mahp_at_k(retrieved, labels, LCA, H, counts, 5, True))
    assert full["hdist@3"] == approx(m.hdist_at_k(retrieved, labels, LCA, 3))
    assert full["severity"] == approx(m.severity(retrieved, labels, LCA))
    rows = m.per_query(retrieved, labels, class_counts=counts, lca_height=LCA, tree_height=H, self_in_db=True)
    assert set(rows) == {"map@1", "map@5", "map@10", "map@20", "map@100", "map@250", "map@r", "p@1"} | {
        "mahp@250",
        "hdist@10",
        "severity",
    }
    assert all(v.shape == (3,) for v in rows.values())


def test_bad_inputs_raise_input_error() -> None:
    with pytest.raises(InputError):
        m.map_at_k(np.array([0, 1]), np.array([0, 0]), 1)  # 1-D rankings
    with pytest.raises(InputError):
        m.map_at_k(np.array([[0, 1]]), np.array([0, 0]), 1)  # label count mismatch
    with pytest.raises(InputError):
        m.map_at_k(np.array([[0.5, 1.0]]), np.array([0]), 1)  # not labels
    with pytest.raises(InputError):
        m.map_at_k(np.array([[0, -2]]), np.array([0]), 1)
    with pytest.raises(InputError):
        m.map_at_k(np.array([[0, 1]]), np.array([0]), 0)


# ----------------------------------------------------------------------------- naive reference check


def _naive(db: np.ndarray, queries: list[int], k: int, sim: np.ndarray, rng: np.random.Generator) -> dict:
    """Literal per-query loops: rank the database (minus the query) at random, then apply the formulas."""
    out: dict[str, list[float]] = {"map": [], "mapr": [], "ahp": [], "ret": []}
    for qi in queries:
        y = db[qi]
        others = np.delete(np.arange(db.size), qi)
        ranked = db[rng.permutation(others)].tolist()
        row = (ranked + [-1] * k)[:k]
        out["ret"].append(row)
        hits, ap = 0, 0.0
        for i, lab in enumerate(row, start=1):
            if lab == y:
                hits += 1
                ap += hits / i
        out["map"].append(ap / k)
        r = sum(1 for lab in ranked if lab == y)
        if r:
            hits, ap = 0, 0.0
            for i, lab in enumerate(ranked[:r], start=1):
                if lab == y:
                    hits += 1
                    ap += hits / i
            out["mapr"].append(ap / r)
        best = sorted((sim[y, lab] for lab in ranked), reverse=True) + [0.0] * k
        got = [sim[y, lab] if lab >= 0 else 0.0 for lab in row]
        hp = [sum(got[:i]) / sum(best[:i]) for i in range(1, k + 1)]
        out["ahp"].append(float(np.trapezoid(hp)) / k)
    return out


def test_matches_naive_reference_on_random_rankings() -> None:
    rng = np.random.default_rng(7)
    db = rng.integers(0, 4, size=23)
    counts = np.bincount(db, minlength=4)
    sim = 1 - LCA / H
    queries = list(range(db.size))
    k = 30  # larger than the database: padding included
    ref = _naive(db, queries, k, sim, rng)
    retrieved = np.array(ref["ret"])
    labels = db[queries]
    assert m.map_at_k(retrieved, labels, k) == approx(float(np.mean(ref["map"])))
    assert m.map_at_r(retrieved, labels, counts, self_in_db=True) == approx(float(np.mean(ref["mapr"])))
    assert m.mahp_at_k(retrieved, labels, LCA, H, counts, k, self_in_db=True) == approx(float(np.mean(ref["ahp"])))
