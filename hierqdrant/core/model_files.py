"""The stored form of a :class:`~hierqdrant.core.model.HierarchyModel`: ``model.json`` + ``arrays.npz`` (§2.3).

``model.json`` is the manifest (format, version, builder, threshold, α, covariance estimator, leaf sources,
PCA summary, the tree, the extractor, the fit report, a sha256 digest of every array, the model id);
``arrays.npz`` holds the numbers (read with ``allow_pickle=False``). Nothing is pickled.

Leaf sources (DESIGN.md §1.5) are written only where they differ from what every model meant before they
existed — ``query_classifier`` unless ``"mahalanobis"``, ``leaf_from`` unless ``"predicted"``, and the arrays
``classifier_weight`` / ``classifier_bias`` for a ``tied`` or ``head`` classifier — so a model saved before
has the same manifest, hence the same model id, as the same model fitted now with the paper's setting, and
loads as a Mahalanobis model with predicted leaves.

Sub-class leaves (DESIGN.md §1.9) add ``"subclasses": {"classes": [...], "subclass_of": [...]}`` — only then,
so a model without them keeps its manifest and id.

The model id is the first 16 hex digits of the sha256 of the manifest without the id, as canonical JSON
(sorted keys, no spaces); array digests hash dtype, shape and bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from hierqdrant.core.classifiers import LEAF_FROM, QUERY_CLASSIFIERS, LinearClassifier
from hierqdrant.core.errors import InputError, NotFoundError
from hierqdrant.core.faults import fault
from hierqdrant.core.features import npz_bytes
from hierqdrant.core.fileio import atomic_write
from hierqdrant.core.gaussian import Gaussians, Projection
from hierqdrant.core.hierarchy import Hierarchy
from hierqdrant.core.subclasses import SubclassMap


class StoredModel(Protocol):
    """What the stored form reads of a :class:`~hierqdrant.core.model.HierarchyModel`."""

    @property
    def projection(self) -> Projection: ...
    @property
    def gaussians(self) -> Gaussians: ...
    @property
    def hierarchy(self) -> Hierarchy: ...
    @property
    def alpha(self) -> float: ...
    @property
    def threshold(self) -> float | None: ...
    @property
    def builder(self) -> str: ...
    @property
    def extractor(self) -> dict[str, Any]: ...
    @property
    def info(self) -> dict[str, Any]: ...
    @property
    def query_classifier(self) -> str: ...
    @property
    def leaf_from(self) -> str: ...
    @property
    def classifier(self) -> LinearClassifier | None: ...
    @property
    def subclasses(self) -> SubclassMap | None: ...
    @property
    def model_id(self) -> str: ...
    @property
    def dims(self) -> int: ...
    @property
    def input_dims(self) -> int: ...


MODEL_FORMAT = "hierqdrant.model"
MODEL_VERSION = 1
MANIFEST = "model.json"
ARRAYS = "arrays.npz"
ARRAY_NAMES = ("pca_mean", "pca_components", "pca_explained", "means", "covariances", "counts")
#: Arrays of a ``tied`` or ``head`` query classifier (absent for ``mahalanobis``).
CLASSIFIER_ARRAYS = ("classifier_weight", "classifier_bias")
#: The leaf sources of a manifest without them (every model saved before they existed).
LEGACY_QUERY_CLASSIFIER = "mahalanobis"
LEGACY_LEAF_FROM = "predicted"


def array_digest(arrays: Mapping[str, np.ndarray]) -> dict[str, str]:
    out = {}
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
        out[name] = h.hexdigest()
    return out


def model_arrays(model: StoredModel) -> dict[str, np.ndarray]:
    arrays = {
        "pca_mean": model.projection.mean,
        "pca_components": model.projection.components,
        "pca_explained": model.projection.explained_variance_ratio,
        "means": model.gaussians.means,
        "covariances": model.gaussians.covariances,
        "counts": model.gaussians.counts,
    }
    if model.classifier is not None:
        arrays["classifier_weight"] = np.asarray(model.classifier.weight)
        arrays["classifier_bias"] = np.asarray(model.classifier.bias)
    return arrays


def manifest_of(model: StoredModel) -> dict[str, Any]:
    """The manifest without the model id."""
    gaussians = model.gaussians
    manifest: dict[str, Any] = {
        "format": MODEL_FORMAT,
        "version": MODEL_VERSION,
        "builder": model.builder,
        "threshold": model.threshold,
        "alpha": model.alpha,
        "covariance": gaussians.estimator,
        "tied_classes": np.flatnonzero(gaussians.tied).tolist() if gaussians.tied is not None else [],
        "pca": {
            "input_dims": model.input_dims,
            "dims": model.dims,
            "explained_variance": float(model.projection.explained_variance_ratio.sum()),
        },
        "hierarchy": model.hierarchy.to_dict(),
        "extractor": model.extractor,
        "info": model.info,
        "arrays": array_digest(model_arrays(model)),
    }
    if model.query_classifier != LEGACY_QUERY_CLASSIFIER:
        manifest["query_classifier"] = model.query_classifier
    if model.leaf_from != LEGACY_LEAF_FROM:
        manifest["leaf_from"] = model.leaf_from
    if model.subclasses is not None:  # only then: a model without sub-classes keeps its manifest and id
        manifest["subclasses"] = model.subclasses.to_dict()
    return manifest


def model_id_of(manifest: Mapping[str, Any]) -> str:
    canonical = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def files_of(model: StoredModel) -> dict[str, bytes]:
    manifest = manifest_of(model)
    manifest["model_id"] = model.model_id
    return {
        MANIFEST: json.dumps(manifest, indent=1, sort_keys=True).encode(),
        ARRAYS: npz_bytes(model_arrays(model)),
    }


def model_fields(files: Mapping[str, bytes], source: str) -> tuple[dict[str, Any], str | None]:
    """The constructor arguments of the model in :func:`files_of` output, and the model id its manifest
    states (the caller checks it against the rebuilt model's); a corrupt, truncated or foreign file is refused."""
    if MANIFEST not in files or ARRAYS not in files:
        missing = [n for n in (MANIFEST, ARRAYS) if n not in files]
        raise InputError(f"{source} is missing {', '.join(missing)}", "re-create it with `hierqdrant hierarchy build`")
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
    kind = manifest.get("query_classifier", LEGACY_QUERY_CLASSIFIER)
    leaf_from = manifest.get("leaf_from", LEGACY_LEAF_FROM)
    if kind not in QUERY_CLASSIFIERS or leaf_from not in LEAF_FROM:
        raise InputError(
            f"{source}: unknown leaf source (query_classifier {kind!r}, leaf_from {leaf_from!r})",
            "upgrade hierqdrant or refit the model",
        )
    names = ARRAY_NAMES + (CLASSIFIER_ARRAYS if kind != LEGACY_QUERY_CLASSIFIER else ())
    try:
        with np.load(io.BytesIO(files[ARRAYS]), allow_pickle=False) as data:
            arrays = {name: data[name] for name in names}
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError) as exc:
        raise InputError(f"{source}: {ARRAYS} is corrupt or truncated ({exc})", "re-create the model") from None
    if array_digest(arrays) != manifest.get("arrays"):
        raise InputError(
            f"{source}: {ARRAYS} does not match its manifest (corrupt, or a write was cut off between the two)",
            "re-create it: run `hierqdrant hierarchy build` (or the ingest that stored it) again",
        )
    try:
        tree = Hierarchy.from_dict(manifest["hierarchy"])
        tied = np.zeros(tree.num_leaves, dtype=bool)
        tied[np.asarray(manifest.get("tied_classes", []), dtype=np.int64)] = True
        classifier = None
        if kind != LEGACY_QUERY_CLASSIFIER:
            classifier = LinearClassifier(arrays["classifier_weight"], arrays["classifier_bias"])
        fields = dict(
            projection=Projection(arrays["pca_mean"], arrays["pca_components"], arrays["pca_explained"]),
            gaussians=Gaussians(arrays["means"], arrays["covariances"], arrays["counts"], manifest["covariance"], tied),
            hierarchy=tree,
            alpha=float(manifest["alpha"]),
            threshold=manifest.get("threshold"),
            builder=str(manifest["builder"]),
            extractor=dict(manifest.get("extractor") or {}),
            info=dict(manifest.get("info") or {}),
            query_classifier=kind,
            leaf_from=leaf_from,
            classifier=classifier,
            subclasses=SubclassMap.from_dict(manifest["subclasses"]) if "subclasses" in manifest else None,
        )
    except (KeyError, TypeError, ValueError, InputError) as exc:
        raise InputError(f"{source}: {MANIFEST} is missing or has a bad field ({exc})") from None
    stated = manifest.get("model_id")
    return fields, None if stated is None else str(stated)


def save_model(model: StoredModel, directory: str | Path) -> Path:
    """Write ``model.json`` + ``arrays.npz`` into ``directory`` (created; files replaced atomically)."""
    out = Path(directory)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a directory", "choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    # Arrays first, manifest last: a reader never sees a manifest whose arrays are missing. A kill between
    # the two leaves the new arrays beside the old manifest, which load refuses (their digests differ)
    # until the same save runs again.
    files = files_of(model)
    atomic_write(out / ARRAYS, files[ARRAYS])
    fault("after-model-arrays")
    atomic_write(out / MANIFEST, files[MANIFEST])
    return out


def read_model_files(directory: str | Path) -> dict[str, bytes]:
    path = Path(directory)
    if not path.is_dir():
        raise NotFoundError(f"model directory {path} does not exist", "pass the --out of `hierqdrant hierarchy build`")
    return {name: (path / name).read_bytes() for name in (MANIFEST, ARRAYS) if (path / name).is_file()}
