"""``HierarchyModel``: PCA + class Gaussians + class tree, fitted once and stored with a collection.

The ranking distance (DESIGN.md §1.6):

    D(q, x) = D_C(q, x) + α · h(LCA(n_q, n_x)) / H

with ``D_C = 1 − cos(z_q, z_x)`` on the centred PCA vectors, ``n`` the leaf of an image (smallest
Mahalanobis distance to a class Gaussian), ``h`` the node height (leaves 0) and ``H`` the root's height.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from hierqdrant.core import build as builders
from hierqdrant.core.errors import InputError, NotFoundError
from hierqdrant.core.features import check_features, check_labels, npz_bytes
from hierqdrant.core.fileio import atomic_write
from hierqdrant.core.gaussian import ESTIMATORS, Gaussians, NearestClass, Projection
from hierqdrant.core.hierarchy import Hierarchy

MODEL_FORMAT = "hierqdrant.model"
MODEL_VERSION = 1
MANIFEST = "model.json"
ARRAYS = "arrays.npz"
_ARRAY_NAMES = ("pca_mean", "pca_components", "pca_explained", "means", "covariances", "counts")


def _array_digest(arrays: Mapping[str, np.ndarray]) -> dict[str, str]:
    out = {}
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
        out[name] = h.hexdigest()
    return out


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

    def __post_init__(self) -> None:
        self.alpha = check_alpha(self.alpha)
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
    ) -> HierarchyModel:
        """Fit PCA, one shrunk Gaussian per class, and the class tree.

        ``builder``: ``overlap`` (merge classes with BC ≥ ``threshold``, the paper), ``ward`` (Ward
        linkage of the class means) or ``given`` (``taxonomy``: a file or a :class:`Hierarchy`).
        """
        x = check_features(features)
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

        projection = Projection.fit(x, n_components)
        z = projection.transform(x)
        gaussians = Gaussians.fit(z, y, k, estimator=covariance)  # type: ignore[arg-type]
        info: dict[str, Any] = {
            "images": int(x.shape[0]),
            "tied_classes": np.flatnonzero(gaussians.tied).tolist() if gaussians.tied is not None else [],
        }
        if builder == "overlap":
            tree, report = builders.build_overlap(
                z,
                y,
                gaussians,
                threshold,
                class_names=names,
                estimator=covariance,  # type: ignore[arg-type]
            )
            info["overlap_levels"] = [vars(level) for level in report.levels]
            info["root_added"] = report.root_added
        elif builder == "ward":
            tree = builders.build_ward(gaussians.means, names)
        else:
            if isinstance(taxonomy, Hierarchy):
                tree = taxonomy
                if tree.num_leaves != k:
                    raise InputError(f"the taxonomy has {tree.num_leaves} leaves for {k} classes")
            else:
                assert taxonomy is not None
                tree = builders.build_given(taxonomy, names, k, leaf_offset)
        return cls(
            projection=projection,
            gaussians=gaussians,
            hierarchy=tree,
            alpha=alpha,
            threshold=threshold if builder == "overlap" else None,
            builder=builder,
            extractor=dict(extractor or {}),
            info=info,
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
        names = self.class_names
        info = dict(self.info)
        t = None
        if kind == "overlap":
            t = builders.check_threshold(threshold if threshold is not None else (self.threshold or 0.3))
            tree, report = builders.build_overlap(
                z,
                y,
                self.gaussians,
                t,
                class_names=names,
                estimator=self.gaussians.estimator,  # type: ignore[arg-type]
            )
            info["overlap_levels"] = [vars(level) for level in report.levels]
            info["root_added"] = report.root_added
        elif kind == "ward":
            tree = builders.build_ward(self.gaussians.means, names)
        elif kind == "given":
            if taxonomy is None:
                raise InputError("the 'given' builder needs a taxonomy", "pass --taxonomy FILE")
            tree = taxonomy if isinstance(taxonomy, Hierarchy) else builders.build_given(taxonomy, names, len(names))
        else:
            raise InputError(f"unknown builder {kind!r}", f"use one of {', '.join(builders.BUILDERS)}")
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
        return self.hierarchy.class_names

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

    def assign(self, features: np.ndarray, *, projected: bool = False) -> np.ndarray:
        """Leaf of every row: ``argmin_c (z − μ_c)ᵀ Σ_c⁻¹ (z − μ_c)`` (the Mahalanobis distance)."""
        z = np.atleast_2d(np.asarray(features, dtype=np.float64))
        if not projected:
            z = self.transform(z)
        elif z.shape[1] != self.dims:
            raise InputError(f"projected vectors have {z.shape[1]} dims, the model has {self.dims}")
        if self._nearest is None:
            self._nearest = NearestClass.of(*self.gaussians.whitening())
        return self._nearest(z)

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

        Leaves are assigned by Mahalanobis distance unless ``leaves`` (the database's) are given.
        """
        zq = self.transform(np.atleast_2d(query))
        zx = self.transform(database)
        leaf_q = self.assign(zq, projected=True)
        leaf_x = self.assign(zx, projected=True) if leaves is None else np.asarray(leaves)
        return self.hierarchical_distance(zq, leaf_q, zx, leaf_x, alpha)[0]

    # -- storage ---------------------------------------------------------------------------------

    def _arrays(self) -> dict[str, np.ndarray]:
        return {
            "pca_mean": self.projection.mean,
            "pca_components": self.projection.components,
            "pca_explained": self.projection.explained_variance_ratio,
            "means": self.gaussians.means,
            "covariances": self.gaussians.covariances,
            "counts": self.gaussians.counts,
        }

    def _manifest(self) -> dict[str, Any]:
        return {
            "format": MODEL_FORMAT,
            "version": MODEL_VERSION,
            "builder": self.builder,
            "threshold": self.threshold,
            "alpha": self.alpha,
            "covariance": self.gaussians.estimator,
            "tied_classes": np.flatnonzero(self.gaussians.tied).tolist() if self.gaussians.tied is not None else [],
            "pca": {
                "input_dims": self.input_dims,
                "dims": self.dims,
                "explained_variance": float(self.projection.explained_variance_ratio.sum()),
            },
            "hierarchy": self.hierarchy.to_dict(),
            "extractor": self.extractor,
            "info": self.info,
            "arrays": _array_digest(self._arrays()),
        }

    @property
    def model_id(self) -> str:
        """Content hash of the manifest and the arrays (16 hex digits): equal models, equal ids."""
        if self._model_id is None:
            canonical = json.dumps(self._manifest(), sort_keys=True, separators=(",", ":"))
            self._model_id = hashlib.sha256(canonical.encode()).hexdigest()[:16]
        return self._model_id

    def to_files(self) -> dict[str, bytes]:
        """``model.json`` (manifest with the model id) and ``arrays.npz``."""
        manifest = self._manifest()
        manifest["model_id"] = self.model_id
        return {
            MANIFEST: json.dumps(manifest, indent=1, sort_keys=True).encode(),
            ARRAYS: npz_bytes(self._arrays()),
        }

    @classmethod
    def from_files(cls, files: Mapping[str, bytes], source: str = "the model") -> HierarchyModel:
        """Rebuild a model from :meth:`to_files` output; a corrupt, truncated or foreign file is refused."""
        if MANIFEST not in files or ARRAYS not in files:
            missing = [n for n in (MANIFEST, ARRAYS) if n not in files]
            raise InputError(
                f"{source} is missing {', '.join(missing)}", "re-create it with `hierqdrant hierarchy build`"
            )
        try:
            manifest = json.loads(files[MANIFEST].decode())
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise InputError(f"{source}: {MANIFEST} is not valid JSON (corrupt or truncated)") from None
        if not isinstance(manifest, dict) or manifest.get("format") != MODEL_FORMAT:
            raise InputError(f"{source} is not a hierqdrant model ({MANIFEST} has no format {MODEL_FORMAT!r})")
        if manifest.get("version") != MODEL_VERSION:
            raise InputError(
                f"{source} has model format version {manifest.get('version')}, this hierqdrant reads {MODEL_VERSION}",
                "upgrade hierqdrant or refit the model",
            )
        try:
            with np.load(io.BytesIO(files[ARRAYS]), allow_pickle=False) as data:
                arrays = {name: data[name] for name in _ARRAY_NAMES}
        except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError) as exc:
            raise InputError(f"{source}: {ARRAYS} is corrupt or truncated ({exc})", "re-create the model") from None
        if _array_digest(arrays) != manifest.get("arrays"):
            raise InputError(f"{source}: {ARRAYS} does not match its manifest (corrupt or mixed files)")
        try:
            tree = Hierarchy.from_dict(manifest["hierarchy"])
            tied = np.zeros(tree.num_leaves, dtype=bool)
            tied[np.asarray(manifest.get("tied_classes", []), dtype=np.int64)] = True
            model = cls(
                projection=Projection(arrays["pca_mean"], arrays["pca_components"], arrays["pca_explained"]),
                gaussians=Gaussians(
                    arrays["means"], arrays["covariances"], arrays["counts"], manifest["covariance"], tied
                ),
                hierarchy=tree,
                alpha=float(manifest["alpha"]),
                threshold=manifest.get("threshold"),
                builder=str(manifest["builder"]),
                extractor=dict(manifest.get("extractor") or {}),
                info=dict(manifest.get("info") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{source}: {MANIFEST} is missing or has a bad field ({exc})") from None
        if manifest.get("model_id") not in (None, model.model_id):
            raise InputError(f"{source}: model id {manifest.get('model_id')} does not match its content")
        return model

    def save(self, directory: str | Path) -> Path:
        """Write ``model.json`` + ``arrays.npz`` into ``directory`` (created; files replaced atomically)."""
        out = Path(directory)
        if out.exists() and not out.is_dir():
            raise InputError(f"{out} exists and is not a directory", "choose another --out")
        out.mkdir(parents=True, exist_ok=True)
        # Arrays first, manifest last: a reader never sees a manifest whose arrays are missing.
        for name, blob in sorted(self.to_files().items(), key=lambda kv: kv[0] == MANIFEST):
            atomic_write(out / name, blob)
        return out

    @classmethod
    def load(cls, directory: str | Path) -> HierarchyModel:
        path = Path(directory)
        if not path.is_dir():
            raise NotFoundError(
                f"model directory {path} does not exist", "pass the --out of `hierqdrant hierarchy build`"
            )
        files = {}
        for name in (MANIFEST, ARRAYS):
            if (path / name).is_file():
                files[name] = (path / name).read_bytes()
        return cls.from_files(files, source=str(path))

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
        }


def check_alpha(alpha: float) -> float:
    a = float(alpha)
    if not np.isfinite(a) or a < 0:
        raise InputError(f"alpha={alpha} must be a finite number ≥ 0", "pass --alpha, e.g. 3")
    return a


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Every row scaled to length 1 (a zero row stays zero)."""
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)
