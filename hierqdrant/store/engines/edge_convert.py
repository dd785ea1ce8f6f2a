"""Translation of qdrant-client query models into ``qdrant_edge`` objects, for the embedded engine.

Callers of every engine speak qdrant-client's pydantic models (``models.Filter``, ``models.QueryRequest``);
:class:`~hierqdrant.store.engines.edge.EdgeEngine` runs them through :func:`edge_request` (and
:func:`edge_filter`, :func:`edge_expression`, :func:`edge_params`). Every construct the embedded engine does
not run raises one ``InputError`` naming it, with the hint to rewrite the query or use a Qdrant server.

Covered: filters (must / should / must_not / min_should, nested; field conditions with match, range,
datetime range, geo box / radius / polygon, values count, is_empty / is_null; has_id, has_vector),
dense and formula queries (every formula expression qdrant_edge has) on the unnamed or a named vector
(``using``), nested prefetches, search params, score thresholds, limit / offset and payload selectors. Not
covered: ``lookup_from``, shard keys, MMR, querying by point id, multivectors and ``SearchParams.idf``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any, TypeAlias

import numpy as np
import qdrant_edge as qe
from qdrant_client import models

from hierqdrant.core.errors import InputError
from hierqdrant.store.engines.base import to_point_id

__all__ = ["edge_expression", "edge_filter", "edge_params", "edge_request", "fast_ids", "point_error"]

_DEFAULT_LIMIT = 10  # Qdrant's default limit of the Query API
Dims: TypeAlias = int | Mapping[str, int] | None
"""The collection's vector sizes: one int (the unnamed vector), ``{name: size}`` ("" unnamed), or None (unchecked)."""


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


def _vector_dim(dims: Dims, using: str | None) -> int | None:
    """The size of vector ``using`` (None / "": the unnamed one), or an InputError naming the vectors there are."""
    if dims is None:
        return None
    if isinstance(dims, int):
        dims = {"": dims}
    name = using or ""
    if name not in dims:
        there = ", ".join(repr(n) if n else "the unnamed vector" for n in sorted(dims))
        what = f"no vector named {name!r}" if name else "no unnamed vector"
        raise InputError(f"the collection has {what} (it has {there})", "pass using= with one of those names")
    return int(dims[name])


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


def _edge_query(q: Any, dims: Dims, using: str | None) -> Any:
    if q is None:
        return None
    if isinstance(q, models.FormulaQuery):
        return qe.Formula(edge_expression(q.formula), defaults=q.defaults)
    name = using or None
    if isinstance(q, models.NearestQuery):
        if q.mmr is not None:
            raise _unsupported("MMR")
        return qe.Query.Nearest(_dense(q.nearest, _vector_dim(dims, using)), using=name)
    if isinstance(q, (list, np.ndarray)):
        return qe.Query.Nearest(_dense(q, _vector_dim(dims, using)), using=name)
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
    if r.lookup_from is not None:
        raise _unsupported("lookup_from")


def _edge_prefetch(p: models.Prefetch, dims: Dims) -> qe.Prefetch:
    _check_common(p)
    return qe.Prefetch(
        limit=p.limit if p.limit is not None else _DEFAULT_LIMIT,
        query=_edge_query(p.query, dims, p.using),
        prefetches=[_edge_prefetch(x, dims) for x in _as_list(p.prefetch)] or None,
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


def edge_request(r: models.QueryRequest, dims: Dims = None) -> qe.QueryRequest:
    """Translate a ``models.QueryRequest`` (nested prefetches, dense / formula query on the vector ``using``
    names, filter, params, score_threshold, limit, offset, with_payload) to qdrant_edge; ``dims`` (one size,
    or sizes by vector name) checks the query vectors' size. ``with_vector`` is ignored: hits carry no
    vectors."""
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
        query=_edge_query(r.query, dims, r.using),
        prefetches=[_edge_prefetch(x, dims) for x in _as_list(r.prefetch)] or None,
        with_vector=False,
        with_payload=_edge_with_payload(r.with_payload),
        filter=edge_filter(r.filter),
        score_threshold=r.score_threshold,
        params=edge_params(r.params),
    )


def fast_ids(ids: Sequence[Any]) -> list[Any]:
    """Point ids for qdrant_edge: unsigned-integer strings become ints (the common UUID case stays fast)."""
    try:
        return [int(i) if i.isdigit() else i for i in ids]
    except AttributeError:
        return [to_point_id(i) for i in ids]


def point_error(pids: Sequence[Any], payloads: Sequence[Any], e: Exception) -> InputError:
    """Find the point that qdrant_edge rejected, for a one-line message naming it."""
    for i, p in zip(pids, payloads, strict=False):
        try:
            qe.Point(i, [0.0], p)
        except Exception as inner:
            return InputError(f"point {i!r} is invalid: {inner}", "use UUID string ids and JSON payloads")
    return InputError(f"invalid points: {e}", "use UUID string ids and JSON payloads")
