"""What attaching to an application's collection needs from an engine, on both engines (DESIGN.md §2.7).

An application's collection is not one of ours: it has named vectors (``image``, ``text`` …) of its own
sizes and distances, its own payload and its own payload indexes. Beyond the :class:`Engine` protocol:

- :func:`vector_config` — a collection's dense vectors: name → :class:`VectorSpec` (size, distance);
  ``""`` names the unnamed vector of a collection of our own;
- :func:`scroll_vectors` / :func:`retrieve_vectors` — points with the vector of one name;
- :func:`payload_indexes`, :func:`create_payload_index`, :func:`drop_payload_index` — payload indexes of an
  existing collection;
- :func:`delete_payload_key` — remove one top-level payload key from every point that has it (and nothing
  else);
- :func:`delete_model` — drop the stored model and its info dict (the points stay);
- :func:`create_app_collection` / :func:`upsert_app_points` — an application-style collection (named
  vectors, any distance, optional int8 quantization, no model): what an application makes with its own
  client; on the embedded engine, whose files are ours, this is the way to make one (tests, benchmarks).

Requests that search a named vector carry ``using=NAME`` (qdrant-client's models); the server engine
passes them on, the embedded engine translates them (:mod:`~hierqdrant.store.engines.edge_convert`).
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import qdrant_edge as qe
from qdrant_client import models

from hierqdrant.core.errors import InputError
from hierqdrant.core.faults import fault
from hierqdrant.store.engines.base import (
    SIDECAR_SUFFIX,
    Engine,
    Record,
    check_batch_size,
    check_collection_name,
    check_dim,
    check_ids,
    plain_json,
    utc_now,
)
from hierqdrant.store.engines.client import QdrantEngine
from hierqdrant.store.engines.edge import EdgeEngine, _engine_error
from hierqdrant.store.engines.edge_convert import edge_filter
from hierqdrant.store.engines.edge_files import MODEL_DIR_RE

__all__ = [
    "DISTANCES",
    "VectorSpec",
    "create_app_collection",
    "create_payload_index",
    "delete_model",
    "delete_payload_key",
    "drop_payload_index",
    "payload_indexes",
    "retrieve_vectors",
    "scroll_vectors",
    "upsert_app_points",
    "vector_config",
]

DISTANCES = ("Cosine", "Dot", "Euclid", "Manhattan")
"""Qdrant's dense-vector distances, as Qdrant names them."""
IndexKind = Literal["integer", "keyword"]
Quantization = Literal["int8"]


@dataclass(frozen=True)
class VectorSpec:
    """One dense vector of a collection: its size and Qdrant distance (``Cosine``, ``Dot``, ``Euclid``, …)."""

    size: int
    distance: str = "Cosine"

    def __post_init__(self) -> None:
        check_dim(self.size)
        if self.distance not in DISTANCES:
            raise InputError(f"unknown distance {self.distance!r}", f"use one of {', '.join(DISTANCES)}")


def _distance_name(d: Any) -> str:
    value = getattr(d, "value", d)  # qdrant-client's enum, or a plain string
    text = str(value).rsplit(".", 1)[-1]  # qdrant_edge's enum prints as Distance.Cosine
    return text[:1].upper() + text[1:].lower()


def _unsupported(engine: Engine, what: str) -> InputError:
    return InputError(
        f"the engine {type(engine).__name__} cannot {what}", "use hierqdrant.connect() or a QdrantClient"
    )


# ---------------------------------------------------------------------------------------------------------
# reading


def vector_config(engine: Engine, name: str) -> dict[str, VectorSpec]:
    """The collection's dense vectors by name (``""``: the unnamed vector)."""
    if isinstance(engine, QdrantEngine):
        vectors = engine._collection(name).config.params.vectors
        if isinstance(vectors, models.VectorParams):
            return {"": VectorSpec(int(vectors.size), _distance_name(vectors.distance))}
        if isinstance(vectors, dict):
            return {str(k): VectorSpec(int(v.size), _distance_name(v.distance)) for k, v in vectors.items()}
        return {}
    if isinstance(engine, EdgeEngine):
        meta = engine._meta(name)
        named = meta.get("vectors")
        if isinstance(named, dict) and named:
            return {str(k): VectorSpec(int(v["size"]), str(v.get("distance", "Cosine"))) for k, v in named.items()}
        return {"": VectorSpec(int(meta["dim"]), str(meta.get("distance") or "Cosine"))}
    return {"": VectorSpec(engine.vector_size(name), "Cosine")}


