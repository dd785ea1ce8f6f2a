"""A hierarchical collection: create it, attach the fitted model, upsert points, reassign leaves.

Every point carries its PCA vector (cosine distance) and, under one payload namespace key
(default ``hq``), where it sits in the tree (DESIGN.md §2):

    {"hq": {"leaf": 17, "ancestors": [17, 212, 240, 251], "label": "Laysan_Albatross", "model": "<id>"}}

beside the application's own payload. Point ids are UUID5 of the collection's id namespace (its name when
it was created, recorded in its info dict) and the item's key (e.g. the image's relative path), so a re-run
updates instead of duplicating, an interrupted run resumes, and a renamed collection keeps its ids.

The info dict's ``state`` (DESIGN.md §2.6) says whether the points are all there: ``"incomplete"`` while an
ingest writes (set before its first point), ``"complete"`` after its last upsert and optimize (set last);
the lifecycle lives in :mod:`hierqdrant.store.lifecycle`, whose names are re-exported here.

An **attached** collection (DESIGN.md §2.7) is an application's own: its points keep their vectors (the
info dict names the one the model was fitted on: ``vector``) and payloads, and get only the ``hq`` key
(:func:`hq_payload_for` makes it for new points). Nothing here writes vectors into such a collection.
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
from hierqdrant.core.faults import fault
from hierqdrant.core.model import HierarchyModel, unit_rows
from hierqdrant.store.engines import Engine, as_engine
from hierqdrant.store.engines.base import EngineBase
from hierqdrant.store.engines.cluster import check_layout
from hierqdrant.store.engines.vectors import vector_config
from hierqdrant.store.lifecycle import STATES as STATES
from hierqdrant.store.lifecycle import State as State
from hierqdrant.store.lifecycle import check_intact as check_intact
from hierqdrant.store.lifecycle import check_recreate as check_recreate
from hierqdrant.store.lifecycle import collection_state as collection_state
from hierqdrant.store.lifecycle import id_namespace as id_namespace
from hierqdrant.store.lifecycle import is_attached as is_attached
from hierqdrant.store.lifecycle import new_generation, open_for_writing
from hierqdrant.store.lifecycle import not_a_hierqdrant_collection as not_a_hierqdrant_collection
from hierqdrant.store.lifecycle import refuse_attached as refuse_attached
from hierqdrant.store.lifecycle import set_state as set_state
from hierqdrant.store.lifecycle import state_warnings as state_warnings
from hierqdrant.store.lifecycle import writing as writing

DEFAULT_PAYLOAD_KEY = "hq"
INFO_FORMAT = "hierqdrant.collection"
_NAMESPACE = uuid.UUID("6f1c1b44-3c1e-5b7a-9d0e-8a5e2f6c4b11")
ATTACHED_EXTRACTOR = "qdrant-vector"
"""The extractor name of a model fitted on an attached collection's own (unit-normalised) vectors."""


def point_id(collection: str, key: str) -> str:
    """Deterministic point id: ``uuid5(namespace, "<collection>/<key>")``; ``collection`` is the collection's
    id namespace (:func:`id_namespace`: its name when it was created)."""
    return str(uuid.uuid5(_NAMESPACE, f"{collection}/{key}"))


def check_payload_key(key: str) -> str:
    if not key or not key.replace("_", "").isalnum():
        raise InputError(f"payload key {key!r} must be letters, digits or '_'", "e.g. --payload-key hq")
    return key


