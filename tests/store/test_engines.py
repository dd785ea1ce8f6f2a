"""Storage engines: the embedded qdrant-edge engine, qdrant-client local mode and (with Docker) a Qdrant
server behave the same, agree with NumPy on a hierarchical formula query, and keep the model with the data."""

from __future__ import annotations

import logging
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient, models

from hierqdrant.core.errors import EngineError, InputError, NotFoundError
from hierqdrant.store.engines import (
    SIDECAR_SUFFIX,
    EdgeEngine,
    Engine,
    QdrantEngine,
    as_engine,
    connect,
)
from hierqdrant.store.engines.edge_convert import edge_request

DIM = 8
# A 3-level tree: leaves 0..5, middle nodes 6 (leaves 0, 1), 7 (2, 3), 8 (4, 5), root 9.
MIDDLE = {0: 6, 1: 6, 2: 7, 3: 7, 4: 8, 5: 8}


def _ancestors(leaf: int) -> list[int]:
    return [leaf, MIDDLE[leaf], 9]


def _data(n: int = 120, seed: int = 0) -> tuple[list[str], np.ndarray, list[dict[str, Any]]]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    leaves = rng.integers(0, 6, n)
    ids = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"img/{seed}/{i}")) for i in range(n)]
    payloads = [
        {
            "hq": {"leaf": int(leaf), "ancestors": _ancestors(int(leaf)), "model": "m1"},
            "app": {"n": i, "tag": "even" if i % 2 == 0 else "odd"},
        }
        for i, leaf in enumerate(leaves)
    ]
    return ids, x, payloads


def _fill(engine: Engine, name: str, n: int = 120, seed: int = 0) -> tuple[list[str], np.ndarray, list[dict]]:
    ids, x, payloads = _data(n, seed)
    engine.create(name, DIM, integer_index=["hq.ancestors", "hq.leaf"], keyword_index=["hq.model"])
    engine.upsert(name, ids, x, payloads, batch_size=32)
    return ids, x, payloads


def _ring(node: int) -> models.FieldCondition:
    return models.FieldCondition(key="hq.ancestors", match=models.MatchValue(value=node))


# ---------------------------------------------------------------------------------------------------------
# collections and points


def test_engines_satisfy_the_protocol(tmp_path: Path) -> None:
    assert isinstance(EdgeEngine(tmp_path), Engine)
    assert isinstance(QdrantEngine(QdrantClient(":memory:")), Engine)


