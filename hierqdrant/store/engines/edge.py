"""The embedded engine: Qdrant's engine in-process through ``qdrant-edge-py`` (one EdgeShard per collection).

Layout under the data directory::

    <data_dir>/<name>/shard/            the EdgeShard (segments, WAL)
    <data_dir>/<name>/collection.json   dim, distance, payload indexes, HNSW settings, creation time,
                                        info dict, sha256 of every model file
    <data_dir>/<name>/model/<files>     the fitted model's files

``collection.json`` is written last on create, so a directory without it is an interrupted create and is
replaced by the next ``create``. Every JSON/model write is atomic (temporary file + ``os.replace``).

Queries arrive as qdrant-client models and are translated into ``qdrant_edge`` objects by
:func:`edge_request` (and :func:`edge_filter`, :func:`edge_expression`), which raise ``InputError`` naming
any construct the embedded engine does not run.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe
from qdrant_client import models

from hierqdrant.core.errors import EngineError, HierqdrantError, InputError, NotFoundError
from hierqdrant.store.engines.base import (
    Hit,
    Record,
    check_batch_size,
    check_collection_name,
    check_dim,
    check_hnsw,
    check_info,
    check_model_files,
    check_points,
    json_key,
    sha256_hex,
    split_key,
    to_point_id,
)

__all__ = ["EdgeEngine", "edge_expression", "edge_filter", "edge_params", "edge_request", "default_data_dir"]

_FORMAT = "hierqdrant-edge-collection/1"
_DEFAULT_LIMIT = 10  # Qdrant's default limit of the Query API
_DEFAULT_HNSW_M = 16  # Qdrant's defaults; edge uses the same when no HNSW config is given
_DEFAULT_EF_CONSTRUCT = 100
_DEFAULT_FULL_SCAN_KB = 10_000


def default_data_dir() -> Path:
    """``$HIERQDRANT_DATA`` if set, else ``./.hierqdrant``."""
    return Path(os.environ.get("HIERQDRANT_DATA") or ".hierqdrant")


# ---------------------------------------------------------------------------------------------------------
# translation: qdrant-client models -> qdrant_edge objects


def _unsupported(what: str) -> InputError:
    return InputError(
        f"the embedded engine does not support {what}",
        "rewrite the query without it or use a Qdrant server (--url)",
    )


def _as_list(x: Any) -> list[Any]:
    if x is None:
        return []
    return list(x) if isinstance(x, list) else [x]


def _iso(d: datetime | date | str | None) -> str | None:
    if d is None or isinstance(d, str):
        return d
    return d.isoformat()


def _geo_point(p: models.GeoPoint) -> qe.GeoPoint:
    return qe.GeoPoint(lon=p.lon, lat=p.lat)


def _edge_match(m: Any) -> Any:
    if isinstance(m, models.MatchValue):
        return qe.MatchValue(m.value)
    if isinstance(m, models.MatchAny):
        return qe.MatchAny(list(m.any))  # type: ignore[arg-type]
    if isinstance(m, models.MatchExcept):
        return qe.MatchExcept(list(m.except_))  # type: ignore[arg-type]
    if isinstance(m, models.MatchText):
        return qe.MatchText(m.text)
    if isinstance(m, models.MatchTextAny):
        return qe.MatchTextAny(m.text_any)
    if isinstance(m, models.MatchPhrase):
        return qe.MatchPhrase(m.phrase)
    if isinstance(m, models.MatchPrefix):
        return qe.MatchPrefix(m.prefix)
    if isinstance(m, models.MatchSubstring):
        return qe.MatchSubstring(m.substring)
    raise _unsupported(f"the match {type(m).__name__}")


def _edge_field_condition(c: models.FieldCondition) -> qe.FieldCondition:
    rng: Any = None
    if isinstance(c.range, models.Range):
        rng = qe.RangeFloat(gte=c.range.gte, gt=c.range.gt, lte=c.range.lte, lt=c.range.lt)
    elif isinstance(c.range, models.DatetimeRange):
        r = c.range
        rng = qe.RangeDateTime(gte=_iso(r.gte), gt=_iso(r.gt), lte=_iso(r.lte), lt=_iso(r.lt))
    elif c.range is not None:
        raise _unsupported(f"the range {type(c.range).__name__}")
    bbox = radius = polygon = None
    if c.geo_bounding_box is not None:
        bbox = qe.GeoBoundingBox(
            _geo_point(c.geo_bounding_box.top_left), _geo_point(c.geo_bounding_box.bottom_right)
        )
    if c.geo_radius is not None:
        radius = qe.GeoRadius(_geo_point(c.geo_radius.center), c.geo_radius.radius)
    if c.geo_polygon is not None:
        polygon = qe.GeoPolygon(
            [_geo_point(p) for p in c.geo_polygon.exterior.points],
            [[_geo_point(p) for p in ring.points] for ring in c.geo_polygon.interiors]
            if c.geo_polygon.interiors
            else None,
        )
    vc = c.values_count
    return qe.FieldCondition(
        key=c.key,
        match=_edge_match(c.match) if c.match is not None else None,
        range=rng,
        geo_bounding_box=bbox,
        geo_radius=radius,
        geo_polygon=polygon,
        values_count=qe.ValuesCount(lt=vc.lt, gt=vc.gt, lte=vc.lte, gte=vc.gte) if vc is not None else None,
        is_empty=c.is_empty,
        is_null=c.is_null,
    )


def _edge_condition(c: Any) -> Any:
    if isinstance(c, models.FieldCondition):
        return _edge_field_condition(c)
    if isinstance(c, models.Filter):
        return edge_filter(c)
    if isinstance(c, models.HasIdCondition):
        return qe.HasIdCondition({to_point_id(i) for i in c.has_id})
    if isinstance(c, models.IsEmptyCondition):
        return qe.IsEmptyCondition(c.is_empty.key)
    if isinstance(c, models.IsNullCondition):
        return qe.IsNullCondition(c.is_null.key)
    if isinstance(c, models.HasVectorCondition):
        return qe.HasVectorCondition(c.has_vector)
    if isinstance(c, models.NestedCondition):
        nested = edge_filter(c.nested.filter)
        assert nested is not None
        return qe.NestedCondition(c.nested.key, nested)
    raise _unsupported(f"the filter condition {type(c).__name__}")


def edge_filter(f: models.Filter | None) -> qe.Filter | None:
    """Translate a ``models.Filter`` (must / should / must_not / min_should, nested filters)."""
    if f is None:
        return None
    if not isinstance(f, models.Filter):
        raise InputError(
            f"expected a qdrant_client.models.Filter, got {type(f).__name__}", "build a models.Filter"
        )
    min_should = None
    if f.min_should is not None:
        min_should = qe.MinShould(
            [_edge_condition(c) for c in f.min_should.conditions], f.min_should.min_count
        )
    return qe.Filter(
        must=[_edge_condition(c) for c in _as_list(f.must)] or None,
        should=[_edge_condition(c) for c in _as_list(f.should)] or None,
        must_not=[_edge_condition(c) for c in _as_list(f.must_not)] or None,
        min_should=min_should,
    )


_CONDITIONS = (
    models.FieldCondition,
    models.IsEmptyCondition,
    models.IsNullCondition,
    models.HasIdCondition,
    models.HasVectorCondition,
    models.NestedCondition,
    models.Filter,
)
_UNARY: dict[type, tuple[str, Any]] = {
    models.NegExpression: ("neg", qe.Expression.Neg),
    models.AbsExpression: ("abs", qe.Expression.Abs),
    models.SqrtExpression: ("sqrt", qe.Expression.Sqrt),
    models.ExpExpression: ("exp", qe.Expression.Exp),
    models.Log10Expression: ("log10", qe.Expression.Log10),
    models.LnExpression: ("ln", qe.Expression.Ln),
    models.AcoshExpression: ("acosh", qe.Expression.Acosh),
}
_NARY: dict[type, tuple[str, Any]] = {
    models.SumExpression: ("sum", qe.Expression.Sum),
    models.MultExpression: ("mult", qe.Expression.Mult),
    models.MaxExpression: ("max", qe.Expression.Max),
    models.MinExpression: ("min", qe.Expression.Min),
}
_DECAY: dict[type, tuple[str, Any]] = {
    models.LinDecayExpression: ("lin_decay", qe.DecayKind.Lin),
    models.ExpDecayExpression: ("exp_decay", qe.DecayKind.Exp),
    models.GaussDecayExpression: ("gauss_decay", qe.DecayKind.Gauss),
}


def edge_expression(e: Any) -> qe.Expression:
    """Translate a formula expression: constants, variables (``"$score"``, ``"$score[i]"``, payload keys),
    conditions (1 if the condition holds, else 0), sum, mult, max, min, neg, abs, div, sqrt, pow, exp,
    log10, ln, acosh, lin/exp/gauss decay, geo distance and datetime expressions."""
    if isinstance(e, bool):
        raise _unsupported("a boolean constant in a formula")
    if isinstance(e, (int, float, np.integer, np.floating)):
        return qe.Expression.Constant(float(e))
    if isinstance(e, str):
        return qe.Expression.Variable(e)
    if isinstance(e, _CONDITIONS):
        return qe.Expression.Condition(_edge_condition(e))
    t = type(e)
    if t in _NARY:
        field, make = _NARY[t]
        return make([edge_expression(x) for x in getattr(e, field)])
    if t in _UNARY:
        field, make = _UNARY[t]
        return make(edge_expression(getattr(e, field)))
    if isinstance(e, models.DivExpression):
        return qe.Expression.Div(
            edge_expression(e.div.left), edge_expression(e.div.right), by_zero_default=e.div.by_zero_default
        )
    if isinstance(e, models.PowExpression):
        return qe.Expression.Pow(edge_expression(e.pow.base), edge_expression(e.pow.exponent))
    if t in _DECAY:
        field, kind = _DECAY[t]
        p = getattr(e, field)
        return qe.Expression.Decay(
            kind,
            edge_expression(p.x),
            target=edge_expression(p.target) if p.target is not None else None,
            midpoint=p.midpoint,
            scale=p.scale,
        )
    if isinstance(e, models.GeoDistance):
        return qe.Expression.GeoDistance(_geo_point(e.geo_distance.origin), e.geo_distance.to)
    if isinstance(e, models.DatetimeExpression):
        return qe.Expression.Datetime(e.datetime)
    if isinstance(e, models.DatetimeKeyExpression):
        return qe.Expression.DatetimeKey(e.datetime_key)
    raise _unsupported(f"the formula expression {type(e).__name__}")


def _dense(v: Any, dim: int | None) -> list[float]:
    if isinstance(v, np.ndarray):
        v = v.astype(np.float32).tolist()
    # pydantic already made the elements floats: check the first only (this runs for every prefetch)
    if not isinstance(v, list) or not v or not isinstance(v[0], (int, float)):
        if isinstance(v, (str, int, uuid.UUID)):
            raise _unsupported("querying by point id")
        what = "a multivector" if isinstance(v, list) and v else type(v).__name__
        raise _unsupported(f"the query vector {what} (only one dense vector per query)")
    if dim is not None and len(v) != dim:
        raise InputError(
            f"query vector has {len(v)} dimensions, the collection has {dim}",
            "project the query with the collection's model",
        )
    return v


def _edge_query(q: Any, dim: int | None) -> Any:
    if q is None:
        return None
    if isinstance(q, models.FormulaQuery):
        return qe.Formula(edge_expression(q.formula), defaults=q.defaults)
    if isinstance(q, models.NearestQuery):
        if q.mmr is not None:
            raise _unsupported("MMR")
        return qe.Query.Nearest(_dense(q.nearest, dim))
    if isinstance(q, (list, np.ndarray)):
        return qe.Query.Nearest(_dense(q, dim))
    if isinstance(q, (str, int, uuid.UUID)):
        raise _unsupported("querying by point id")
    raise _unsupported(f"the query {type(q).__name__}")


def edge_params(p: models.SearchParams | None) -> qe.SearchParams | None:
    """Translate ``SearchParams`` (hnsw_ef, exact, indexed_only, quantization, acorn)."""
    if p is None:
        return None
    if p.idf is not None:
        raise _unsupported("SearchParams.idf")
    quant = None
    if p.quantization is not None:
        quant = qe.QuantizationSearchParams(
            ignore=bool(p.quantization.ignore),
            rescore=p.quantization.rescore,
            oversampling=p.quantization.oversampling,
        )
    acorn = None
    if p.acorn is not None:
        acorn = qe.AcornSearchParams(enable=bool(p.acorn.enable), max_selectivity=p.acorn.max_selectivity)
    return qe.SearchParams(
        hnsw_ef=p.hnsw_ef,
        exact=bool(p.exact),
        quantization=quant,
        indexed_only=bool(p.indexed_only),
        acorn=acorn,
    )


def _check_common(r: models.Prefetch | models.QueryRequest) -> None:
    if r.using not in (None, ""):
        raise _unsupported(f"named vectors (using={r.using!r})")
    if r.lookup_from is not None:
        raise _unsupported("lookup_from")


def _edge_prefetch(p: models.Prefetch, dim: int | None) -> qe.Prefetch:
    _check_common(p)
    return qe.Prefetch(
        limit=p.limit if p.limit is not None else _DEFAULT_LIMIT,
        query=_edge_query(p.query, dim),
        prefetches=[_edge_prefetch(x, dim) for x in _as_list(p.prefetch)] or None,
        params=edge_params(p.params),
        filter=edge_filter(p.filter),
        score_threshold=p.score_threshold,
    )


def _edge_with_payload(w: Any) -> Any:
    if w is None or isinstance(w, bool):
        return bool(w)
    if isinstance(w, list):
        return list(w)
    if isinstance(w, models.PayloadSelectorInclude):
        return qe.PayloadSelector.Include(list(w.include))
    if isinstance(w, models.PayloadSelectorExclude):
        return qe.PayloadSelector.Exclude(list(w.exclude))
    raise _unsupported(f"with_payload={w!r}")


def edge_request(r: models.QueryRequest, dim: int | None = None) -> qe.QueryRequest:
    """Translate a ``models.QueryRequest`` (nested prefetches, dense / formula query, filter, params,
    score_threshold, limit, offset, with_payload) to qdrant_edge; ``dim`` checks the query vectors' size.
    ``with_vector`` is ignored: hits carry no vectors."""
    if not isinstance(r, models.QueryRequest):
        raise InputError(
            f"expected a qdrant_client.models.QueryRequest, got {type(r).__name__}",
            "build a models.QueryRequest",
        )
    _check_common(r)
    if r.shard_key is not None:
        raise _unsupported("shard_key")
    return qe.QueryRequest(
        limit=r.limit if r.limit is not None else _DEFAULT_LIMIT,
        offset=r.offset,
        query=_edge_query(r.query, dim),
        prefetches=[_edge_prefetch(x, dim) for x in _as_list(r.prefetch)] or None,
        with_vector=False,
        with_payload=_edge_with_payload(r.with_payload),
        filter=edge_filter(r.filter),
        score_threshold=r.score_threshold,
        params=edge_params(r.params),
    )


# ---------------------------------------------------------------------------------------------------------
# files


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old or the new content, never a mix."""
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _engine_error(what: str, name: str, e: Exception) -> EngineError:
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    if "WouldBlock" in msg or "failed to open WAL" in msg:
        return EngineError(
            f"collection {name!r} is open in another process ({msg})",
            "close the other process (one process at a time may open an embedded collection)",
        )
    return EngineError(
        f"embedded engine failed to {what} on {name!r}: {msg}", "check the request and the data dir"
    )


