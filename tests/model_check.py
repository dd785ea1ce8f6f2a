"""Compare two models up to the last bits of floating point.

A model id hashes the arrays' bytes (DESIGN.md §2.4), so a model refitted on another machine, or with
another BLAS kernel, has another id although it is the same model. Tests that compare a refit with a
model from elsewhere (a pinned fixture, another process) compare with :func:`assert_same_model`: every
array within a tolerance, everything else in the manifest (tree, classes, settings, extractor, fit report)
equal, its numbers within the same tolerance. Two fits in one process may still compare ids.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hierqdrant.core.model import HierarchyModel
from hierqdrant.core.model_files import manifest_of, model_arrays


def assert_same_model(got: HierarchyModel, want: HierarchyModel, *, rtol: float = 1e-9, atol: float = 1e-12) -> None:
    """``got`` is ``want`` up to floating point: same arrays (shape, dtype; values within rtol/atol), same
    tree and settings."""
    a, b = model_arrays(got), model_arrays(want)
    assert sorted(a) == sorted(b)
    for name in sorted(a):
        x, y = np.asarray(a[name]), np.asarray(b[name])
        assert (x.shape, x.dtype) == (y.shape, y.dtype), name
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol, err_msg=name)
    ma, mb = manifest_of(got), manifest_of(want)
    ma.pop("arrays")
    mb.pop("arrays")
    _assert_close(ma, mb, "manifest", rtol, atol)


def _assert_close(a: Any, b: Any, where: str, rtol: float, atol: float) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        assert sorted(a) == sorted(b), where
        for key in a:
            _assert_close(a[key], b[key], f"{where}.{key}", rtol, atol)
    elif isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_close(x, y, f"{where}[{i}]", rtol, atol)
    elif isinstance(a, float) or isinstance(b, float):
        assert not isinstance(a, bool) and not isinstance(b, bool), where
        assert abs(a - b) <= atol + rtol * abs(b), f"{where}: {a} != {b}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"