def test_create_makes_the_payload_indexes(engine_any: Any, engine_name: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # local mode's "payload indexes have no effect" warning is silenced
        _fill(engine_any, engine_name, n=10)
    assert engine_any.vector_size(engine_name) == DIM
    assert engine_name in engine_any.collections()
    if isinstance(engine_any, EdgeEngine):
        schema = engine_any.shard(engine_name).info().payload_schema
        import qdrant_edge as qe

        assert schema["hq.ancestors"].data_type == qe.PayloadSchemaType.Integer
        assert schema["hq.model"].data_type == qe.PayloadSchemaType.Keyword
        assert schema["hq.ancestors"].points == 10
    elif engine_any.local:
        # local mode accepts payload indexes but keeps none (it filters in Python)
        assert engine_any.client.get_collection(engine_name).payload_schema == {}
    else:
        schema = engine_any.client.get_collection(engine_name).payload_schema
        assert schema["hq.ancestors"].data_type == models.PayloadSchemaType.INTEGER
        assert schema["hq.model"].data_type == models.PayloadSchemaType.KEYWORD


def test_create_twice_and_missing_collections_are_clear_errors(engine_any: Any, engine_name: str) -> None:
    engine_any.create(engine_name, DIM)
    with pytest.raises(InputError, match="already exists"):
        engine_any.create(engine_name, DIM)
    assert not engine_any.exists("no-such-collection")
    for call in (
        lambda: engine_any.count("no-such-collection"),
        lambda: engine_any.vector_size("no-such-collection"),
        lambda: engine_any.read_info("no-such-collection"),
        lambda: engine_any.read_model("no-such-collection"),
        lambda: list(engine_any.scroll("no-such-collection")),
    ):
        with pytest.raises(NotFoundError, match="no-such-collection"):
            call()
    engine_any.delete("no-such-collection")  # deleting what is not there is fine


def test_upsert_count_and_reupsert(engine_any: Any, engine_name: str) -> None:
    ids, x, payloads = _fill(engine_any, engine_name)
    assert engine_any.count(engine_name) == 120
    even = models.Filter(must=[models.FieldCondition(key="app.tag", match=models.MatchValue(value="even"))])
    assert engine_any.count(engine_name, even) == 60
    # the same ids again (new vectors) update instead of duplicating
    engine_any.upsert(engine_name, ids[:50], x[:50] + 1.0, payloads[:50], batch_size=7)
    assert engine_any.count(engine_name) == 120


def test_upsert_validates_its_input(engine_any: Any, engine_name: str) -> None:
    ids, x, payloads = _data(4)
    engine_any.create(engine_name, DIM)
    with pytest.raises(InputError, match="shape"):
        engine_any.upsert(engine_name, ids, x[:, :3], payloads)
    with pytest.raises(InputError, match="ids"):
        engine_any.upsert(engine_name, ids[:3], x, payloads)
    bad = x.copy()
    bad[2, 1] = np.nan
    with pytest.raises(InputError, match="NaN"):
        engine_any.upsert(engine_name, ids, bad, payloads)
    with pytest.raises(InputError, match="not-a-uuid"):
        engine_any.upsert(engine_name, ["not-a-uuid", *ids[1:]], x, payloads)
    assert engine_any.count(engine_name) == 0


def test_set_payload_changes_only_that_key(engine_any: Any, engine_name: str) -> None:
    ids, x, payloads = _fill(engine_any, engine_name, n=20)
    before = {r.id: r for batch in engine_any.scroll(engine_name, with_vectors=True) for r in batch}
    engine_any.set_payload(engine_name, ids[:6], [3, 3, 4, 4, 5, [1, 2]], key="hq.leaf", batch_size=4)
    engine_any.set_payload(engine_name, ids[6:8], [{"a": 1}, None], key="extra")
    after = {r.id: r for batch in engine_any.scroll(engine_name, with_vectors=True) for r in batch}
    assert after[ids[0]].payload["hq"]["leaf"] == 3
    assert after[ids[5]].payload["hq"]["leaf"] == [1, 2]
    assert after[ids[6]].payload["extra"] == {"a": 1}
    assert "extra" not in after[ids[7]].payload  # null removes the key (JSON merge-patch, as in Qdrant)
    for i, pid in enumerate(ids):
        expected = {**payloads[i], "hq": dict(payloads[i]["hq"])}
        if i < 6:
            expected["hq"]["leaf"] = after[pid].payload["hq"]["leaf"]
        if i == 6:
            expected["extra"] = {"a": 1}
        assert after[pid].payload == expected
        np.testing.assert_array_equal(after[pid].vector, before[pid].vector)
    with pytest.raises(InputError, match="values"):
        engine_any.set_payload(engine_name, ids[:2], [1], key="hq.leaf")
    with pytest.raises(NotFoundError):
        engine_any.set_payload(engine_name, [str(uuid.uuid4())], [1], key="hq.leaf")


def test_existing_ids(engine_any: Any, engine_name: str) -> None:
    ids, _, _ = _fill(engine_any, engine_name, n=30)
    unknown = [str(uuid.uuid4()) for _ in range(3)]
    upper = ids[5].upper()  # another spelling of a stored UUID is reported as given
    got = engine_any.existing_ids(engine_name, [*ids[:3], *unknown, upper])
    assert got == {*ids[:3], upper}
    assert engine_any.existing_ids(engine_name, []) == set()


def test_scroll_returns_everything_with_normalised_vectors(engine_any: Any, engine_name: str) -> None:
    ids, x, payloads = _fill(engine_any, engine_name, n=45)
    batches = list(engine_any.scroll(engine_name, with_vectors=True, batch_size=10))
    assert [len(b) for b in batches] == [10, 10, 10, 10, 5]
    got = {r.id: r for b in batches for r in b}
    assert set(got) == set(ids)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    for i, pid in enumerate(ids):
        assert got[pid].payload == payloads[i]
        assert got[pid].vector is not None and got[pid].vector.dtype == np.float32
        np.testing.assert_allclose(got[pid].vector, xn[i], atol=1e-6)
    no_vec = [r for b in engine_any.scroll(engine_name, filter=models.Filter(must=[_ring(6)])) for r in b]
    assert no_vec and all(r.vector is None for r in no_vec)
    assert {r.id for r in no_vec} == {ids[i] for i, p in enumerate(payloads) if 6 in p["hq"]["ancestors"]}


# ---------------------------------------------------------------------------------------------------------
# queries


def _hier_request(q: np.ndarray, a: int, user: models.Filter | None, k: int = 10) -> models.QueryRequest:
    """Outer cosine prefetch over (top-15 ∪ ring-a top-15), re-scored by $score + 0.5·[a ∈ ancestors]."""
    exact = models.SearchParams(exact=True)
    return models.QueryRequest(
        prefetch=[
            models.Prefetch(
                query=q.tolist(),
                limit=60,
                params=exact,
                prefetch=[
                    models.Prefetch(query=q.tolist(), limit=15, params=exact),
                    models.Prefetch(
                        query=q.tolist(), limit=15, params=exact, filter=models.Filter(must=[_ring(a)])
                    ),
                ],
            )
        ],
        query=models.FormulaQuery(
            formula=models.SumExpression(sum=["$score", models.MultExpression(mult=[0.5, _ring(a)])])
        ),
        filter=user,
        limit=k,
        with_payload=True,
    )


def _numpy_hier(
    x: np.ndarray, payloads: list[dict], q: np.ndarray, a: int, allowed: np.ndarray, k: int = 10
) -> list[tuple[int, float]]:
    """The same query by brute force: the user filter applies to every stage (Qdrant propagates it)."""
    cos = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (q / np.linalg.norm(q))
    ring = np.array([a in p["hq"]["ancestors"] for p in payloads])
    idx = np.arange(len(x))
    top = lambda mask: idx[mask][np.argsort(-cos[mask])][:15]  # noqa: E731
    cand = np.union1d(top(allowed), top(allowed & ring))
    score = cos[cand] + 0.5 * ring[cand]
    order = np.argsort(-score)[:k]
    return [(int(cand[o]), float(score[o])) for o in order]


def test_hierarchical_query_matches_numpy(engine_any: Any, engine_name: str) -> None:
    ids, x, payloads = _fill(engine_any, engine_name, n=150)
    rng = np.random.default_rng(7)
    queries = rng.standard_normal((4, DIM)).astype(np.float32)
    rings = [6, 7, 8, 2]
    user = models.Filter(
        must_not=[models.FieldCondition(key="hq.leaf", match=models.MatchValue(value=0))],
        must=[models.FieldCondition(key="app.n", range=models.Range(lt=140))],
    )
    allowed = np.array([p["hq"]["leaf"] != 0 and p["app"]["n"] < 140 for p in payloads])
    results = engine_any.query_batch(
        engine_name, [_hier_request(q, a, user) for q, a in zip(queries, rings, strict=True)]
    )
    assert len(results) == 4
    for q, a, hits in zip(queries, rings, results, strict=True):
        expected = _numpy_hier(x, payloads, q, a, allowed)
        assert [h.id for h in hits] == [ids[i] for i, _ in expected]
        np.testing.assert_allclose([h.score for h in hits], [s for _, s in expected], atol=1e-5)
        assert all(h.payload["hq"]["leaf"] != 0 for h in hits)


def test_edge_and_local_mode_agree_on_formulas_and_filters(tmp_path: Path) -> None:
    edge, local = EdgeEngine(tmp_path), QdrantEngine(QdrantClient(":memory:"))
    ids, x, payloads = _fill(edge, "c", n=80, seed=3)
    _fill(local, "c", n=80, seed=3)
    q = np.random.default_rng(1).standard_normal(DIM).tolist()
    one = [models.Prefetch(query=q, limit=30)]
    two = [*one, models.Prefetch(query=q, limit=30, filter=models.Filter(must=[_ring(7)]))]
    # every formula keeps $score in, so no two candidates tie (tied points may come in any order)
    formulas: list[tuple[Any, list[models.Prefetch]]] = [
        ("$score", one),
        # $score is $score[0]: a point found only by the second prefetch gets the default
        (models.SumExpression(sum=["$score[0]", models.MultExpression(mult=[0.25, "$score[1]"])]), two),
        (models.NegExpression(neg="$score"), one),
        (
            models.DivExpression(
                div=models.DivParams(left="$score", right=models.SumExpression(sum=[1.0, _ring(7)]))
            ),
            one,
        ),
        (
            models.SumExpression(
                sum=["$score", models.MultExpression(mult=[-0.3, models.Filter(must_not=[_ring(6)])])]
            ),
            one,
        ),
        (models.SumExpression(sum=["$score", models.MultExpression(mult=["hq.leaf", 0.1])]), one),
    ]
    requests = [
        models.QueryRequest(
            prefetch=prefetch,
            query=models.FormulaQuery(formula=f, defaults={"$score[0]": -1.0, "$score[1]": 0.0}),
            limit=12,
            with_payload=["hq"],
        )
        for f, prefetch in formulas
    ]
    requests.append(models.QueryRequest(query=models.NearestQuery(nearest=q), limit=5, offset=3))
    requests.append(
        models.QueryRequest(
            query=q,
            limit=50,
            score_threshold=0.2,
            with_payload=models.PayloadSelectorExclude(exclude=["app"]),
        )
    )
    for got, want in zip(edge.query_batch("c", requests), local.query_batch("c", requests), strict=True):
        assert [h.id for h in got] == [h.id for h in want]
        np.testing.assert_allclose([h.score for h in got], [h.score for h in want], atol=1e-5)
        assert [h.payload for h in got] == [h.payload for h in want]

    filters = [
        models.Filter(must=[models.FieldCondition(key="hq.leaf", match=models.MatchAny(any=[1, 3]))]),
        models.Filter(
            must=[models.FieldCondition(key="hq.leaf", match=models.MatchExcept(**{"except": [1, 3]}))]
        ),
        models.Filter(
            should=[_ring(6), models.FieldCondition(key="app.tag", match=models.MatchValue(value="odd"))]
        ),
        models.Filter(
            must_not=[
                models.Filter(must=[_ring(8), models.FieldCondition(key="app.n", range=models.Range(gte=10))])
            ]
        ),
        models.Filter(min_should=models.MinShould(conditions=[_ring(6), _ring(0), _ring(9)], min_count=2)),
        models.Filter(must=[models.HasIdCondition(has_id=ids[:5] + [str(uuid.uuid4())])]),
        models.Filter(must=[models.IsEmptyCondition(is_empty=models.PayloadField(key="hq.missing"))]),
        models.Filter(must=[models.IsNullCondition(is_null=models.PayloadField(key="hq.leaf"))]),
        models.Filter(
            must=[models.FieldCondition(key="hq.ancestors", values_count=models.ValuesCount(gte=3))]
        ),
        models.Filter(must=[models.FieldCondition(key="hq.model", match=models.MatchValue(value="m1"))]),
    ]
    for f in filters:
        assert edge.count("c", f) == local.count("c", f), f
    edge.close()
    local.close()


def test_edge_rejects_what_it_cannot_run(tmp_path: Path) -> None:
    edge = EdgeEngine(tmp_path)
    edge.create("c", DIM)
    q = [0.1] * DIM
    bad = {
        "FusionQuery": models.QueryRequest(
            query=models.FusionQuery(fusion=models.Fusion.RRF), prefetch=[models.Prefetch(query=q)]
        ),
        "point id": models.QueryRequest(query=str(uuid.uuid4())),
        "no vector named 'image'": models.QueryRequest(query=q, using="image"),
        "3 dimensions": models.QueryRequest(query=[0.1, 0.2, 0.3]),
        "SliceCondition": models.QueryRequest(
            query=q, filter=models.Filter(must=[models.SliceCondition(slice=models.Slice(total=2, index=0))])
        ),
    }
    for what, request in bad.items():
        with pytest.raises(InputError, match=what):
            edge.query_batch("c", [request])
    assert edge.query_batch("c", []) == []
    edge.close()


def test_edge_translation_keeps_prefetch_params() -> None:
    req = models.QueryRequest(
        prefetch=models.Prefetch(
            query=[1.0, 0.0], limit=7, params=models.SearchParams(hnsw_ef=99, exact=True)
        ),
        query=models.FormulaQuery(formula="$score"),
    )
    translated = edge_request(req, dims=2)
    assert translated.limit == 10  # Qdrant's default
    (pf,) = translated.prefetches
    assert pf.limit == 7 and pf.params is not None
    assert pf.params.hnsw_ef == 99 and pf.params.exact


# ---------------------------------------------------------------------------------------------------------
# the model travels with the collection


def _model_files() -> tuple[dict[str, bytes], dict[str, Any]]:
    rng = np.random.default_rng(5)
    files = {"manifest.json": b'{"kind": "test"}', "arrays.npz": rng.bytes(5000), "empty.bin": b""}
    info = {"model_id": "abc123", "payload_key": "hq", "dims": DIM, "alpha": 3.0}
    return files, info


def test_model_round_trip_and_overwrite(engine_any: Any, engine_name: str) -> None:
    if isinstance(engine_any, QdrantEngine):
        engine_any.model_chunk_bytes = 1000  # several chunks per file
    engine_any.create(engine_name, DIM)
    assert engine_any.read_model(engine_name) is None
    assert engine_any.read_info(engine_name) is None
    files, info = _model_files()
    engine_any.write_model(engine_name, files, info)
    assert engine_any.read_model(engine_name) == (files, info)
    assert engine_any.read_info(engine_name) == info
    # a second write replaces the model entirely
    engine_any.write_model(engine_name, {"manifest.json": b"{}"}, {"model_id": "v2"})
    assert engine_any.read_model(engine_name) == ({"manifest.json": b"{}"}, {"model_id": "v2"})
    assert engine_any.read_info(engine_name) == {"model_id": "v2"}
    listed = engine_any.collections()
    assert engine_name in listed and not any(c.endswith(SIDECAR_SUFFIX) for c in listed)
    with pytest.raises(InputError, match="file name"):
        engine_any.write_model(engine_name, {"../evil": b""}, {})
    with pytest.raises(InputError, match="JSON"):
        engine_any.write_model(engine_name, {}, {"x": float("nan")})


def test_corrupt_edge_model_file_is_detected(tmp_path: Path) -> None:
    edge = EdgeEngine(tmp_path)
    edge.create("c", DIM)
    files, info = _model_files()
    edge.write_model("c", files, info)
    (folder,) = (tmp_path / "c").glob("model-*")  # the model's generation folder
    path = folder / "arrays.npz"
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="arrays.npz.*corrupt|corrupt.*arrays.npz"):
        edge.read_model("c")
    path.unlink()
    with pytest.raises(InputError, match="missing"):
        edge.read_model("c")
    edge.close()


