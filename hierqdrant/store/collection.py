"""A hierarchical collection: create it, attach the fitted model, upsert points, reassign leaves.

Every point carries its PCA vector (cosine distance) and, under one payload namespace key
(default ``hq``), where it sits in the tree (DESIGN.md §2):

    {"hq": {"leaf": 17, "ancestors": [17, 212, 240, 251], "label": "Laysan_Albatross", "model": "<id>"}}

beside the application's own payload. Point ids are UUID5 of the collection name and the item's key
(e.g. the image's relative path), so a re-run updates instead of duplicating and an interrupted run
resumes.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from qdrant_client import QdrantClient

from hierqdrant.core.errors import InputError, ModelMismatchError, NotFoundError
from hierqdrant.core.model import HierarchyModel
from hierqdrant.store.engines import Engine, as_engine

DEFAULT_PAYLOAD_KEY = "hq"
INFO_FORMAT = "hierqdrant.collection"
_NAMESPACE = uuid.UUID("6f1c1b44-3c1e-5b7a-9d0e-8a5e2f6c4b11")


def point_id(collection: str, key: str) -> str:
    """Deterministic point id: ``uuid5(namespace, "<collection>/<key>")``."""
    return str(uuid.uuid5(_NAMESPACE, f"{collection}/{key}"))


def check_payload_key(key: str) -> str:
    if not key or not key.replace("_", "").isalnum():
        raise InputError(f"payload key {key!r} must be letters, digits or '_'", "e.g. --payload-key hq")
    return key


def collection_info(model: HierarchyModel, payload_key: str) -> dict[str, Any]:
    """The small description stored with the collection (beside the model files)."""
    return {
        "format": INFO_FORMAT,
        "model_id": model.model_id,
        "payload_key": payload_key,
        "dims": model.dims,
        "input_dims": model.input_dims,
        "classes": model.num_classes,
        "height": model.tree_height,
        "levels": model.hierarchy.num_levels,
        "alpha": model.alpha,
        "extractor": model.extractor,
        "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def create_collection(
    client: Engine | QdrantClient,
    name: str,
    model: HierarchyModel,
    *,
    payload_key: str = DEFAULT_PAYLOAD_KEY,
    hnsw_m: int | None = None,
    hnsw_ef_construct: int | None = None,
) -> Engine:
    """Create ``name`` for ``model`` (vector size = PCA dims, cosine, indexes on the payload paths)
    and store the model with it. An existing collection must already hold this model."""
    engine = as_engine(client)
    key = check_payload_key(payload_key)
    if engine.exists(name):
        check_model_matches(engine, name, model)
        return engine
    engine.create(
        name,
        model.dims,
        integer_index=[f"{key}.ancestors", f"{key}.leaf"],
        keyword_index=[f"{key}.model"],
        hnsw_m=hnsw_m,
        hnsw_ef_construct=hnsw_ef_construct,
    )
    engine.write_model(name, model.to_files(), collection_info(model, key))
    return engine


def read_collection_model(client: Engine | QdrantClient, name: str) -> tuple[HierarchyModel, dict[str, Any]]:
    """The model stored with ``name`` and the collection's info dict."""
    engine = as_engine(client)
    require_collection(engine, name)
    stored = engine.read_model(name)
    if stored is None:
        raise NotFoundError(
            f"collection {name!r} has no hierqdrant model",
            "ingest it with `hierqdrant ingest` or pass model= to the searcher",
        )
    files, info = stored
    model = HierarchyModel.from_files(files, source=f"the model of collection {name!r}")
    return model, dict(info)


def require_collection(engine: Engine, name: str) -> None:
    if not engine.exists(name):
        names = engine.collections()
        choices = f"collections here: {', '.join(names)}" if names else "the store has no collections yet"
        raise NotFoundError(f"collection {name!r} does not exist at {engine.location}", choices)


def check_model_matches(engine: Engine, name: str, model: HierarchyModel) -> dict[str, Any]:
    """Refuse a model whose vector size or id differs from the collection's."""
    size = engine.vector_size(name)
    if size != model.dims:
        raise ModelMismatchError(
            f"collection {name!r} stores {size}-d vectors but the model projects to {model.dims}-d",
            "use the collection's own model or another collection name",
        )
    info = engine.read_info(name) or {}
    stored_id = info.get("model_id")
    if stored_id is not None and stored_id != model.model_id:
        raise ModelMismatchError(
            f"collection {name!r} was built with model {stored_id}, not {model.model_id}",
            "use the collection's own model (omit model=), reassign the collection, or use another name",
        )
    return info


def hq_payload(
    model: HierarchyModel,
    leaf: int,
    *,
    label: int | None = None,
    split: str | None = None,
    norm: float | None = None,
) -> dict[str, Any]:
    """The ``hq`` payload of one point: leaf, ancestor path, label name, model id (and split).

    ``norm`` is ‖z‖ of the projected vector: Qdrant stores cosine vectors unit-normalised, and the
    norm lets :func:`iter_points` give back z itself (Mahalanobis assignment needs it).
    """
    out: dict[str, Any] = {
        "leaf": int(leaf),
        "ancestors": model.ancestors(int(leaf)),
        "model": model.model_id,
    }
    if norm is not None:
        out["norm"] = float(norm)
    if label is not None:
        out["label"] = model.class_names[int(label)]
    if split is not None:
        out["split"] = split
    return out


@dataclass
class UpsertReport:
    points: int
    batches: int
    seconds: float