def _with_vector(vector: str) -> Any:
    return [vector] if vector else True


def _one_vector(v: Any, vector: str) -> np.ndarray | None:
    if isinstance(v, dict):
        v = v.get(vector)
    if v is None or (isinstance(v, list) and not v):
        return None
    return np.asarray(v, dtype=np.float32)


def scroll_vectors(
    engine: Engine,
    name: str,
    vector: str,
    *,
    filter: models.Filter | None = None,
    batch_size: int = 1024,
    with_payload: bool | Sequence[str] = True,
) -> Iterator[list[Record]]:
    """All points (matching ``filter``) in batches, each with the vector named ``vector`` (``""``: the
    unnamed one; ``None`` for a point without it) and its payload (or the listed payload keys)."""
    check_batch_size(batch_size)
    payload: Any = with_payload if isinstance(with_payload, bool) else list(with_payload)
    if isinstance(engine, QdrantEngine):
        if not engine.exists(name):
            raise engine._not_found(name)
        return _scroll_client(engine, name, vector, filter, batch_size, payload)
    if isinstance(engine, EdgeEngine):
        return _scroll_edge(engine, name, vector, edge_filter(filter), batch_size, payload)
    if vector:
        raise _unsupported(engine, "read named vectors")
    return engine.scroll(name, with_vectors=True, filter=filter, batch_size=batch_size)


def _scroll_client(
    engine: QdrantEngine, name: str, vector: str, f: models.Filter | None, batch_size: int, payload: Any
) -> Iterator[list[Record]]:
    offset: Any = None
    while True:
        with engine._errors("scroll", name):
            recs, offset = engine.client.scroll(
                name,
                scroll_filter=f,
                limit=batch_size,
                offset=offset,
                with_payload=payload,
                with_vectors=_with_vector(vector),
            )
        if recs:
            yield [Record(str(r.id), _one_vector(r.vector, vector), r.payload or {}) for r in recs]
        if offset is None:
            return


def _scroll_edge(
    engine: EdgeEngine, name: str, vector: str, f: qe.Filter | None, batch_size: int, payload: Any
) -> Iterator[list[Record]]:
    s = engine.shard(name)
    offset: Any = None
    while True:
        try:
            recs, offset = s.scroll(
                qe.ScrollRequest(
                    offset=offset, limit=batch_size, filter=f, with_payload=payload, with_vector=_with_vector(vector)
                )
            )
        except Exception as e:
            raise _edge_error("scroll", name, e) from e
        if recs:
            yield [Record(str(r.id), _one_vector(r.vector, vector), r.payload or {}) for r in recs]
        if offset is None:
            return


def retrieve_vectors(engine: Engine, name: str, ids: Sequence[str], vector: str) -> list[Record]:
    """The points ``ids`` that exist, with the vector named ``vector`` and their payloads."""
    pids: list[Any] = check_ids(ids)
    recs: list[Any]
    if isinstance(engine, QdrantEngine):
        with engine._errors("retrieve", name):
            recs = engine.client.retrieve(name, pids, with_payload=True, with_vectors=_with_vector(vector))
    elif isinstance(engine, EdgeEngine):
        try:
            recs = engine.shard(name).retrieve(pids, True, _with_vector(vector))
        except Exception as e:
            raise _edge_error("retrieve", name, e) from e
    else:
        f = models.Filter(must=[models.HasIdCondition(has_id=list(pids))])
        return [r for batch in scroll_vectors(engine, name, vector, filter=f) for r in batch]
    return [Record(str(r.id), _one_vector(r.vector, vector), r.payload or {}) for r in recs]