@pytest.mark.parametrize("engine_any", ["local", "server"], indirect=True)  # the qdrant-client engine's model store
def test_corrupt_sidecar_is_detected(engine_any: Any, engine_name: str) -> None:
    assert isinstance(engine_any, QdrantEngine)
    engine_any.model_chunk_bytes = 1000
    engine_any.create(engine_name, DIM)
    files, info = _model_files()
    engine_any.write_model(engine_name, files, info)
    side = engine_name + SIDECAR_SUFFIX
    client = engine_any.client
    assert client.collection_exists(side)
    chunks = [
        r
        for r in client.scroll(side, limit=100, with_payload=True)[0]
        if r.payload and r.payload.get("hq_model") == "chunk"
    ]
    target = next(r for r in chunks if r.payload["file"] == "arrays.npz" and r.payload["index"] == 2)
    # a chunk whose bytes changed
    client.set_payload(side, {"data": "QUJD"}, points=[target.id], wait=True)
    with pytest.raises(InputError, match="sha256"):
        engine_any.read_model(engine_name)
    # a chunk that is gone (a truncated store)
    client.delete(side, points_selector=models.PointIdsList(points=[target.id]), wait=True)
    with pytest.raises(InputError, match="missing"):
        engine_any.read_model(engine_name)
    # deleting the collection deletes its sidecar
    engine_any.delete(engine_name)
    assert not client.collection_exists(side)


