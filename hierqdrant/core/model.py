"""``HierarchyModel``: PCA + class Gaussians + class tree + leaf sources, fitted once and stored with a collection.

The ranking distance (DESIGN.md §1.6):

    D(q, x) = D_C(q, x) + α · h(LCA(n_q, n_x)) / H

with ``D_C = 1 − cos(z_q, z_x)`` on the centred PCA vectors, ``n`` the leaf of an image, ``h`` the node
height (leaves 0) and ``H`` the root's height. The leaf (DESIGN.md §1.5) comes from the model's query
classifier — ``mahalanobis`` (nearest class Gaussian, the paper), ``tied`` (one shared shrunk covariance,
LDA) or ``head`` (the network's final layer on the raw feature) — and, for stored images with
``leaf_from="label"``, from their label. The tree is always built from the per-class Gaussians: leaf
classifier and tree builder are independent choices. The stored form is in :mod:`~hierqdrant.core.model_files`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import numpy as np

from hierqdrant.core import build as builders
from hierqdrant.core import model_files
from hierqdrant.core.classifiers import (
    LEAF_FROM,
    QUERY_CLASSIFIERS,
    LeafFrom,
    LinearClassifier,
    QueryClassifier,
    fit_tied,
)
from hierqdrant.core.errors import InputError
from hierqdrant.core.features import check_features, check_labels
from hierqdrant.core.gaussian import ESTIMATORS, Gaussians, NearestClass, Projection
from hierqdrant.core.hierarchy import Hierarchy
from hierqdrant.core.model_files import ARRAYS, MANIFEST, MODEL_FORMAT, MODEL_VERSION
from hierqdrant.core.subclasses import SubclassMap

__all__ = [
    "ALPHA_MAX",
    "ARRAYS",
    "MANIFEST",
    "MODEL_FORMAT",
    "MODEL_VERSION",
    "HierarchyModel",
    "check_alpha",
    "check_head",
    "check_leaf_sources",
    "unit_rows",
]


@dataclass(eq=False)
class HierarchyModel:
    """A fitted model. Build it with :meth:`fit`; store it with :meth:`save` / :meth:`to_files`."""

    projection: Projection
    gaussians: Gaussians
    hierarchy: Hierarchy
    alpha: float = 3.0
    threshold: float | None = None
    builder: str = "overlap"
    extractor: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # fit report: overlap levels, tied classes, tuning …
    # Leaf sources (DESIGN.md §1.5). The defaults here are what a model without them meant (and what the
    # files of a model saved before they existed load as); :meth:`fit` defaults to ``tied`` / ``label``.
    query_classifier: QueryClassifier = "mahalanobis"
    leaf_from: LeafFrom = "predicted"
    classifier: LinearClassifier | None = None  # tied: on the PCA vector z; head: on the raw feature x
    # Sub-class leaves (DESIGN.md §1.9): the tree's leaves are sub-classes of these classes; None: leaf = class.
    subclasses: SubclassMap | None = None

    def __post_init__(self) -> None:
        self.alpha = check_alpha(self.alpha)
        self._check_leaf_sources()
        if self.subclasses is not None and self.subclasses.subclass_of.size != self.hierarchy.num_leaves:
            raise InputError(
                f"the sub-class map has {self.subclasses.subclass_of.size} leaves, the tree {self.num_classes}"
            )
        self._nearest: NearestClass | None = None
        self._lca_height: np.ndarray | None = None
        self._model_id: str | None = None
        self._paths: list[list[int]] | None = None

    # -- fitting ---------------------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        features: np.ndarray,
        labels: np.ndarray,
        *,
        class_names: Sequence[str] | None = None,
        builder: str = "overlap",
        threshold: float = 0.3,
        alpha: float = 3.0,
        taxonomy: str | Path | Hierarchy | None = None,
        leaf_offset: int | None = None,
        n_components: int | float | None = 0.95,
        covariance: str = "ledoit-wolf",
        extractor: Mapping[str, Any] | None = None,
        query_classifier: str = "tied",
        leaf_from: str = "label",
        head: LinearClassifier | None = None,
        subclass_of: Sequence[int] | np.ndarray | None = None,
    ) -> HierarchyModel:
        """Fit PCA, one shrunk Gaussian per class, the class tree and the query classifier.

        ``builder``: ``overlap`` (merge classes with BC ≥ ``threshold``, the paper), ``ward`` (Ward
        linkage of the class means) or ``given`` (``taxonomy``: a file or a :class:`Hierarchy`).
        ``query_classifier``: ``tied`` (LDA on the PCA vectors, fitted here), ``mahalanobis`` (the class
        Gaussians, the paper) or ``head`` (``head``: the network's final layer, a (K, input_dims) linear
        classifier of the raw features whose classes are ``class_names``). ``leaf_from``: how stored images
        get their leaf (``label`` where known, else predicted; ``predicted`` for all).
        The paper's exact setting: ``query_classifier="mahalanobis", leaf_from="predicted", n_components=0.95``.
        ``subclass_of`` (K' class indices): sub-class leaves (DESIGN.md §1.9) — ``labels`` are then sub-class
        indices, ``class_names`` the K classes, and the builder's tree over the classes gets each class's
        sub-classes grafted under it (a given taxonomy names classes).
        """
        check_leaf_sources(query_classifier, leaf_from)
        x = check_features(features)
        subclasses = None
        if subclass_of is not None:
            names_k = (
                list(class_names) if class_names is not None else [str(c) for c in range(int(max(subclass_of)) + 1)]
            )
            subclasses = SubclassMap(names_k, np.asarray(subclass_of))
            if len(subclasses.classes) < 2:
                raise InputError(
                    f"a hierarchy needs at least 2 classes, the labels have 1 (in {subclasses.subclass_of.size} "
                    "sub-classes)",
                    "add a folder per class",
                )
            class_names = subclasses.leaf_names
        k_given = len(class_names) if class_names is not None else None
        y = check_labels(labels, x.shape[0], k_given)
        if builder not in builders.BUILDERS:
            raise InputError(f"unknown builder {builder!r}", f"use one of {', '.join(builders.BUILDERS)}")
        if covariance not in ESTIMATORS:
            raise InputError(f"unknown covariance estimator {covariance!r}", f"use one of {', '.join(ESTIMATORS)}")
        alpha = check_alpha(alpha)
        if builder == "overlap":
            threshold = builders.check_threshold(threshold)
        if builder == "given" and taxonomy is None:
            raise InputError("the 'given' builder needs a taxonomy", "pass --taxonomy FILE")
        k = k_given if k_given is not None else (int(y.max()) + 1 if y.size else 0)
        if k < 2:
            raise InputError(f"a hierarchy needs at least 2 classes, the labels have {k}")
        counts = np.bincount(y, minlength=k)
        if (counts == 0).any():
            empty = np.flatnonzero(counts == 0)
            names = [class_names[i] if class_names is not None else str(i) for i in empty[:5]]
            raise InputError(f"classes {names} have no images", "remove them from the class list or add images")
        names = list(class_names) if class_names is not None else [str(i) for i in range(k)]

        if query_classifier == "head":
            check_head(head, k, x.shape[1])
        projection = Projection.fit(x, n_components)
        z = projection.transform(x)
        gaussians = Gaussians.fit(z, y, k, estimator=covariance)  # type: ignore[arg-type]
        info: dict[str, Any] = {
            "images": int(x.shape[0]),
            "tied_classes": np.flatnonzero(gaussians.tied).tolist() if gaussians.tied is not None else [],
        }
        options: dict[str, Any] = dict(threshold=threshold, taxonomy=taxonomy, leaf_offset=leaf_offset)
        options["estimator"] = covariance
        if subclasses is None:
            tree, report = builders.build_tree(builder, z, y, gaussians, names, **options)
        else:
            s = subclasses.subclass_of
            tree, report = builders.build_with_subclasses(builder, z, y, s, subclasses.classes, names, **options)
        info.update(report)
        return cls(
            projection=projection,
            gaussians=gaussians,
            hierarchy=tree,
            alpha=alpha,
            threshold=threshold if builder == "overlap" else None,
            builder=builder,
            extractor=dict(extractor or {}),
            info=info,
            query_classifier=cast(QueryClassifier, query_classifier),
            leaf_from=cast(LeafFrom, leaf_from),
            classifier=_classifier(query_classifier, z, y, k, covariance, head),
            subclasses=subclasses,
        )

    def with_leaf_sources(
        self,
        query_classifier: str | None = None,
        leaf_from: str | None = None,
        *,
        points: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        projected: bool = True,
        head: LinearClassifier | None = None,
    ) -> HierarchyModel:
        """The same PCA, Gaussians and tree with other leaf sources (a new model id).

        A ``tied`` classifier is fitted on ``points`` (the training features; projected unless
        ``projected=False``) and ``labels`` unless the model already has one; ``head`` needs ``head``.
        """
        kind = self.query_classifier if query_classifier is None else query_classifier
        source = self.leaf_from if leaf_from is None else leaf_from
        check_leaf_sources(kind, source)
        classifier = self.classifier if kind == self.query_classifier else None
        if kind == "head" and head is not None:
            classifier = check_head(head, self.num_classes, self.input_dims)
        elif kind == "head" and classifier is None:
            check_head(None, self.num_classes, self.input_dims)
        elif kind == "tied" and classifier is None:
            if points is None or labels is None:
                raise InputError(
                    "a tied query classifier is fitted on the training features", "pass points= and labels="
                )
            z = np.asarray(points, dtype=np.float64) if projected else self.transform(points)
            y = check_labels(labels, z.shape[0], self.num_classes)
            classifier = fit_tied(z, y, self.num_classes, self.gaussians.estimator)  # type: ignore[arg-type]
        elif kind == "mahalanobis":
            classifier = None
        return replace(
            self, query_classifier=cast(QueryClassifier, kind), leaf_from=cast(LeafFrom, source), classifier=classifier
        )

    def _check_leaf_sources(self) -> None:
        check_leaf_sources(self.query_classifier, self.leaf_from)
        c = self.classifier
        if self.query_classifier == "mahalanobis":
            if c is not None:
                raise InputError("a mahalanobis model has no linear classifier", "pass classifier=None")
            return
        if c is None:
            raise InputError(f"a {self.query_classifier} model needs its linear classifier (classifier=)")
        want = self.dims if self.query_classifier == "tied" else self.input_dims
        space = "PCA vectors" if self.query_classifier == "tied" else "raw features"
        if c.num_classes != self.num_classes or c.input_dims != want:
            raise InputError(
                f"the {self.query_classifier} classifier maps {c.input_dims}-d vectors to {c.num_classes} classes; "
                f"the model has {self.num_classes} classes and {want}-d {space}"
            )

    def with_alpha(self, alpha: float) -> HierarchyModel:
        """The same model with another default α (a new model id)."""
        return replace(self, alpha=check_alpha(alpha))

    def refit_tree(
        self,
        points: np.ndarray,
        labels: np.ndarray,
        *,
        builder: str | None = None,
        threshold: float | None = None,
        taxonomy: str | Path | Hierarchy | None = None,
        alpha: float | None = None,
        projected: bool = True,
    ) -> HierarchyModel:
        """Same PCA and class Gaussians, a new tree (and α) — what tuning t and α needs.

        ``points`` are the training features (projected unless ``projected=False``) and their labels;
        the overlap builder pools them to recompute node statistics. Stored vectors stay valid, so a
        collection can be moved to the result with :func:`hierqdrant.store.collection.reassign`.
        """
        z = np.asarray(points, dtype=np.float64) if projected else self.transform(points)
        y = check_labels(labels, z.shape[0], self.num_classes)
        kind = builder or self.builder
        names = self.leaf_names
        info = dict(self.info)
        t = None
        if kind == "overlap":
            t = builders.check_threshold(threshold if threshold is not None else (self.threshold or 0.3))
        options: dict[str, Any] = dict(threshold=t, taxonomy=taxonomy, estimator=self.gaussians.estimator)
        if self.subclasses is None:
            tree, report = builders.build_tree(kind, z, y, self.gaussians, names, **options)
        else:  # labels are sub-class (leaf) indices here
            sub = self.subclasses
            tree, report = builders.build_with_subclasses(
                kind, z, y, sub.subclass_of, sub.classes, names, leaf_gaussians=self.gaussians, **options
            )
        info.update(report)
        return replace(
            self,
            hierarchy=tree,
            builder=kind,
            threshold=t,
            alpha=self.alpha if alpha is None else check_alpha(alpha),
            info=info,
        )

    # -- properties ------------------------------------------------------------------------------

    @property
    def dims(self) -> int:
        """Vector size stored in Qdrant (PCA dimensions)."""
        return self.projection.dims

    @property
    def input_dims(self) -> int:
        """Size of the raw feature vectors the model expects."""
        return self.projection.input_dims

    @property
    def num_classes(self) -> int:
        return self.hierarchy.num_leaves

    @property
    def class_names(self) -> list[str]:
        """The classes: the labels' vocabulary (with sub-class leaves, not the leaves: :attr:`leaf_names`)."""
        return self.subclasses.classes if self.subclasses is not None else self.hierarchy.class_names

    @property
    def leaf_names(self) -> list[str]:
        return self.hierarchy.class_names

    def subclass_marks(self) -> dict[int, str]:
        """Leaf → "sub-class of <class>" for the leaves of split classes (``hierarchy show``)."""
        if self.subclasses is None:
            return {}
        s = self.subclasses.subclass_of
        counts = np.bincount(s)
        return {leaf: f"sub-class of {self.class_names[c]}" for leaf, c in enumerate(s.tolist()) if counts[c] > 1}

    def class_of_leaf(self, leaves: np.ndarray) -> np.ndarray:
        """The class index of each leaf (the leaf itself without sub-classes)."""
        leaves = np.asarray(leaves, dtype=np.int64)
        return leaves if self.subclasses is None else self.subclasses.subclass_of[leaves]

    @property
    def tree_height(self) -> int:
        return self.hierarchy.tree_height

    def lca_height_matrix(self) -> np.ndarray:
        if self._lca_height is None:
            self._lca_height = self.hierarchy.lca_height_matrix()
        return self._lca_height

    def ancestors(self, leaf: int) -> list[int]:
        """Node ids from ``leaf`` up to the root (the payload's ``ancestors``)."""
        if not 0 <= int(leaf) < self.num_classes:
            raise InputError(f"leaf {leaf} is not a class (0…{self.num_classes - 1})")
        if self._paths is None:
            self._paths = self.hierarchy.ancestor_paths()  # K distinct lists, reused for every point
        return list(self._paths[int(leaf)])

    # -- projection and assignment ---------------------------------------------------------------

    def transform(self, features: np.ndarray) -> np.ndarray:
        """Centre and project raw features: ``z = (x − mean)·Pᵀ`` (N, dims)."""
        return self.projection.transform(check_features(np.atleast_2d(features)))

    def assign(self, features: np.ndarray, *, projected: bool = False, raw: np.ndarray | None = None) -> np.ndarray:
        """Leaf of every row by the model's query classifier (DESIGN.md §1.5, §3.8).

        ``mahalanobis``: ``argmin_c (z − μ_c)ᵀ Σ_c⁻¹ (z − μ_c)``; ``tied``: ``argmax_c`` of the LDA score of z;
        ``head``: ``argmax_c`` of the network's final layer on the raw feature x. ``features`` are raw, or
        projected with ``projected=True``; a caller that projected raw rows itself passes them as ``raw``
        too (the ``head`` needs them: a projected vector alone cannot use it).
        """
        x = np.atleast_2d(np.asarray(features, dtype=np.float64))
        if self.query_classifier == "head":
            assert self.classifier is not None
            if projected:
                if raw is None:
                    raise InputError(
                        "this model's query classifier is the network's head, which reads the raw feature: a "
                        "query given as an already projected vector cannot use it",
                        f"pass the raw {self.input_dims}-d feature (the extractor's output) instead",
                    )
                x = np.atleast_2d(np.asarray(raw, dtype=np.float64))
            if x.shape[1] != self.input_dims:
                raise InputError(f"raw features have {x.shape[1]} dims, the model takes {self.input_dims}")
            return self.classifier(check_features(x))
        z = x
        if not projected:
            z = self.transform(z)
        elif z.shape[1] != self.dims:
            raise InputError(f"projected vectors have {z.shape[1]} dims, the model has {self.dims}")
        if self.query_classifier == "tied":
            assert self.classifier is not None
            return self.classifier(z)
        if self._nearest is None:
            self._nearest = NearestClass.of(*self.gaussians.whitening())
        return self._nearest(z)

    def database_leaves(
        self,
        features: np.ndarray,
        labels: Sequence[int | None] | np.ndarray | None = None,
        *,
        projected: bool = False,
        raw: np.ndarray | None = None,
        leaf_from: str | None = None,
    ) -> np.ndarray:
        """Leaf of every stored item by ``leaf_from`` (None: the model's): its label (a class index ≥ 0;
        None or −1: unknown) with ``"label"``, else — and for items without a label — :meth:`assign`. With
        sub-class leaves a label names the class: the leaf is the query classifier's best sub-class of it."""
        source = self.leaf_from if leaf_from is None else leaf_from
        if source not in LEAF_FROM:
            raise InputError(f"unknown leaf source {source!r}", "use predicted or label")
        n = np.atleast_2d(np.asarray(features)).shape[0]
        known = np.zeros(n, dtype=bool)
        y = np.full(n, -1, dtype=np.int64)
        if labels is not None and source == "label":
            y = np.asarray([-1 if v is None else int(v) for v in labels], dtype=np.int64)
            k = len(self.class_names)
            if y.shape != (n,) or (y >= k).any():
                raise InputError(f"labels must be {n} class indices in 0…{k - 1} (or None / −1)")
            known = y >= 0
            if self.subclasses is not None and known.any():
                rows = np.flatnonzero(known)
                f = np.atleast_2d(np.asarray(features))[rows]
                r = None if raw is None else np.atleast_2d(np.asarray(raw))[rows]
                mine = self.subclasses.subclass_of[None, :] == y[rows, None]
                y[rows] = np.where(mine, self.leaf_scores(f, projected=projected, raw=r), -np.inf).argmax(axis=1)
        if known.all():
            return y
        rows = np.flatnonzero(~known)
        f = np.atleast_2d(np.asarray(features))
        r = None if raw is None else np.atleast_2d(np.asarray(raw))[rows]
        y[rows] = self.assign(f[rows], projected=projected, raw=r)
        return y

    def leaf_scores(
        self, features: np.ndarray, *, projected: bool = False, raw: np.ndarray | None = None
    ) -> np.ndarray:
        """(N, K') scores whose argmax is :meth:`assign`'s leaf: the linear classifier's, or −(squared
        Mahalanobis distance) to each leaf Gaussian."""
        x = np.atleast_2d(np.asarray(features, dtype=np.float64))
        if self.query_classifier == "head":
            assert self.classifier is not None
            if projected and raw is None:
                raise InputError("the head query classifier reads the raw features", "pass raw= beside them")
            return self.classifier.scores(x if not projected else np.atleast_2d(np.asarray(raw, dtype=np.float64)))
        z = x if projected else self.transform(x)
        if self.query_classifier == "tied":
            assert self.classifier is not None
            return self.classifier.scores(z)
        return -self.gaussians.mahalanobis_squared(z)

    def zero_rows(self, z: np.ndarray) -> np.ndarray:
        """(N,) bool: projected rows too close to the origin (the model's mean feature) to have a direction.

        Their cosine to every point is undefined (a zero vector); the searcher refuses such queries.
        "Close" is within 1e-5 of the classes' typical spread (the root of their covariances' mean trace).
        """
        z = np.atleast_2d(np.asarray(z, dtype=np.float64))
        spread = float(np.sqrt(np.mean(np.einsum("kii->k", self.gaussians.covariances))))
        return np.asarray(np.linalg.norm(z, axis=1) <= 1e-5 * spread)

    # -- the distance ----------------------------------------------------------------------------

    def hierarchical_distance(
        self,
        query_z: np.ndarray,
        query_leaves: np.ndarray,
        db_z: np.ndarray,
        db_leaves: np.ndarray,
        alpha: float | None = None,
    ) -> np.ndarray:
        """(Q, N) ``D = (1 − cos(z_q, z_x)) + α · h(LCA(n_q, n_x)) / H`` on projected vectors."""
        a = self.alpha if alpha is None else check_alpha(alpha)
        q = unit_rows(np.atleast_2d(query_z))
        x = unit_rows(np.atleast_2d(db_z))
        cosine = q @ x.T
        lca = self.lca_height_matrix()[np.asarray(query_leaves)[:, None], np.asarray(db_leaves)[None, :]]
        return (1.0 - cosine) + a * lca / max(self.tree_height, 1)

    def distance(
        self,
        query: np.ndarray,
        database: np.ndarray,
        *,
        alpha: float | None = None,
        leaves: np.ndarray | None = None,
    ) -> np.ndarray:
        """The NumPy reference of D for one raw query feature against raw database features (N,).

        Leaves come from the model's query classifier unless ``leaves`` (the database's) are given.
        """
        q, x = np.atleast_2d(query), np.atleast_2d(database)
        zq, zx = self.transform(q), self.transform(x)
        leaf_q = self.assign(zq, projected=True, raw=q)
        leaf_x = self.assign(zx, projected=True, raw=x) if leaves is None else np.asarray(leaves)
        return self.hierarchical_distance(zq, leaf_q, zx, leaf_x, alpha)[0]

    # -- storage (the format: hierqdrant.core.model_files) ------------------------------------------

    @property
    def model_id(self) -> str:
        """Content hash of the manifest and the arrays (16 hex digits): equal models, equal ids."""
        if self._model_id is None:
            self._model_id = model_files.model_id_of(model_files.manifest_of(self))
        return self._model_id

    def to_files(self) -> dict[str, bytes]:
        """``model.json`` (manifest with the model id) and ``arrays.npz``."""
        return model_files.files_of(self)

    @classmethod
    def from_files(cls, files: Mapping[str, bytes], source: str = "the model") -> HierarchyModel:
        """Rebuild a model from :meth:`to_files` output; a corrupt, truncated or foreign file is refused."""
        fields, stated = model_files.model_fields(files, source)
        try:
            model = cls(**fields)
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{source}: {MANIFEST} is missing or has a bad field ({exc})") from None
        if stated not in (None, model.model_id):
            raise InputError(f"{source}: model id {stated} does not match its content")
        return model

    def save(self, directory: str | Path) -> Path:
        """Write ``model.json`` + ``arrays.npz`` into ``directory`` (created; files replaced atomically)."""
        return model_files.save_model(self, directory)

    @classmethod
    def load(cls, directory: str | Path) -> HierarchyModel:
        return cls.from_files(model_files.read_model_files(directory), source=str(directory))

    def summary(self) -> dict[str, Any]:
        tree = self.hierarchy
        return {
            "model_id": self.model_id,
            "leaves": tree.num_leaves,
            "nodes": tree.num_nodes,
            "height": tree.tree_height,
            "levels": tree.num_levels,
            "pca_dims": self.dims,
            "input_dims": self.input_dims,
            "explained_variance": round(float(self.projection.explained_variance_ratio.sum()), 4),
            "builder": self.builder,
            "threshold": self.threshold,
            "alpha": self.alpha,
            "covariance": self.gaussians.estimator,
            "query_classifier": self.query_classifier,
            "leaf_from": self.leaf_from,
        } | ({"classes": len(self.class_names), "subclasses": self.num_classes} if self.subclasses else {})


def check_leaf_sources(query_classifier: str, leaf_from: str) -> None:
    if query_classifier not in QUERY_CLASSIFIERS:
        raise InputError(f"unknown query classifier {query_classifier!r}", f"use one of {', '.join(QUERY_CLASSIFIERS)}")
    if leaf_from not in LEAF_FROM:
        raise InputError(f"unknown leaf source {leaf_from!r}", f"use one of {', '.join(LEAF_FROM)}")


def check_head(head: LinearClassifier | None, num_classes: int, input_dims: int) -> LinearClassifier:
    """The network's final layer as a query classifier: K outputs over the raw ``input_dims``-d features."""
    if head is None:
        raise InputError(
            "the head query classifier needs the network's final layer, which these features do not carry",
            "ingest from images with a checkpoint that has a classifier for these classes, pass --head "
            "CHECKPOINT, or use --query-classifier tied",
        )
    if head.num_classes != num_classes or head.input_dims != input_dims:
        raise InputError(
            f"the network's final layer maps {head.input_dims}-d features to {head.num_classes} classes; "
            f"the model has {num_classes} classes of {input_dims}-d features",
            "use a checkpoint trained on these classes (hierqdrant train), or --query-classifier tied",
        )
    return head


def _classifier(
    kind: str, z: np.ndarray, y: np.ndarray, k: int, estimator: str, head: LinearClassifier | None
) -> LinearClassifier | None:
    if kind == "tied":
        return fit_tied(z, y, k, estimator)  # type: ignore[arg-type]
    return head if kind == "head" else None


ALPHA_MAX = 100.0
"""The largest α accepted (DESIGN.md §3.13): engines return the formula's ``1 − D`` as float32, off by up to
2⁻²⁴·(1 + α) — 6e-6 here, about a float32 cosine's own rounding; from α = 2H on every α ranks alike."""


def check_alpha(alpha: float) -> float:
    a = float(alpha)
    if not np.isfinite(a) or a < 0:
        raise InputError(f"alpha={alpha} must be a finite number ≥ 0", "pass --alpha, e.g. 3")
    if a > ALPHA_MAX:
        raise InputError(
            f"alpha={alpha:g} is above {ALPHA_MAX:g}, the largest α whose D stays exact in float32 (DESIGN.md §3.13)",
            f"pass --alpha ≤ {ALPHA_MAX:g}; α ≥ 2 × the tree's height already ranks by tree level first",
        )
    return a


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Every row scaled to length 1 (a zero row stays zero)."""
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)