def payload_indexes(engine: Engine, name: str) -> dict[str, str]:
    """The collection's payload indexes: field → type (``integer``, ``keyword`` …). qdrant-client's local
    mode keeps none (it ignores payload indexes)."""
    if isinstance(engine, QdrantEngine):
        schema = engine._collection(name).payload_schema or {}
        return {str(k): _distance_name(v.data_type).lower() for k, v in schema.items()}
    if isinstance(engine, EdgeEngine):
        try:
            edge_schema = engine.shard(name).info().payload_schema
        except Exception as e:
            raise _edge_error("read the payload indexes", name, e) from e
        return {str(k): str(v.data_type).rsplit(".", 1)[-1].lower() for k, v in edge_schema.items()}
    return {}


# ---------------------------------------------------------------------------------------------------------
# writing


def create_payload_index(engine: Engine, name: str, field: str, kind: IndexKind) -> None:
    """Create an ``integer`` or ``keyword`` payload index on ``field`` of an existing collection (again: no-op)."""
    if kind not in ("integer", "keyword"):
        raise InputError(f"unknown payload index type {kind!r}", "use 'integer' or 'keyword'")
    if isinstance(engine, QdrantEngine):
        schema = models.PayloadSchemaType.INTEGER if kind == "integer" else models.PayloadSchemaType.KEYWORD
        with engine._errors("create a payload index", name), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Payload indexes have no effect")
            engine.client.create_payload_index(name, field, schema, wait=True)
        return
    if isinstance(engine, EdgeEngine):
        edge_schema = qe.PayloadSchemaType.Integer if kind == "integer" else qe.PayloadSchemaType.Keyword
        with engine.writing(name):
            _edge_update(engine, name, qe.UpdateOperation.create_field_index(field, edge_schema), "create an index")
            _edge_index_list(engine, name, f"{kind}_index", field, add=True)
        return
    raise _unsupported(engine, "create payload indexes on an existing collection")


def drop_payload_index(engine: Engine, name: str, field: str) -> None:
    """Delete the payload index on ``field`` (none there: nothing happens)."""
    if isinstance(engine, QdrantEngine):
        if not engine.local and field not in payload_indexes(engine, name):
            return
        with engine._errors("delete a payload index", name), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Payload indexes have no effect")
            engine.client.delete_payload_index(name, field, wait=True)
        return
    if isinstance(engine, EdgeEngine):
        with engine.writing(name):
            _edge_update(engine, name, qe.UpdateOperation.delete_field_index(field), "delete an index")
            for listed in ("integer_index", "keyword_index"):
                _edge_index_list(engine, name, listed, field, add=False)
        return
    raise _unsupported(engine, "delete payload indexes")


def delete_payload_key(engine: Engine, name: str, key: str) -> None:
    """Remove the top-level payload ``key`` from every point that has it; vectors and other keys stay."""
    has_key = models.Filter(must_not=[models.IsEmptyCondition(is_empty=models.PayloadField(key=key))])
    if isinstance(engine, QdrantEngine):
        with engine._errors("delete payload", name):
            engine.client.delete_payload(name, keys=[key], points=models.FilterSelector(filter=has_key), wait=True)
        return
    if isinstance(engine, EdgeEngine):
        f = edge_filter(has_key)
        assert f is not None
        with engine.writing(name):
            _edge_update(engine, name, qe.UpdateOperation.delete_payload_by_filter(f, [key]), "delete payload")
            engine._after_write(name)
        return
    raise _unsupported(engine, "delete payload keys")