# ---------------------------------------------------------------------------------------------------------
# connecting, names, persistence


def test_unreachable_url_is_one_clear_error_without_the_key(caplog: pytest.LogCaptureFixture) -> None:
    secret = "sk-very-secret-api-key"
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(EngineError) as err:
            connect("http://127.0.0.1:9", api_key=secret, timeout=2)
        with pytest.raises(EngineError) as err2:
            connect(f"http://user:{secret}@127.0.0.1:9/?api-key={secret}", timeout=2)
    assert (
        str(err.value)
        == "cannot reach Qdrant at http://127.0.0.1:9 — start the server or check --url / QDRANT_URL"
    )
    assert "\n" not in str(err2.value)
    for text in (str(err.value), str(err2.value), caplog.text, *(str(w.message) for w in caught)):
        assert secret not in text
    with pytest.raises(InputError, match="URL"):
        connect("localhost:6333")


@pytest.mark.parametrize(
    "name", ["", "../escape", "a/b", ".hidden", "-dash", "a b", "x" * 300, f"m{SIDECAR_SUFFIX}"]
)
def test_bad_collection_names_are_rejected(tmp_path: Path, name: str) -> None:
    edge = EdgeEngine(tmp_path / "data")
    with pytest.raises(InputError, match="collection name"):
        edge.create(name, DIM)
    with pytest.raises(InputError, match="collection name"):
        edge.exists(name)
    with pytest.raises(InputError, match="collection name"):
        QdrantEngine(QdrantClient(":memory:")).create(name, DIM)
    assert not (tmp_path / "escape").exists()