# ---------------------------------------------------------------------------------------------------------
# engine


class EdgeEngine:
    """Embedded engine: one qdrant-edge ``EdgeShard`` per collection under ``data_dir``.

    Shards are opened lazily and cached; :meth:`close` flushes and closes them (the engine is also a
    context manager). Only one process may open a collection at a time (the shard's WAL is locked).
    """

    kind = "embedded"

    def __init__(self, data_dir: str | Path | None = None) -> None:
        self.data_dir = Path(data_dir if data_dir is not None else default_data_dir()).expanduser().resolve()
        self.location = str(self.data_dir)
        self._shards: dict[str, qe.EdgeShard] = {}
        self._dims: dict[str, int] = {}  # a collection's dim never changes; saves a JSON read per query
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"EdgeEngine({self.location!r})"

    def __enter__(self) -> EdgeEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- paths and metadata ------------------------------------------------------------------------------

    def _dir(self, name: str) -> Path:
        return self.data_dir / check_collection_name(name)

    def _meta(self, name: str) -> dict[str, Any]:
        path = self._dir(name) / "collection.json"
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise NotFoundError(
                f"collection {name!r} not found in {self.location}",
                "check the name (hierqdrant collections) or the data dir (--data-dir / HIERQDRANT_DATA)",
            ) from None
        except (OSError, ValueError) as e:
            raise InputError(
                f"{path} is unreadable or corrupt: {e}", "restore it or delete the collection"
            ) from e
        if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
            raise InputError(
                f"{path} is not a hierqdrant collection file", "restore it or delete the collection"
            )
        return meta

    def _write_meta(self, name: str, meta: dict[str, Any]) -> None:
        data = json.dumps(meta, indent=2, sort_keys=True, allow_nan=False).encode()
        _atomic_write(self._dir(name) / "collection.json", data)

    def shard(self, name: str) -> qe.EdgeShard:
        """The opened ``EdgeShard`` of a collection (for inspection, e.g. ``shard(name).info()``)."""
        with self._lock:
            s = self._shards.get(name)
            if s is not None:
                return s
            self._meta(name)  # NotFoundError before touching the shard
            try:
                s = qe.EdgeShard.load(str(self._dir(name) / "shard"))
            except Exception as e:
                raise _engine_error("open the shard", name, e) from e
            self._shards[name] = s
            return s

    # -- collections -------------------------------------------------------------------------------------

    def collections(self) -> list[str]:
        """User collections, sorted."""
        if not self.data_dir.is_dir():
            return []
        out = []
        for p in self.data_dir.iterdir():
            try:
                check_collection_name(p.name)
            except InputError:
                continue
            if (p / "collection.json").is_file():
                out.append(p.name)
        return sorted(out)

    def exists(self, name: str) -> bool:
        """Whether ``<data_dir>/<name>/collection.json`` exists."""
        return (self._dir(name) / "collection.json").is_file()

    def create(
        self,
        name: str,
        dim: int,
        *,
        integer_index: Sequence[str] = (),
        keyword_index: Sequence[str] = (),
        hnsw_m: int | None = None,
        hnsw_ef_construct: int | None = None,
    ) -> None:
        """Create a cosine collection of ``dim``-d vectors with integer/keyword payload indexes."""
        d = self._dir(name)
        dim = check_dim(dim)
        check_hnsw(hnsw_m, hnsw_ef_construct)
        if self.exists(name):
            raise InputError(
                f"collection {name!r} already exists in {self.location}",
                "delete it first or choose another name",
            )
        with self._lock:
            if d.exists():  # an interrupted create: no collection.json was written
                shutil.rmtree(d)
            d.mkdir(parents=True)
            hnsw = None
            if hnsw_m is not None or hnsw_ef_construct is not None:
                hnsw = qe.HnswIndexConfig(
                    m=_DEFAULT_HNSW_M if hnsw_m is None else hnsw_m,
                    ef_construct=_DEFAULT_EF_CONSTRUCT if hnsw_ef_construct is None else hnsw_ef_construct,
                    full_scan_threshold=_DEFAULT_FULL_SCAN_KB,
                )
            config = qe.EdgeConfig(
                vectors=qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine), hnsw_config=hnsw
            )
            try:
                s = qe.EdgeShard.create(str(d / "shard"), config)
                for field in integer_index:
                    s.update(qe.UpdateOperation.create_field_index(field, qe.PayloadSchemaType.Integer))
                for field in keyword_index:
                    s.update(qe.UpdateOperation.create_field_index(field, qe.PayloadSchemaType.Keyword))
                s.flush()
            except Exception as e:
                shutil.rmtree(d, ignore_errors=True)
                raise _engine_error("create the collection", name, e) from e
            self._shards[name] = s
            meta = {
                "format": _FORMAT,
                "name": name,
                "dim": dim,
                "distance": "Cosine",
                "integer_index": list(integer_index),
                "keyword_index": list(keyword_index),
                "hnsw": {
                    "m": _DEFAULT_HNSW_M if hnsw_m is None else hnsw_m,
                    "ef_construct": _DEFAULT_EF_CONSTRUCT if hnsw_ef_construct is None else hnsw_ef_construct,
                },
                "created": _now(),
                "info": None,
                "model": None,
            }
            self._write_meta(name, meta)

    def delete(self, name: str) -> None:
        """Close the shard and remove the collection directory (model included)."""
        d = self._dir(name)
        with self._lock:
            self._dims.pop(name, None)
            s = self._shards.pop(name, None)
            if s is not None:
                s.close()
            if d.exists():
                shutil.rmtree(d)

    def vector_size(self, name: str) -> int:
        """Vector dimension from ``collection.json``."""
        dim = self._dims.get(name)
        if dim is None:
            dim = self._dims[name] = int(self._meta(name)["dim"])
        return dim

    def count(self, name: str, filter: models.Filter | None = None) -> int:
        """Exact count of the points matching ``filter``."""
        f = edge_filter(filter)
        s = self.shard(name)
        try:
            return int(s.count(qe.CountRequest(exact=True, filter=f)))
        except Exception as e:
            raise _engine_error("count", name, e) from e

    # -- points ------------------------------------------------------------------------------------------

    def upsert(
        self,
        name: str,
        ids: Sequence[str],
        vectors: np.ndarray,
        payloads: Sequence[dict[str, Any]],
        *,
        batch_size: int = 1024,
    ) -> None:
        """Upsert in batches (one ``vectors.tolist()`` per batch) and flush, so the points persist."""
        check_batch_size(batch_size)
        arr = check_points(ids, vectors, payloads, self.vector_size(name))
        s = self.shard(name)
        Point = qe.Point
        for a in range(0, len(ids), batch_size):
            rows = arr[a : a + batch_size].tolist()
            pids = _fast_ids(ids[a : a + batch_size])
            try:
                points = [
                    Point(i, v, p) for i, v, p in zip(pids, rows, payloads[a : a + batch_size], strict=True)
                ]
            except (ValueError, TypeError) as e:
                raise _point_error(pids, payloads[a : a + batch_size], e) from e
            try:
                s.update(qe.UpdateOperation.upsert_points(points))
            except Exception as e:
                raise _engine_error("upsert", name, e) from e
        self._flush(name, s)

    def _flush(self, name: str, s: qe.EdgeShard) -> None:
        try:
            s.flush()
        except Exception as e:
            raise _engine_error("flush", name, e) from e

    def set_payload(
        self,
        name: str,
        ids: Sequence[str],
        values: Sequence[Any],
        *,
        key: str,
        batch_size: int = 1024,
    ) -> None:
        """``payload[key] = values[i]`` for each id; ids sharing a value are set in one operation."""
        check_batch_size(batch_size)
        if len(ids) != len(values):
            raise InputError(f"got {len(ids)} ids and {len(values)} values", "pass one value per id")
        parent, leaf = split_key(key)
        s = self.shard(name)
        for a in range(0, len(ids), batch_size):
            groups: dict[str, tuple[Any, list[Any]]] = {}
            for i, v in zip(ids[a : a + batch_size], values[a : a + batch_size], strict=True):
                groups.setdefault(json_key(v), (v, []))[1].append(to_point_id(i))
            for v, group in groups.values():
                try:
                    op = qe.UpdateOperation.set_payload(group, {leaf: v}, key=parent)
                except (ValueError, TypeError) as e:
                    raise InputError(f"cannot set {key!r}: {e}", "use UUID string ids and JSON values") from e
                try:
                    s.update(op)
                except Exception as e:
                    if "No point with id" in str(e):
                        raise NotFoundError(f"{e} in collection {name!r}", "upsert the point first") from e
                    raise _engine_error("set payload", name, e) from e
        self._flush(name, s)

    def existing_ids(self, name: str, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` are stored (batched retrieve without payload or vectors)."""
        s = self.shard(name)
        found: set[str] = set()
        for a in range(0, len(ids), 1024):
            chunk = list(ids[a : a + 1024])
            by_canon = {_canon(i): i for i in chunk}
            try:
                recs = s.retrieve([to_point_id(i) for i in chunk], False, False)
            except ValueError as e:
                raise InputError(f"invalid point id: {e}", "use UUID strings") from e
            except Exception as e:
                raise _engine_error("retrieve", name, e) from e
            found.update(by_canon[str(r.id)] for r in recs if str(r.id) in by_canon)
        return found

    def scroll(
        self,
        name: str,
        *,
        with_vectors: bool = False,
        filter: models.Filter | None = None,
        batch_size: int = 1024,
    ) -> Iterator[list[Record]]:
        """All points (matching ``filter``) in id order, in batches; vectors are stored (normalised) ones."""
        check_batch_size(batch_size)
        f = edge_filter(filter)
        s = self.shard(name)
        return self._scroll(name, s, f, bool(with_vectors), batch_size)

    @staticmethod
    def _scroll(
        name: str, s: qe.EdgeShard, f: qe.Filter | None, with_vectors: bool, batch_size: int
    ) -> Iterator[list[Record]]:
        offset: Any = None
        while True:
            try:
                recs, offset = s.scroll(
                    qe.ScrollRequest(
                        offset=offset, limit=batch_size, filter=f, with_payload=True, with_vector=with_vectors
                    )
                )
            except Exception as e:
                raise _engine_error("scroll", name, e) from e
            if recs:
                yield [
                    Record(
                        str(r.id),
                        np.asarray(r.vector, dtype=np.float32)
                        if with_vectors and r.vector is not None
                        else None,
                        r.payload or {},
                    )
                    for r in recs
                ]
            if offset is None:
                return

    def query_batch(self, name: str, requests: Sequence[models.QueryRequest]) -> list[list[Hit]]:
        """Translate the requests and run them with one ``EdgeShard.query_batch`` call."""
        if not requests:
            return []
        dim = self.vector_size(name)
        batch = qe.QueryBatchRequest([edge_request(r, dim) for r in requests])
        s = self.shard(name)
        try:
            results = s.query_batch(batch)
        except Exception as e:
            raise _engine_error("query", name, e) from e
        return [[Hit(str(p.id), float(p.score), p.payload or {}) for p in res] for res in results]

    def optimize(self, name: str) -> None:
        """Run the segment optimizers (builds HNSW once a segment passes the indexing threshold) and flush."""
        s = self.shard(name)
        try:
            s.optimize()
        except Exception as e:
            raise _engine_error("optimize", name, e) from e
        self._flush(name, s)

    # -- model -------------------------------------------------------------------------------------------

    def write_model(self, name: str, files: Mapping[str, bytes], info: Mapping[str, Any]) -> None:
        """Write each file atomically to ``model/``, then record info + sha256 in ``collection.json``.

        ``collection.json`` is replaced last, so an interrupted write leaves either the old model or files
        whose hashes do not match (detected by :meth:`read_model`); files of an older model are removed.
        """
        files = check_model_files(files)
        info = check_info(info)
        with self._lock:
            meta = self._meta(name)
            mdir = self._dir(name) / "model"
            mdir.mkdir(exist_ok=True)
            for fname, data in files.items():
                _atomic_write(mdir / fname, data)
            meta["info"] = info
            meta["model"] = {
                "written": _now(),
                "files": {f: {"sha256": sha256_hex(b), "size": len(b)} for f, b in files.items()},
            }
            self._write_meta(name, meta)
            for p in mdir.iterdir():
                if p.name not in files:
                    p.unlink(missing_ok=True)

    def read_model(self, name: str) -> tuple[dict[str, bytes], dict[str, Any]] | None:
        """Read and verify the model files (size and sha256 from ``collection.json``)."""
        meta = self._meta(name)
        model = meta.get("model")
        if not model:
            return None
        mdir = self._dir(name) / "model"
        files: dict[str, bytes] = {}
        try:
            entries = [(str(f), int(r["size"]), str(r["sha256"])) for f, r in model["files"].items()]
        except (KeyError, TypeError, ValueError, AttributeError):
            raise _corrupt(name, "collection.json", "unreadable model file list") from None
        for fname, size, sha in entries:
            check_model_files({fname: b""})  # a tampered collection.json must not reach outside model/
            try:
                data = (mdir / fname).read_bytes()
            except FileNotFoundError:
                raise _corrupt(name, fname, "missing") from None
            if len(data) != size or sha256_hex(data) != sha:
                raise _corrupt(name, fname, "sha256 mismatch")
            files[fname] = data
        return files, dict(meta.get("info") or {})

    def read_info(self, name: str) -> dict[str, Any] | None:
        """The info dict from ``collection.json``."""
        info = self._meta(name).get("info")
        return dict(info) if info is not None else None

    def close(self) -> None:
        """Flush and close every opened shard."""
        with self._lock:
            shards, self._shards = self._shards, {}
            self._dims.clear()
            errors = []
            for name, s in shards.items():
                try:
                    s.flush()
                    s.close()
                except Exception as e:  # close the others before reporting
                    errors.append(_engine_error("close", name, e))
            if errors:
                raise errors[0]


def _fast_ids(ids: Sequence[Any]) -> list[Any]:
    """Point ids for qdrant_edge: unsigned-integer strings become ints (the common UUID case stays fast)."""
    try:
        return [int(i) if i.isdigit() else i for i in ids]
    except AttributeError:
        return [to_point_id(i) for i in ids]


def _point_error(pids: Sequence[Any], payloads: Sequence[Any], e: Exception) -> InputError:
    """Find the point that qdrant_edge rejected, for a one-line message naming it."""
    for i, p in zip(pids, payloads, strict=False):
        try:
            qe.Point(i, [0.0], p)
        except Exception as inner:
            return InputError(f"point {i!r} is invalid: {inner}", "use UUID string ids and JSON payloads")
    return InputError(f"invalid points: {e}", "use UUID string ids and JSON payloads")


def _canon(pid: str) -> str:
    """Canonical string of an id as the shard returns it (lower-case UUID or decimal int)."""
    if pid.isdigit():
        return str(int(pid))
    try:
        return str(uuid.UUID(pid))
    except ValueError:
        return pid


def _corrupt(name: str, fname: str, why: str) -> HierqdrantError:
    return InputError(
        f"model file {fname!r} of collection {name!r} is corrupt ({why})",
        "write the model again (hierqdrant fit / ingest) or restore the data dir from a backup",
    )
