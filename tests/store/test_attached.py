"""Searching an application's own collection (DESIGN.md §2.7) on both engines, built with the store alone.

The model is fitted on the labelled points' unit ``image`` vectors and stored with ``attached_info``; most
points get their ``hq`` payload from ``hq_payload_for``; some are left without it, as an application's
upserts are until the next ``attach --update``. Every strategy must equal a NumPy brute force of D on the
application's own vectors, in which a point without ``hq`` has the root as its LCA.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient, models

from hierqdrant.core.errors import InputError, ModelMismatchError, NotFoundError
from hierqdrant.core.model import HierarchyModel, unit_rows
from hierqdrant.store.collection import (
    ATTACHED_EXTRACTOR,
    attached_info,
    check_model_matches,
    create_collection,
    hq_payload_for,
    upsert_points,
)
from hierqdrant.store.engines import EdgeEngine, QdrantEngine
from hierqdrant.store.engines.edge_convert import edge_request
from hierqdrant.store.engines.vectors import (
    VectorSpec,
    create_app_collection,
    create_payload_index,
    delete_model,
    delete_payload_key,
    drop_payload_index,
    payload_indexes,
    retrieve_vectors,
    scroll_vectors,
    vector_config,
)
from hierqdrant.store.search import HierarchicalSearcher
from tests.schema_check import check
from tests.store import application as appmod

ALPHAS = (0.0, 0.5, 3.0)


def _fit(app: appmod.App) -> HierarchyModel:
    ids = [p for p in app.ids if p in app.image and app.category(p) is not None]
    x = unit_rows(np.stack([app.image[p] for p in ids]))
    y = np.asarray([appmod.CATEGORIES.index(str(app.category(p))) for p in ids])
    extractor = {"name": ATTACHED_EXTRACTOR, "vector": "image", "distance": "Cosine", "feature_dim": appmod.IMAGE}
    return HierarchyModel.fit(
        x, y, class_names=appmod.CATEGORIES, builder="given", taxonomy=appmod.taxonomy(), alpha=1.5,
        n_components=None, extractor=extractor,
    )  # fmt: skip


@pytest.fixture(scope="module", params=["edge", "local"])
def attached(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An application collection with a model stored as attached; every 7th imaged point without ``hq``."""
    edge = request.param == "edge"
    engine: Any = EdgeEngine(tmp_path_factory.mktemp("edge")) if edge else QdrantEngine(QdrantClient(":memory:"))
    app = appmod.make_points(240, seed=11, no_image_every=25)
    appmod.build(engine, "shop", app)
    before = appmod.snapshot(engine, "shop")
    model = _fit(app)
    engine.write_model("shop", model.to_files(), attached_info(model, "hq", "image", "category"))
    for field, kind in (("hq.ancestors", "integer"), ("hq.leaf", "integer"), ("hq.model", "keyword")):
        create_payload_index(engine, "shop", field, kind)  # type: ignore[arg-type]
    annotated = [p for i, p in enumerate(app.ids) if p in app.image and i % 7 != 3]
    payloads = hq_payload_for(model, np.stack([app.image[p] for p in annotated]), [app.category(p) for p in annotated])
    engine.set_payload("shop", annotated, [p["hq"] for p in payloads], key="hq")
    yield {"engine": engine, "app": app, "model": model, "before": before, "kind": request.param}
    engine.close()


def _reference(attached: dict[str, Any]) -> tuple[list[str], np.ndarray, list[dict | None]]:
    return appmod.stored(attached["engine"], "shop")


