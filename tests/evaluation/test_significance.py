"""Paired bootstrap CI and sign-flip test."""

from __future__ import annotations

import numpy as np
import pytest

from hierqdrant.core.errors import InputError
from hierqdrant.evaluation.significance import PairedResult, paired_test


def test_identical_inputs_give_zero_difference_and_p_one() -> None:
    a = np.random.default_rng(0).random(40)
    r = paired_test(a, a.copy())
    assert isinstance(r, PairedResult)
    assert r.diff == 0.0 and r.ci_low == 0.0 and r.ci_high == 0.0
    assert r.p_value == 1.0
    assert r.n == 40 and r.mean_a == pytest.approx(a.mean()) and r.mean_b == pytest.approx(a.mean())


def test_clear_shift_gives_small_p_and_ci_excluding_zero() -> None:
    rng = np.random.default_rng(1)
    b = rng.random(60)
    a = b + 0.2 + 0.05 * rng.standard_normal(60)
    r = paired_test(a, b, n_resamples=2000)
    assert r.diff == pytest.approx(float(np.mean(a - b)))
    assert 0 < r.ci_low < r.diff < r.ci_high
    # every sign flip is less extreme than the observed sum → p = 1/(1 + B)
    assert r.p_value == pytest.approx(1 / 2001)
    flipped = paired_test(b, a, n_resamples=2000)
    assert flipped.diff == pytest.approx(-r.diff) and flipped.p_value == r.p_value


def test_no_shift_gives_large_p() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.random(200), rng.random(200)
    r = paired_test(a, b, n_resamples=2000)
    assert r.ci_low < 0 < r.ci_high
    assert r.p_value > 0.05


def test_exact_sign_flip_by_hand() -> None:
    # d = 1, 2, 3; of the 2^3 sign patterns only +++ and −−− reach |Σ| = 6 → p = 2/8
    r = paired_test(np.array([1.0, 2.0, 3.0]), np.zeros(3))
    assert r.p_value == pytest.approx(0.25)
    assert r.diff == pytest.approx(2.0)
    assert 1.0 <= r.ci_low <= r.ci_high <= 3.0


def test_single_pair() -> None:
    r = paired_test(np.array([0.7]), np.array([0.2]))
    assert r.n == 1 and r.p_value == 1.0
    assert r.diff == pytest.approx(0.5) and r.ci_low == pytest.approx(0.5) and r.ci_high == pytest.approx(0.5)


def test_deterministic_with_seed() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.random(100), rng.random(100)
    assert paired_test(a, b, seed=5) == paired_test(a, b, seed=5)
    assert paired_test(a, b, seed=5).ci_low != paired_test(a, b, seed=6).ci_low


def test_nan_pairs_are_dropped() -> None:
    a = np.array([1.0, np.nan, 3.0, 4.0])
    b = np.array([0.0, 1.0, np.nan, 2.0])
    r = paired_test(a, b)
    assert r.n == 2 and r.diff == pytest.approx(1.5)


def test_bad_input() -> None:
    with pytest.raises(InputError):
        paired_test(np.ones(3), np.ones(4))
    with pytest.raises(InputError):
        paired_test(np.array([np.nan]), np.array([1.0]))
    with pytest.raises(InputError):
        paired_test(np.ones(3), np.ones(3), n_resamples=0)
