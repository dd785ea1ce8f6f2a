"""The paper's retrieval methods: their names, their distances, and building them on a fitted model.

Two baselines rank the raw features ``x`` as a plain Qdrant collection would store them (no centring,
no projection): what a user has without hierqdrant.

* ``cosine-raw`` — ``1 − cos(x_q, x_x)``;
* ``euclidean-raw`` — ``‖x_q − x_x‖``.

Every other method ranks the database for a query by a distance on the centred PCA vectors ``z``
(DESIGN.md §1.6–1.7), the leaves ``n`` being the Mahalanobis leaves of the class Gaussians (database
items: predicted, the paper's default, or their label):

* ``euclidean`` — ``‖z_q − z_x‖``;
* ``cosine`` — ``D_C = 1 − cos(z_q, z_x)``;
* ``hierarchy-only`` — ``h(LCA(n_q, n_x))/H`` alone on the overlap tree. Items at the same LCA height
  are ordered by ``D_C`` (the ranking is ``4·h + D_C``, i.e. D with α = 4H: one level always outweighs
  any cosine difference ≤ 2). The paper's code left these ties to ``np.argsort``'s arbitrary order;
  the cosine makes the ranking deterministic and the same through any engine.
* ``overlap`` (ours), ``ward``, ``given`` — ``D = D_C + α·h(LCA)/H`` on the tree of overlapping class
  Gaussians (threshold t), on the Ward linkage of the class means, or on a taxonomy file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from hierqdrant.core.errors import InputError
from hierqdrant.core.hierarchy import Hierarchy
from hierqdrant.core.model import HierarchyModel, check_alpha

__all__ = [
    "ALL_METHODS",
    "HIERARCHICAL",
    "METHODS",
    "PLAIN",
    "RAW_METHODS",
    "Method",
    "MethodChoices",
    "build_methods",
    "check_method_names",
    "overlap_threshold",
    "parse_per_method",
    "unique_methods",
]

#: The methods on the model's PCA vectors.
METHODS: tuple[str, ...] = ("euclidean", "cosine", "hierarchy-only", "overlap", "ward", "given")
#: The baselines on the raw features (what a plain Qdrant collection ranks by).
RAW_METHODS: tuple[str, ...] = ("cosine-raw", "euclidean-raw")
#: Every method, in report order: the raw baselines first (the default list of ``eval``).
ALL_METHODS: tuple[str, ...] = RAW_METHODS + METHODS
HIERARCHICAL: tuple[str, ...] = ("overlap", "ward", "given")
#: The methods without a model (no tree, no leaves).
PLAIN: tuple[str, ...] = ("cosine-raw", "euclidean-raw", "euclidean", "cosine")
# hierarchy-only ranks by 4·h + D_C: a level step (≥ 1) always outweighs D_C ∈ [0, 2].
HIERARCHY_ONLY_WEIGHT = 4.0

_FORMULAS = {
    "cosine-raw": "1 − cos(x_q, x_x), raw features",
    "euclidean-raw": "‖x_q − x_x‖, raw features",
    "euclidean": "‖z_q − z_x‖",
    "cosine": "1 − cos(z_q, z_x)",
    "hierarchy-only": "h(LCA)/H, ties by 1 − cos",
    "overlap": "1 − cos + α·h(LCA)/H",
    "ward": "1 − cos + α·h(LCA)/H",
    "given": "1 − cos + α·h(LCA)/H",
}


@dataclass(frozen=True)
class Method:
    """One ranking. ``model`` carries the tree and the class Gaussians (None for the plain methods:
    cosine-raw, euclidean-raw, euclidean, cosine); ``alpha`` is α of ``D = D_C + α·h/H`` (overlap,
    ward, given)."""

    name: str
    model: HierarchyModel | None = None
    alpha: float = 0.0
    label: str | None = None  # the key of this method in results (default: its name)

    def __post_init__(self) -> None:
        if self.name not in ALL_METHODS:
            raise InputError(f"unknown method {self.name!r}", f"use some of {', '.join(ALL_METHODS)}")
        if self.name not in PLAIN and self.model is None:
            raise InputError(f"method {self.name!r} needs a fitted model with its tree")
        object.__setattr__(self, "alpha", check_alpha(self.alpha))

    @property
    def key(self) -> str:
        return self.label or self.name

    @property
    def hierarchical(self) -> bool:
        return self.model is not None and self.name not in PLAIN

    @property
    def raw(self) -> bool:
        """Ranks the raw features (cosine-raw, euclidean-raw), not the PCA vectors."""
        return self.name in RAW_METHODS

    @property
    def effective_alpha(self) -> float:
        """α of the D that this method ranks by (hierarchy-only: 4H, so one level beats any cosine)."""
        if self.name == "hierarchy-only":
            assert self.model is not None
            return HIERARCHY_ONLY_WEIGHT * max(self.model.tree_height, 1)
        return self.alpha if self.name in HIERARCHICAL else 0.0

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"distance": _FORMULAS[self.name]}
        if self.name in HIERARCHICAL:
            out["alpha"] = self.alpha
        if self.model is not None and self.name not in PLAIN:
            tree = self.model.hierarchy
            out["builder"] = self.model.builder
            if self.model.threshold is not None:
                out["threshold"] = self.model.threshold
            out["tree_height"] = tree.tree_height
            out["tree_nodes"] = tree.num_nodes
        return out


def unique_methods(methods: Sequence[Method]) -> list[Method]:
    """The methods as a list, checked to have distinct result keys."""
    out = list(methods)
    if not out:
        raise InputError("no method to evaluate")
    keys = [m.key for m in out]
    if len(set(keys)) != len(keys):
        raise InputError(f"methods must have distinct names, got {keys}", "give repeated methods a label")
    return out


def parse_per_method(
    text: str | None, what: str, default: float | None = None
) -> tuple[float | None, dict[str, float]]:
    """``"3"`` → (3, {}); ``"overlap=3,ward=1"`` → (default, {...}); ``"2,given=1"`` → (2, {given: 1})."""
    if text is None or not str(text).strip():
        return default, {}
    common = default
    per: dict[str, float] = {}
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        try:
            number = float(value if sep else key)
        except ValueError:
            raise InputError(
                f"--{what} {part!r} is not a number or method=number", f"e.g. --{what} overlap=3,ward=1"
            ) from None
        if sep:
            name = key.strip().lower()
            if name not in ALL_METHODS:
                raise InputError(f"--{what} names unknown method {name!r}", f"use {', '.join(ALL_METHODS)}")
            per[name] = number
        else:
            common = number
    return common, per


def check_method_names(names: Sequence[str]) -> list[str]:
    """Method names, lower-cased and de-duplicated in order (``ours`` / ``hierarchical``: overlap)."""
    out: list[str] = []
    for raw in names:
        name = str(raw).strip().lower()
        if not name:
            continue
        if name in ("ours", "hierarchical"):
            name = "overlap"
        if name not in ALL_METHODS:
            raise InputError(f"unknown method {raw!r}", f"use some of {', '.join(ALL_METHODS)}")
        if name not in out:
            out.append(name)
    if not out:
        raise InputError("no method to evaluate", f"pass --methods, e.g. {','.join(ALL_METHODS)}")
    return out


def overlap_threshold(thresholds: Mapping[str, float], threshold: float | None) -> float | None:
    """The t of the overlap tree (shared by overlap and hierarchy-only) from per-method settings."""
    return thresholds.get("overlap", thresholds.get("hierarchy-only", threshold))


class MethodChoices(TypedDict, total=False):
    """The per-method settings of :func:`build_methods`, which
    :func:`~hierqdrant.evaluation.tuning.prepare_methods` passes on (None or absent: the default)."""

    threshold: float | None
    thresholds: Mapping[str, float] | None
    alpha: float | None
    alphas: Mapping[str, float] | None
    taxonomy: str | Path | Hierarchy | None


def build_methods(
    names: Sequence[str],
    base: HierarchyModel,
    fit_z: np.ndarray | None,
    fit_labels: np.ndarray | None,
    *,
    threshold: float | None = None,
    thresholds: Mapping[str, float] | None = None,
    alpha: float | None = None,
    alphas: Mapping[str, float] | None = None,
    taxonomy: str | Path | Hierarchy | None = None,
) -> list[Method]:
    """The methods ``names`` on ``base``'s PCA and class Gaussians.

    ``overlap`` and ``hierarchy-only`` use the overlap tree at threshold t (``thresholds["overlap"]``,
    else ``threshold``, else ``base``'s own t); ``ward`` the Ward linkage of the class means; ``given``
    ``taxonomy``. α per method from ``alphas``, else ``alpha``, else ``base.alpha``. ``fit_z`` /
    ``fit_labels`` are the projected training points the overlap builder pools; they are needed only
    when the overlap tree has to be rebuilt (another t than ``base``'s).
    """
    wanted = check_method_names(names)
    thresholds = dict(thresholds or {})
    alphas = dict(alphas or {})
    for key in thresholds:
        if key not in ("overlap", "hierarchy-only"):
            raise InputError(f"a threshold applies to the overlap tree, not to {key!r}", "e.g. --threshold 0.3")
    t = overlap_threshold(thresholds, threshold)
    cache: dict[str, HierarchyModel] = {}

    def tree_model(builder: str) -> HierarchyModel:
        if builder in cache:
            return cache[builder]
        if builder == "overlap" and base.builder == "overlap" and (t is None or t == base.threshold):
            model = base
        elif builder == "given":
            if taxonomy is None:
                raise InputError("method 'given' needs a taxonomy", "pass --taxonomy FILE")
            model = base.refit_tree(_no_points(base), _NO_LABELS, builder="given", taxonomy=taxonomy)
        elif builder == "ward":
            model = base.refit_tree(_no_points(base), _NO_LABELS, builder="ward")
        else:
            if fit_z is None or fit_labels is None:
                raise InputError(
                    "rebuilding the overlap tree at another threshold needs the training points",
                    "pass the training features (--fit) or use the model's own threshold",
                )
            model = base.refit_tree(fit_z, fit_labels, builder="overlap", threshold=t if t is not None else 0.3)
        cache[builder] = model
        return model

    out: list[Method] = []
    for name in wanted:
        a = alphas.get(name, alpha if alpha is not None else base.alpha)
        if name in PLAIN:
            out.append(Method(name))
        elif name == "hierarchy-only":
            out.append(Method(name, tree_model("overlap"), 0.0))
        else:
            out.append(Method(name, tree_model(name), a))
    return out


_NO_LABELS = np.zeros(0, dtype=np.int64)


def _no_points(model: HierarchyModel) -> np.ndarray:
    """Ward and given trees pool no points: refit_tree gets an empty (0, d) array."""
    return np.zeros((0, model.dims))