def _queries(app: appmod.App, n: int = 6, seed: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    assert app.centres is not None
    return app.centres[rng.integers(0, 12, n)] + rng.standard_normal((n, appmod.IMAGE)) * 1.1 + 2.0


FILTERS: dict[str, tuple[models.Filter | None, Any]] = {
    "none": (None, lambda p: True),
    "tenant": (
        models.Filter(must=[models.FieldCondition(key="tenant", match=models.MatchValue(value="north"))]),
        lambda p: p.get("tenant") == "north",
    ),
    "nested": (
        models.Filter(
            must=[models.FieldCondition(key="shop.name", match=models.MatchAny(any=["shop-1", "shop-2"]))],
            must_not=[models.FieldCondition(key="price", range=models.Range(gt=80))],
        ),
        lambda p: p["shop"]["name"] in ("shop-1", "shop-2") and not p["price"] > 80,
    ),
}


def test_the_collection_is_an_application_s(attached: dict[str, Any]) -> None:
    engine, model = attached["engine"], attached["model"]
    assert vector_config(engine, "shop") == {"image": VectorSpec(16, "Cosine"), "text": VectorSpec(8, "Dot")}
    info = engine.read_info("shop")
    check(info, "model-info")
    assert info["vector"] == "image" and info["input_dims"] == 16 and info["label_key"] == "category"
    assert check_model_matches(engine, "shop", model)["model_id"] == model.model_id
    # the app's own payload and vectors did not change when hq was written
    assert appmod.snapshot(engine, "shop") == attached["before"]
    for batch in engine.scroll("shop"):
        for r in batch:
            if "hq" in r.payload:
                check(r.payload, "payload")


@pytest.mark.parametrize("where", list(FILTERS))
@pytest.mark.parametrize("strategy", ["exact", "auto", "rerank", "formula"])
def test_every_strategy_equals_the_brute_force_on_the_app_s_vector(attached, strategy: str, where: str) -> None:
    engine, model, app = attached["engine"], attached["model"], attached["app"]
    ids, x, hqs = _reference(attached)
    user, keep = FILTERS[where]
    payloads = {r.id: r.payload for batch in engine.scroll("shop") for r in batch}
    mask = np.asarray([keep(payloads[i]) for i in ids])
    # rerank and formula are exact once their candidates cover the filtered set
    oversample = 1000.0 if strategy in ("rerank", "formula") else 2.0
    searcher = HierarchicalSearcher(engine, "shop", strategy=strategy, exact=True, oversample=oversample)
    assert searcher.vector == "image" and searcher.requests.using == "image"
    queries = _queries(app)
    for alpha in ALPHAS:
        for q, hits in zip(queries, searcher.search_batch(queries, 8, filter=user, alpha=alpha), strict=True):
            appmod.assert_same_ranking(hits, *appmod.brute_force(model, ids, x, hqs, q, 8, alpha, mask))
            assert all(keep(h.payload) for h in hits)


@pytest.mark.parametrize("auto_cosine", [None, True, False])
@pytest.mark.parametrize("rings", [0, 1, 3])
def test_every_step_of_auto_keeps_its_certificate(attached, auto_cosine, rings) -> None:
    engine, model, app = attached["engine"], attached["model"], attached["app"]
    ids, x, hqs = _reference(attached)
    searcher = HierarchicalSearcher(engine, "shop", auto_rings=rings, auto_cosine=auto_cosine, exact=True, oversample=1)
    queries = _queries(app, seed=rings)
    for alpha in (0.2, 1.5, 6.0):
        for q, hits in zip(queries, searcher.search_batch(queries, 6, alpha=alpha), strict=True):
            appmod.assert_same_ranking(hits, *appmod.brute_force(model, ids, x, hqs, q, 6, alpha))
    s = searcher.stats
    assert s.certified + s.fallbacks == len(queries) * 3


def test_points_without_hq_rank_as_if_their_lca_were_the_root(attached) -> None:
    """In every strategy: D = (1 − cos) + α for a point the application upserted without hq (the ring
    filters never match it, the formula's indicator terms are all 0)."""
    engine, model = attached["engine"], attached["model"]
    ids, x, hqs = _reference(attached)
    bare = [i for i, hq in enumerate(hqs) if hq is None]
    assert bare
    root = model.hierarchy.root
    for alpha in (0.5, 3.0):
        for strategy in ("exact", "auto", "rerank", "formula"):
            searcher = HierarchicalSearcher(engine, "shop", strategy=strategy, exact=True, oversample=1000)
            q = x[bare[0]] * 7.0  # a bare point's own vector: its cosine is 1, its D must still be α
            hits = searcher.search(q, len(ids), alpha=alpha)
            by_id = {h.id: h for h in hits}
            for i in bare:
                h = by_id[ids[i]]
                assert h.leaf is None and h.lca == root and h.lca_height == model.tree_height
                assert h.distance == pytest.approx(1.0 - h.cosine + alpha, abs=2e-5)
            assert by_id[ids[bare[0]]].cosine == pytest.approx(1.0, abs=1e-5)
            appmod.assert_same_ranking(hits, *appmod.brute_force(model, ids, x, hqs, q, len(ids), alpha))


def test_more_like_this_offset_and_score_threshold(attached) -> None:
    engine, model, app = attached["engine"], attached["model"], attached["app"]
    ids, x, hqs = _reference(attached)
    searcher = HierarchicalSearcher(engine, "shop", exact=True)
    pid = ids[10]
    hits = searcher.search(pid, 6, alpha=1.0)
    mask = np.asarray([i != pid for i in ids])
    appmod.assert_same_ranking(hits, *appmod.brute_force(model, ids, x, hqs, x[10], 6, 1.0, mask))
    assert pid not in {h.id for h in hits}
    assert [h.id for h in searcher.search(pid.upper(), 6, alpha=1.0)] == [h.id for h in hits]
    q = _queries(app, 1)[0]
    for strategy in ("exact", "auto"):
        full = searcher.search(q, 12, strategy=strategy)
        page = searcher.search(q, 4, strategy=strategy, offset=5)
        assert [h.id for h in page] == [h.id for h in full[5:9]]
        cut = 1.0 - full[6].distance
        kept = searcher.search(q, 12, strategy=strategy, score_threshold=cut)
        assert [h.id for h in kept] == [h.id for h in full if 1.0 - h.distance >= cut]
        assert searcher.search(q, 3, strategy=strategy, score_threshold=cut, offset=5) == kept[5:8]
    with pytest.raises(NotFoundError, match="no point"):
        searcher.search("00000000-0000-0000-0000-000000000001", 3)
    with pytest.raises(InputError, match="offset"):
        searcher.search(q, 3, offset=-1)
    with pytest.raises(InputError, match="score_threshold"):
        searcher.search(q, 3, score_threshold=float("nan"))


def test_the_vector_and_the_query_must_be_the_app_s(attached) -> None:
    engine = attached["engine"]
    assert HierarchicalSearcher(engine, "shop", vector="image").vector == "image"
    with pytest.raises(ModelMismatchError, match="its vector 'image', not 'text'"):
        HierarchicalSearcher(engine, "shop", vector="text")
    searcher = HierarchicalSearcher(engine, "shop")
    with pytest.raises(InputError, match="vectors like its 'image' vectors"):
        searcher.search(np.ones(8), 3)
    with pytest.raises(InputError, match="projected"):
        searcher.search(np.ones(16), 3, projected=True)
    with pytest.raises(InputError, match="is zero"):
        searcher.search(np.zeros(16), 3)
    model = attached["model"]
    with pytest.raises(InputError, match="attached on its vector 'image'"):
        upsert_points(engine, "shop", model, np.ones((1, 16)), ["k"])
    with pytest.raises(InputError, match="ingest into it"):
        create_collection(engine, "shop", model)


def test_hq_payload_for(attached) -> None:
    model, app = attached["model"], attached["app"]
    pts = [p for p in app.ids if p in app.image][:6]
    x = np.stack([app.image[p] for p in pts])
    labels = ["cat03", None, "zebra", "cat07", "cat07", 5]
    out = hq_payload_for(model, x, labels)  # type: ignore[arg-type]
    assert [set(p) for p in out] == [{"hq"}] * 6
    leaves = model.assign(model.transform(unit_rows(x)), projected=True)
    for payload, leaf, label in zip(out, leaves, labels, strict=True):
        hq = payload["hq"]
        assert hq["leaf"] == leaf and hq["ancestors"] == model.ancestors(int(leaf)) and hq["model"] == model.model_id
        assert hq.get("label") == (label if label in model.class_names else None)
        assert "norm" not in hq
        check({"category": label, **payload}, "payload")
    by_label = hq_payload_for(model, x * 3.0, labels, leaf_from="label", payload_key="tree")  # type: ignore[arg-type]
    assert by_label[0]["tree"]["leaf"] == 3 and by_label[3]["tree"]["leaf"] == 7
    assert by_label[1]["tree"]["leaf"] == leaves[1]  # no label: predicted (scale does not matter)
    assert hq_payload_for(model, np.zeros((0, 16))) == []
    with pytest.raises(InputError, match="16-d"):
        hq_payload_for(model, np.ones((2, 8)))


# ---------------------------------------------------------------------------------------------------------
# the engine pieces


@pytest.fixture(params=["edge", "local"])
def bare(request: pytest.FixtureRequest, tmp_path) -> Any:
    engine: Any = EdgeEngine(tmp_path / "e") if request.param == "edge" else QdrantEngine(QdrantClient(":memory:"))
    app = appmod.make_points(30, seed=2, no_image_every=10)
    appmod.build(engine, "app", app)
    yield engine, app
    engine.close()


def test_named_vectors_scroll_retrieve_and_query(bare) -> None:
    engine, app = bare
    got = {r.id: r for batch in scroll_vectors(engine, "app", "image", batch_size=7) for r in batch}
    assert set(got) == set(app.ids)
    for pid, r in got.items():
        if pid in app.image:
            np.testing.assert_allclose(r.vector, unit_rows(app.image[pid][None])[0], atol=1e-6)
        else:
            assert r.vector is None
        assert r.payload == app.payloads[pid]
    (rec,) = retrieve_vectors(engine, "app", [app.ids[0]], "text")
    assert rec.vector is not None and rec.vector.shape == (8,)
    q = unit_rows(app.image[app.ids[0]][None])[0].tolist()
    (hits,) = engine.query_batch("app", [models.QueryRequest(query=q, using="image", limit=3)])
    assert hits[0].id == app.ids[0] and hits[0].score == pytest.approx(1.0, abs=1e-5)
    pre = models.Prefetch(query=q, using="image", limit=5)
    nested = models.QueryRequest(prefetch=[pre], query=models.FormulaQuery(formula="$score"), limit=2)
    assert [h.id for h in engine.query_batch("app", [nested])[0]] == [h.id for h in hits[:2]]
    with pytest.raises(InputError):
        engine.query_batch("app", [models.QueryRequest(query=q, using="sound", limit=3)])
    with pytest.raises(InputError, match="named vectors|unnamed"):
        engine.vector_size("app")


def test_payload_indexes_payload_keys_and_models_come_and_go(bare) -> None:
    engine, app = bare
    before = appmod.snapshot(engine, "app")
    create_payload_index(engine, "app", "hq.ancestors", "integer")
    create_payload_index(engine, "app", "hq.model", "keyword")
    create_payload_index(engine, "app", "hq.model", "keyword")  # again: nothing happens
    if isinstance(engine, EdgeEngine):
        assert payload_indexes(engine, "app") == {"hq.ancestors": "integer", "hq.model": "keyword"}
        meta = json.loads((engine.data_dir / "app" / "collection.json").read_text())
        assert meta["integer_index"] == ["hq.ancestors"] and meta["keyword_index"] == ["hq.model"]
    engine.set_payload("app", app.ids, [{"leaf": 1, "ancestors": [1, 2], "model": "0" * 16}] * len(app.ids), key="hq")
    engine.write_model("app", {"model.json": b"{}"}, {"model_id": "0" * 16, "payload_key": "hq"})
    delete_payload_key(engine, "app", "hq")
    for field in ("hq.ancestors", "hq.model", "hq.leaf"):
        drop_payload_index(engine, "app", field)
    delete_model(engine, "app")
    assert payload_indexes(engine, "app") == {}
    assert engine.read_info("app") is None and engine.read_model("app") is None
    assert appmod.snapshot(engine, "app") == before
    assert all("hq" not in r.payload for batch in engine.scroll("app") for r in batch)
    if isinstance(engine, EdgeEngine):
        assert not [p for p in (engine.data_dir / "app").iterdir() if p.name.startswith("model")]


def test_other_distances_and_the_translation_of_using() -> None:
    with pytest.raises(InputError, match="unknown distance"):
        VectorSpec(4, "cosine")
    req = models.QueryRequest(
        prefetch=[models.Prefetch(query=[1.0, 0.0], using="image", limit=4)],
        query=models.FormulaQuery(formula="$score"),
        using="image",
    )
    edge_request(req, {"image": 2, "text": 3})
    with pytest.raises(InputError, match="no vector named 'image'.*'text'"):
        edge_request(req, {"text": 3})
    with pytest.raises(InputError, match="dimensions"):
        edge_request(req, {"image": 3})
    with pytest.raises(InputError, match="no unnamed vector"):
        edge_request(models.QueryRequest(query=[1.0, 0.0]), {"image": 2})


def test_an_app_collection_with_other_vectors_can_be_made(tmp_path) -> None:
    for engine in (EdgeEngine(tmp_path / "e"), QdrantEngine(QdrantClient(":memory:"))):
        create_app_collection(engine, "dots", {"": VectorSpec(4, "Dot")})
        assert vector_config(engine, "dots") == {"": VectorSpec(4, "Dot")}
        with pytest.raises(InputError, match="already exists|exists"):
            create_app_collection(engine, "dots", {"": VectorSpec(4, "Dot")})
        engine.close()