def test_edge_persists_across_close_and_reopen(tmp_path: Path) -> None:
    edge = EdgeEngine(tmp_path)
    ids, x, _ = _fill(edge, "kept", n=40)
    files, info = _model_files()
    edge.write_model("kept", files, info)
    edge.optimize("kept")
    edge.close()
    names = sorted(p.name for p in (tmp_path / "kept").iterdir())
    assert names[0] == "collection.json" and names[1].startswith("model-") and names[2:] == ["shard"]

    again = EdgeEngine(tmp_path)
    assert again.collections() == ["kept"]
    assert again.count("kept") == 40
    assert again.vector_size("kept") == DIM
    assert again.read_model("kept") == (files, info)
    (hits,) = again.query_batch("kept", [models.QueryRequest(query=x[3].tolist(), limit=1)])
    assert hits[0].id == ids[3] and hits[0].score == pytest.approx(1.0, abs=1e-5)
    again.delete("kept")
    assert again.collections() == [] and not (tmp_path / "kept").exists()
    again.close()


def test_connect_and_as_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HIERQDRANT_DATA", str(tmp_path / "env-data"))
    default = connect()
    assert isinstance(default, EdgeEngine) and default.kind == "embedded"
    assert default.location == str((tmp_path / "env-data").resolve())
    explicit = connect(data_dir=tmp_path / "d")
    assert isinstance(explicit, EdgeEngine) and explicit.location == str((tmp_path / "d").resolve())
    mem = connect(":memory:")
    assert isinstance(mem, QdrantEngine) and mem.kind == "qdrant" and mem.local
    persisted = connect(f"local:{tmp_path / 'local'}")
    assert isinstance(persisted, QdrantEngine) and persisted.local
    persisted.close()
    client = QdrantClient(":memory:")
    wrapped = as_engine(client)
    assert isinstance(wrapped, QdrantEngine) and wrapped.client is client
    assert as_engine(explicit) is explicit
    with pytest.raises(InputError, match="QdrantClient"):
        as_engine(42)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------
