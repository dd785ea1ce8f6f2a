"""One stratified, seeded split of labelled items: a training part and a held-out (validation) part.

Training a network needs every class in the training part (``min_per_class=1``); fitting a class
Gaussian needs a spread, so tuning keeps at least two items of every class (``min_per_class=2``).
"""

from __future__ import annotations

import numpy as np

from hierqdrant.core.errors import InputError

__all__ = ["stratified_split"]


def stratified_split(
    labels: np.ndarray, val_share: float = 0.2, seed: int = 0, *, min_per_class: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split → (training indices, validation indices), both ascending.

    Each class gives ``round(val_share · n_c)`` of its items to validation, but always keeps at least
    ``min_per_class`` in the training part (a class with ``min_per_class`` items or fewer gives none).
    The held-out items of a class are drawn with ``rng.choice`` from one generator seeded with
    ``seed``, class by class in ascending label order.
    """
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    share = float(val_share)
    if not 0.0 < share < 1.0:
        raise InputError(f"val_share={val_share} must be between 0 and 1", "e.g. --val-share 0.2")
    if int(min_per_class) < 0:
        raise InputError(f"min_per_class={min_per_class} must be ≥ 0")
    rng = np.random.default_rng(seed)
    val: list[np.ndarray] = []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        take = min(int(round(share * members.size)), members.size - int(min_per_class))
        if take > 0:
            val.append(rng.choice(members, size=take, replace=False))
    val_idx = np.sort(np.concatenate(val)) if val else np.zeros(0, dtype=np.int64)
    mask = np.ones(y.shape[0], dtype=bool)
    mask[val_idx] = False
    return np.flatnonzero(mask), val_idx