def delete_model(engine: Engine, name: str) -> None:
    """Drop the collection's stored model and info dict; its points, vectors and payloads stay.

    Server: the sidecar collection is deleted and the metadata key set to null (Qdrant merges metadata
    updates; local mode removes the key). Embedded: ``collection.json`` forgets the model first, then its
    folder is removed.
    """
    if isinstance(engine, QdrantEngine):
        with engine._errors("delete the model", name):
            if engine.client.collection_exists(name + SIDECAR_SUFFIX):
                engine.client.delete_collection(name + SIDECAR_SUFFIX)
        engine._set_metadata(name, None)
        return
    if isinstance(engine, EdgeEngine):
        with engine.writing(name), engine._lock:
            meta = engine._meta(name)
            old = str((meta.get("model") or {}).get("dir", "model")) if meta.get("model") else None
            meta["model"], meta["info"] = None, None
            engine._write_meta(name, meta)
            if old is not None and MODEL_DIR_RE.match(old):
                shutil.rmtree(engine._dir(name) / old, ignore_errors=True)
        return
    raise _unsupported(engine, "delete a stored model")


# ---------------------------------------------------------------------------------------------------------
# an application's collection


def create_app_collection(
    engine: Engine,
    name: str,
    vectors: Mapping[str, VectorSpec],
    *,
    quantization: Quantization | None = None,
    hnsw_m: int | None = None,
    indexing_threshold_kb: int | None = None,
) -> None:
    """Create a collection the way an application does: dense vectors by name (``""`` alone: one unnamed
    vector) of any distance, optional int8 scalar quantization, no model and no payload indexes.
    ``indexing_threshold_kb``: segments larger than this get HNSW (and their quantized vectors) when
    optimized (Qdrant's default 10,000 KB; smaller lets small benchmarks use them)."""
    check_collection_name(name)
    specs = {str(k): v if isinstance(v, VectorSpec) else VectorSpec(*v) for k, v in vectors.items()}
    if not specs or ("" in specs and len(specs) > 1):
        raise InputError("give one unnamed vector or one or more named ones", "e.g. {'image': VectorSpec(512)}")
    if quantization not in (None, "int8"):
        raise InputError(f"unknown quantization {quantization!r}", "use 'int8' or None")
    if isinstance(engine, QdrantEngine):
        quant = None
        if quantization:
            quant = models.ScalarQuantization(
                scalar=models.ScalarQuantizationConfig(type=models.ScalarType.INT8, always_ram=True)
            )
        params = {k: models.VectorParams(size=v.size, distance=models.Distance(v.distance)) for k, v in specs.items()}
        hnsw = None if hnsw_m is None else models.HnswConfigDiff(m=hnsw_m)
        optimizers = None
        if indexing_threshold_kb is not None:
            optimizers = models.OptimizersConfigDiff(indexing_threshold=indexing_threshold_kb)
        with engine._errors("create the collection", name):
            engine.client.create_collection(
                name,
                vectors_config=params[""] if "" in params else params,
                quantization_config=quant,
                hnsw_config=hnsw,
                optimizers_config=optimizers,
            )
        return
    if isinstance(engine, EdgeEngine):
        _create_edge(engine, name, specs, quantization, hnsw_m, indexing_threshold_kb)
        return
    raise _unsupported(engine, "create collections with named vectors")


def _create_edge(
    engine: EdgeEngine,
    name: str,
    specs: dict[str, VectorSpec],
    quantization: str | None,
    hnsw_m: int | None,
    indexing_threshold_kb: int | None,
) -> None:
    def params(v: VectorSpec) -> qe.EdgeVectorParams:
        quant = qe.ScalarQuantizationConfig(qe.ScalarType.Int8, always_ram=True) if quantization else None
        return qe.EdgeVectorParams(size=v.size, distance=getattr(qe.Distance, v.distance), quantization_config=quant)

    hnsw = None
    if hnsw_m is not None:
        hnsw = qe.HnswIndexConfig(m=hnsw_m, ef_construct=100, full_scan_threshold=10_000)
    unnamed = specs.get("")
    optimizers = None
    if indexing_threshold_kb is not None:
        optimizers = qe.EdgeOptimizersConfig(indexing_threshold=indexing_threshold_kb)
    config = qe.EdgeConfig(
        vectors=params(unnamed) if unnamed else {k: params(v) for k, v in specs.items()},
        hnsw_config=hnsw,
        optimizers=optimizers,
    )
    meta: dict[str, Any] = {
        "format": "hierqdrant-edge-collection/1",
        "name": name,
        "dim": unnamed.size if unnamed else None,
        "distance": unnamed.distance if unnamed else None,
        "vectors": None if unnamed else {k: {"size": v.size, "distance": v.distance} for k, v in specs.items()},
        "quantization": quantization,
        "integer_index": [],
        "keyword_index": [],
        "hnsw": {"m": 16 if hnsw_m is None else hnsw_m, "ef_construct": 100},
        "created": utc_now(),
        "info": None,
        "model": None,
    }
    with engine.writing(name):
        if engine.exists(name):
            raise InputError(
                f"collection {name!r} already exists in {engine.location}", "delete it first or choose another name"
            )
        engine.check_intact(name)
        engine._build(name, config, meta, [], [], None)
    fault("after-create")