# server behaviour without a server: error mapping and the pre-1.16 metadata fallback


def _http_error(status: int, message: str) -> Exception:
    import json

    import httpx
    from qdrant_client.http.exceptions import UnexpectedResponse

    body = json.dumps({"status": {"error": message}}).encode()
    return UnexpectedResponse(status, "Error", body, httpx.Headers())


@pytest.mark.parametrize(
    ("status", "message", "error", "text"),
    [
        (404, "Not found: Collection `c` doesn't exist!", NotFoundError, "collection 'c' not found"),
        (404, "No point with id 1 found", NotFoundError, "No point with id 1"),
        (401, "Must provide an API key", EngineError, "HTTP 401"),
        (400, "Wrong input: Vector dimension error", InputError, "Vector dimension error"),
        (500, "Service internal error: boom", EngineError, "boom"),
    ],
)
def test_server_errors_become_one_line_errors(status: int, message: str, error: type, text: str) -> None:
    engine = QdrantEngine(QdrantClient(":memory:"))

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise _http_error(status, message)

    engine.client.count = fail  # type: ignore[method-assign]
    with pytest.raises(error, match=text) as caught:
        engine.count("c")
    assert "\n" not in str(caught.value)


def test_info_falls_back_to_the_sidecar_without_collection_metadata() -> None:
    engine = QdrantEngine(QdrantClient(":memory:"))
    engine._version = (1, 15, 0)  # a server that predates collection metadata
    engine.create("c", DIM)
    files, info = _model_files()
    engine.write_model("c", files, info)
    assert engine.client.get_collection("c").config.metadata in (None, {})
    assert engine.read_info("c") == info
    assert engine.read_model("c") == (files, info)


def test_local_path_mode_keeps_points_model_and_info(tmp_path: Path) -> None:
    engine = connect(f"local:{tmp_path / 'qdrant-local'}")
    ids, _, _ = _fill(engine, "c", n=12)
    files, info = _model_files()
    engine.write_model("c", files, info)
    engine.close()
    again = QdrantEngine(QdrantClient(path=str(tmp_path / "qdrant-local")))
    assert again.collections() == ["c"]
    assert again.count("c") == 12
    assert again.existing_ids("c", ids) == set(ids)
    assert again.read_info("c") == info
    assert again.read_model("c") == (files, info)
    again.close()