def upsert_points(
    client: Engine | QdrantClient,
    name: str,
    model: HierarchyModel,
    vectors: np.ndarray,
    keys: Sequence[str],
    *,
    labels: Sequence[int | None] | np.ndarray | None = None,
    splits: Sequence[str | None] | None = None,
    payloads: Sequence[Mapping[str, Any]] | None = None,
    leaves: np.ndarray | None = None,
    projected: bool = False,
    payload_key: str | None = None,
    batch_size: int = 1024,
    on_batch: Callable[[int], None] | None = None,
) -> UpsertReport:
    """Project, assign leaves and upsert in batches; the caller's ``payloads`` are kept beside ``hq``.

    ``keys`` name the items (relative paths); point ids are ``point_id(name, key)``. ``leaves``
    overrides the Mahalanobis assignment (e.g. ``--leaf-from label``). The model must be the
    collection's (checked before anything is written).
    """
    engine = as_engine(client)
    require_collection(engine, name)
    info = check_model_matches(engine, name, model)
    key = check_payload_key(payload_key or info.get("payload_key", DEFAULT_PAYLOAD_KEY))
    x = np.atleast_2d(np.asarray(vectors))
    n = x.shape[0]
    _check_lengths(n, keys=keys, labels=labels, splits=splits, payloads=payloads, leaves=leaves)
    started = time.perf_counter()
    batches = 0
    # One engine call per chunk: the engine batches its requests by batch_size, and the embedded
    # engine flushes to disk once per call (a flush per 1,024 points cost up to a third of the time).
    chunk = max(batch_size, 32768)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        z = x[start:stop] if projected else model.transform(x[start:stop])
        if z.shape[1] != model.dims:
            raise InputError(f"vectors have {z.shape[1]} dims, the collection stores {model.dims}")
        leaf = model.assign(z, projected=True) if leaves is None else np.asarray(leaves[start:stop])
        norms = np.linalg.norm(z, axis=1)
        body = []
        for i, row in enumerate(range(start, stop)):
            label = None if labels is None else labels[row]
            split = None if splits is None else splits[row]
            hq = hq_payload(
                model, int(leaf[i]), label=None if label is None else int(label), split=split, norm=norms[i]
            )
            own = dict(payloads[row]) if payloads is not None else {}
            own[key] = hq
            body.append(own)
        ids = [point_id(name, keys[row]) for row in range(start, stop)]
        engine.upsert(name, ids, z.astype(np.float32), body, batch_size=batch_size)
        batches += 1
        if on_batch is not None:
            on_batch(stop - start)
    return UpsertReport(points=n, batches=batches, seconds=time.perf_counter() - started)


def _check_lengths(n: int, **columns: Any) -> None:
    for column, values in columns.items():
        if values is not None and len(values) != n:
            raise InputError(f"{len(values)} {column} for {n} vectors", "give one per vector")


def iter_points(
    engine: Engine,
    name: str,
    *,
    with_vectors: bool = True,
    batch_size: int = 1024,
    payload_key: str = DEFAULT_PAYLOAD_KEY,
    filter: Any = None,
) -> Iterator[tuple[list[str], np.ndarray | None, list[dict[str, Any]]]]:
    """Batches of (ids, projected vectors z or None, payloads) of a whole collection.

    Qdrant keeps cosine vectors unit-normalised; they are scaled back by the stored ``norm``.
    """
    for records in engine.scroll(name, with_vectors=with_vectors, batch_size=batch_size, filter=filter):
        if not records:
            continue
        ids = [r.id for r in records]
        payloads = [r.payload for r in records]
        vecs = None
        if with_vectors:
            vecs = np.stack([np.asarray(r.vector, dtype=np.float64) for r in records])
            norms = np.asarray(
                [(p.get(payload_key) or {}).get("norm", 1.0) for p in payloads], dtype=np.float64
            )
            vecs *= (norms / np.maximum(np.linalg.norm(vecs, axis=1), 1e-30))[:, None]
        yield ids, vecs, payloads


def reassign(
    client: Engine | QdrantClient,
    name: str,
    model: HierarchyModel,
    *,
    batch_size: int = 1024,
    leaf_from: str = "predicted",
) -> int:
    """Move a collection to a refitted model that shares its PCA: rewrite every point's ``hq``
    payload (new leaves and ancestor paths) in batches, vectors untouched, then store the model."""
    engine = as_engine(client)
    old, info = read_collection_model(engine, name)
    if not (
        old.dims == model.dims
        and np.array_equal(old.projection.mean, model.projection.mean)
        and np.array_equal(old.projection.components, model.projection.components)
    ):
        raise ModelMismatchError(
            f"the new model's PCA differs from collection {name!r}'s: its vectors would change",
            "re-ingest into a new collection instead of reassigning",
        )
    key = info.get("payload_key", DEFAULT_PAYLOAD_KEY)
    updated = 0
    for ids, vecs, payloads in iter_points(
        engine, name, with_vectors=leaf_from == "predicted", batch_size=batch_size, payload_key=key
    ):
        if leaf_from == "predicted":
            assert vecs is not None
            leaves = model.assign(vecs, projected=True)
        else:
            index = {c: i for i, c in enumerate(model.class_names)}
            leaves = np.asarray([index[p.get(key, {}).get("label")] for p in payloads])
        values = []
        for leaf, payload in zip(leaves, payloads, strict=True):
            old_hq = payload.get(key, {})
            hq = hq_payload(model, int(leaf))
            for extra in ("label", "split", "norm"):
                if extra in old_hq:
                    hq[extra] = old_hq[extra]
            values.append(hq)
        engine.set_payload(name, ids, values, key=key, batch_size=batch_size)
        updated += len(ids)
    engine.write_model(name, model.to_files(), collection_info(model, key))
    return updated