def upsert_app_points(
    engine: Engine,
    name: str,
    ids: Sequence[str],
    vectors: Sequence[Mapping[str, Sequence[float] | np.ndarray]],
    payloads: Sequence[Mapping[str, Any]],
    *,
    batch_size: int = 256,
) -> None:
    """Upsert points the way an application does: per point its vectors by name (a point may lack some)
    and its whole payload; durable on return."""
    check_batch_size(batch_size)
    if not len(ids) == len(vectors) == len(payloads):
        raise InputError(f"got {len(ids)} ids, {len(vectors)} vectors and {len(payloads)} payloads")
    config = vector_config(engine, name)
    rows: list[dict[str, list[float]]] = []
    for i, named in enumerate(vectors):
        row: dict[str, list[float]] = {}
        for vname, v in named.items():
            arr = np.asarray(v, dtype=np.float32)
            spec = config.get(vname)
            if spec is None or arr.shape != (spec.size,) or not np.isfinite(arr).all():
                raise InputError(
                    f"point {ids[i]!r}: vector {vname!r} of shape {arr.shape} does not fit the collection",
                    f"its vectors: {', '.join(f'{k or chr(34) * 2}: {s.size}-d' for k, s in config.items())}",
                )
            row[vname] = arr.tolist()
        rows.append(row)
    pids = check_ids(ids)
    for a in range(0, len(ids), batch_size):
        b = a + batch_size
        if isinstance(engine, QdrantEngine):
            points = [
                models.PointStruct(id=p, vector=r[""] if "" in r else dict(r), payload=plain_json(dict(pl)))
                for p, r, pl in zip(pids[a:b], rows[a:b], payloads[a:b], strict=True)
            ]
            with engine._errors("upsert", name):
                engine.client.upsert(name, points=points, wait=True)
        elif isinstance(engine, EdgeEngine):
            edge_points = [
                qe.Point(p, r[""] if "" in r else r, plain_json(dict(pl)))  # type: ignore[arg-type]
                for p, r, pl in zip(pids[a:b], rows[a:b], payloads[a:b], strict=True)
            ]
            with engine.writing(name):
                _edge_update(engine, name, qe.UpdateOperation.upsert_points(edge_points), "upsert")
        else:
            raise _unsupported(engine, "upsert named vectors")
    if isinstance(engine, EdgeEngine):
        engine._after_write(name)


# ---------------------------------------------------------------------------------------------------------
# the embedded engine's details


def _edge_error(what: str, name: str, e: Exception) -> Exception:
    return _engine_error(what, name, e)


def _edge_update(engine: EdgeEngine, name: str, op: qe.UpdateOperation, what: str) -> None:
    try:
        engine.shard(name).update(op)
    except Exception as e:
        raise _edge_error(what, name, e) from e


def _edge_index_list(engine: EdgeEngine, name: str, listed: str, field: str, *, add: bool) -> None:
    """Keep ``collection.json``'s list of payload indexes in step with the shard (the lock is held)."""
    with engine._lock:
        meta = engine._meta(name)
        fields = [str(f) for f in meta.get(listed) or []]
        if add == (field in fields):
            return
        meta[listed] = [*fields, field] if add else [f for f in fields if f != field]
        engine._write_meta(name, meta)