def collection_info(
    model: HierarchyModel,
    payload_key: str,
    state: State = "complete",
    fit_inputs: Mapping[str, Any] | None = None,
    *,
    kept: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The small description stored with the collection (beside the model files); ``fit_inputs``: what an
    ingest fitted the model on (:mod:`hierqdrant.pipelines.fingerprint`), recorded when given; ``kept``: the
    info dict it replaces, whose identity (``id_namespace``, ``generation``) and ``points`` it keeps."""
    info = {
        "state": state,
        "format": INFO_FORMAT,
        "model_id": model.model_id,
        "payload_key": payload_key,
        "dims": model.dims,
        "input_dims": model.input_dims,
        "classes": model.num_classes,
        "height": model.tree_height,
        "levels": model.hierarchy.num_levels,
        "alpha": model.alpha,
        "query_classifier": model.query_classifier,
        "leaf_from": model.leaf_from,
        "extractor": model.extractor,
        "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if fit_inputs is not None:
        info["fit_inputs"] = dict(fit_inputs)
    for k in ("id_namespace", "generation", "points"):
        if kept is not None and k in kept:
            info[k] = kept[k]
    return info


def attached_info(
    model: HierarchyModel, payload_key: str, vector: str, label_key: str, state: State = "complete"
) -> dict[str, Any]:
    """The info dict of an attached collection: :func:`collection_info` plus the application's vector name,
    its distance and the payload field the classes came from."""
    info = collection_info(model, payload_key, state)
    return {**info, "vector": vector, "label_key": label_key, "distance": "Cosine"}


def searched_dims(engine: Engine, name: str, info: Mapping[str, Any] | None) -> int:
    """The size of the vector searches use: an attached collection's application vector, else the one
    unnamed vector (``InputError`` for a collection of named vectors that is not attached)."""
    if is_attached(info):
        assert info is not None
        spec = vector_config(engine, name).get(str(info["vector"]))
        if spec is not None:
            return spec.size
    return engine.vector_size(name)


def create_collection(
    client: Engine | QdrantClient,
    name: str,
    model: HierarchyModel,
    *,
    payload_key: str = DEFAULT_PAYLOAD_KEY,
    hnsw_m: int | None = None,
    hnsw_ef_construct: int | None = None,
    state: State | None = None,
    shards: int | None = None,
    replicas: int | None = None,
    fit_inputs: Mapping[str, Any] | None = None,
) -> Engine:
    """Create ``name`` for ``model`` (vector size = PCA dims, cosine, indexes on the payload paths)
    and store the model with it. An existing collection must already hold this model (and keeps its
    layout: ``shards`` / ``replicas``, a server's shard number and replication factor, apply to a new one;
    the embedded engine refuses either above 1, before anything is written).

    ``state`` is stored in the info dict: a new collection gets it (default ``"complete"``), an existing
    one is moved to it (default: left as it is). An existing collection without a model and without
    points (a create that stopped before its model) gets the model now. ``fit_inputs`` (what ingest fitted
    the model on) is recorded with a model stored now, never over an existing one's, and so are the point
    ids' namespace (``name``) and a new generation (:mod:`hierqdrant.store.lifecycle`). Nothing is written
    to an existing collection before the writer holds all it needs (:func:`open_for_writing`).
    """
    engine = as_engine(client)
    key = check_payload_key(payload_key)
    made = {"id_namespace": name, "generation": new_generation()}
    info = collection_info(model, key, state or "complete", fit_inputs, kept=made)
    layout = check_layout(engine, shards, replicas)
    with writing(engine, name):
        if engine.exists(name):
            refuse_attached(name, engine.read_info(name), "ingest into it")
            open_for_writing(engine, name)
            stored = check_model_matches(engine, name, model)
            if not stored:
                points = engine.count(name)
                if points:
                    raise not_a_hierqdrant_collection(name, points)
                engine.write_model(name, model.to_files(), info)
                fault("after-model")
            elif state is not None and stored.get("state", "complete") != state:
                set_state(engine, name, state)
            return engine
        options: dict[str, Any] = {
            "integer_index": [f"{key}.ancestors", f"{key}.leaf"],
            "keyword_index": [f"{key}.model"],
            "hnsw_m": hnsw_m,
            "hnsw_ef_construct": hnsw_ef_construct,
            **layout,
        }
        if isinstance(engine, EngineBase):
            engine.create(name, model.dims, model=(model.to_files(), info), **options)
        else:  # a third-party engine of the bare protocol
            engine.create(name, model.dims, **options)
            engine.write_model(name, model.to_files(), info)
        fault("after-model")
    return engine


def read_collection_model(client: Engine | QdrantClient, name: str) -> tuple[HierarchyModel, dict[str, Any]]:
    """The model stored with ``name`` and the collection's info dict."""
    engine = as_engine(client)
    require_collection(engine, name)
    return model_of(name, engine.read_model(name))


def model_of(
    name: str, stored: tuple[Mapping[str, bytes], Mapping[str, Any]] | None
) -> tuple[HierarchyModel, dict[str, Any]]:
    """The model and info dict an engine's ``read_model(name)`` returned (sync or async engine alike);
    NotFoundError when the collection has none."""
    if stored is None:
        raise NotFoundError(
            f"collection {name!r} has no hierqdrant model",
            "ingest it with `hierqdrant ingest` or pass model= to the searcher",
        )
    files, info = stored
    return HierarchyModel.from_files(files, source=f"the model of collection {name!r}"), dict(info)


def require_collection(engine: Engine, name: str) -> None:
    """NotFoundError naming the collections there when ``name`` is not one; a damaged one (the embedded
    store's folder without ``collection.json``) is reported as such (:func:`check_intact`), as ``info`` does."""
    if not engine.exists(name):
        check_intact(engine, name)
        raise missing_collection(name, engine.location, engine.collections())


def missing_collection(name: str, location: str, names: Sequence[str]) -> NotFoundError:
    """The error for a collection that is not there, naming the ones that are (sync or async engine)."""
    choices = f"collections here: {', '.join(names)}" if names else "the store has no collections yet"
    return NotFoundError(f"collection {name!r} does not exist at {location}", choices)


def check_model_matches(engine: Engine, name: str, model: HierarchyModel) -> dict[str, Any]:
    """Refuse a model whose vector size or id differs from the collection's (an attached collection: the
    size of its named vector against the model's input size)."""
    info = engine.read_info(name) or {}
    if is_attached(info):
        vector = str(info["vector"])
        spec = vector_config(engine, name).get(vector)
        if spec is None or spec.size != model.input_dims:
            have = "no such vector" if spec is None else f"{spec.size}-d vectors"
            raise ModelMismatchError(
                f"collection {name!r} has {have} under {vector!r} but the model takes {model.input_dims}-d ones",
                "use the collection's own model (omit model=) or attach it again (hierqdrant attach --refit)",
            )
    else:
        size = engine.vector_size(name)
        if size != model.dims:
            raise ModelMismatchError(
                f"collection {name!r} stores {size}-d vectors but the model projects to {model.dims}-d",
                "use the collection's own model or another collection name",
            )
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
    return hq_payloads(
        model,
        [leaf],
        labels=None if label is None else [label],
        splits=None if split is None else [split],
        norms=None if norm is None else [norm],
    )[0]


def hq_payloads(
    model: HierarchyModel,
    leaves: Sequence[int] | np.ndarray,
    *,
    labels: Sequence[int | None] | np.ndarray | None = None,
    splits: Sequence[str | None] | None = None,
    norms: Sequence[float] | np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """:func:`hq_payload` of many points at once: each leaf's ancestor path is walked once per batch,
    not once per point (the upsert path builds thousands of these per call)."""
    leaf_list = np.asarray(leaves, dtype=np.int64).tolist()
    paths = {leaf: model.ancestors(leaf) for leaf in set(leaf_list)}
    model_id, names = model.model_id, model.class_names
    norm_list = None if norms is None else np.asarray(norms, dtype=np.float64).tolist()
    out: list[dict[str, Any]] = []
    for i, leaf in enumerate(leaf_list):
        hq: dict[str, Any] = {"leaf": leaf, "ancestors": list(paths[leaf]), "model": model_id}
        if norm_list is not None:
            hq["norm"] = norm_list[i]
        label = None if labels is None else labels[i]
        if label is not None and int(label) >= 0:
            hq["label"] = names[int(label)]
        split = None if splits is None else splits[i]
        if split is not None:
            hq["split"] = split
        out.append(hq)
    return out


def hq_payload_for(
    model: HierarchyModel,
    vectors: np.ndarray | Sequence[Sequence[float]],
    labels: Sequence[str | None] | None = None,
    *,
    payload_key: str = DEFAULT_PAYLOAD_KEY,
    leaf_from: str = "predicted",
) -> list[dict[str, Any]]:
    """The plugin's payload for new points of an attached collection, one dict ``{payload_key: {...}}`` per
    row, to merge into the application's own upsert payloads (``{**own, **hq}``).

    ``vectors`` are the points' own vectors under the attached name (raw: unit-normalised here, as Qdrant
    stores cosine vectors), ``labels`` their label field's values (``None`` where missing). A label that is
    a class of the model is recorded as ``label`` (and is the leaf with ``leaf_from="label"``); the leaf is
    otherwise predicted (Mahalanobis, as for every attached point). For a model of our own collections the
    vectors are raw features and ``norm`` (‖z‖) is added.
    """
    key = check_payload_key(payload_key)
    x = np.atleast_2d(np.asarray(vectors, dtype=np.float64))
    if labels is not None and len(labels) != x.shape[0]:
        raise InputError(f"{len(labels)} labels for {x.shape[0]} vectors", "give one label (or None) per vector")
    if leaf_from not in ("predicted", "label"):
        raise InputError(f"leaf_from={leaf_from!r}", "use 'predicted' or 'label'")
    if x.shape[0] == 0:
        return []
    if x.shape[1] != model.input_dims or not np.isfinite(x).all():
        raise InputError(
            f"vectors of shape {x.shape} (or not finite); the model takes {model.input_dims}-d vectors",
            "pass the points' vectors under the attached vector name",
        )
    attached = model.extractor.get("name") == ATTACHED_EXTRACTOR
    raw = unit_rows(x) if attached else x
    z = model.transform(raw)
    index = {c: i for i, c in enumerate(model.class_names)}
    known = np.asarray(
        [-1 if labels is None or labels[row] is None else index.get(str(labels[row]), -1) for row in range(len(z))],
        dtype=np.int64,
    )
    # A known label is the leaf with leaf_from="label" (with sub-class leaves: its class's best sub-class).
    leaves = model.database_leaves(z, known, projected=True, raw=raw, leaf_from=leaf_from)
    hqs = hq_payloads(model, leaves, labels=known, norms=None if attached else np.linalg.norm(z, axis=1))
    return [{key: hq} for hq in hqs]


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

    ``keys`` name the items (relative paths); point ids are ``point_id(ns, key)`` with the collection's id
    namespace ``ns`` (:func:`id_namespace`: its name when it was created). Leaves follow the
    model's ``leaf_from`` (:meth:`HierarchyModel.database_leaves`: a known label, else the query
    classifier's leaf); ``leaves`` overrides them. The model must be the
    collection's (checked before anything is written).
    """
    engine = as_engine(client)
    require_collection(engine, name)
    info = check_model_matches(engine, name, model)
    refuse_attached(name, info, "upsert its own vectors into it")
    key = check_payload_key(payload_key or info.get("payload_key", DEFAULT_PAYLOAD_KEY))
    namespace = id_namespace(info, name)
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
        if leaves is None:  # the model's leaf_from: a known label, else the query classifier's leaf
            leaf = model.database_leaves(
                z,
                None if labels is None else labels[start:stop],
                projected=True,
                raw=None if projected else x[start:stop],
            )
        else:
            leaf = np.asarray(leaves[start:stop])
        hqs = hq_payloads(
            model,
            leaf,
            labels=None if labels is None else labels[start:stop],
            splits=None if splits is None else splits[start:stop],
            norms=np.linalg.norm(z, axis=1),
        )
        if payloads is None:
            body = [{key: hq} for hq in hqs]
        else:
            body = [{**payloads[row], key: hq} for row, hq in zip(range(start, stop), hqs, strict=True)]
        ids = [point_id(namespace, keys[row]) for row in range(start, stop)]
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
    with writing(engine, name):
        return _reassign(engine, name, model, batch_size, leaf_from)


def _reassign(engine: Engine, name: str, model: HierarchyModel, batch_size: int, leaf_from: str) -> int:
    old, info = read_collection_model(engine, name)
    refuse_attached(name, info, "reassign it (it refits with hierqdrant attach --refit)")
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
    state = collection_state(info) or "complete"  # kept: an ingest that did not finish still has to
    updated = 0
    index = {c: i for i, c in enumerate(model.class_names)}
    # The vectors are read in both modes: a point without a label, or a sub-class leaf, needs them.
    for ids, vecs, payloads in iter_points(engine, name, with_vectors=True, batch_size=batch_size, payload_key=key):
        assert vecs is not None
        known = np.asarray([index.get(p.get(key, {}).get("label"), -1) for p in payloads], dtype=np.int64)
        leaves = model.database_leaves(vecs, known, projected=True, leaf_from=leaf_from)
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
    engine.write_model(name, model.to_files(), collection_info(model, key, state, kept=info))
    return updated
