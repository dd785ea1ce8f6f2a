"""Creating, filling and reassigning a hierarchical collection."""

from __future__ import annotations

import numpy as np
import pytest

from hierqdrant.core.errors import ModelMismatchError, NotFoundError
from hierqdrant.core.model import HierarchyModel
from hierqdrant.store.collection import (
    create_collection,
    iter_points,
    point_id,
    read_collection_model,
    reassign,
    upsert_points,
)
from hierqdrant.store.engines import EdgeEngine


@pytest.fixture
def setup(tmp_path, five_classes):
    x, y = five_classes
    model = HierarchyModel.fit(x, y, class_names=list("abcde"), n_components=None)
    engine = EdgeEngine(tmp_path / "store")
    create_collection(engine, "c", model)
    keys = [f"k{i}" for i in range(len(x))]
    yield engine, model, x, y, keys
    engine.close()


def test_upsert_is_idempotent_and_keeps_the_callers_payload(setup) -> None:
    engine, model, x, y, keys = setup
    own = [{"shop": "north", "price": i} for i in range(len(x))]
    upsert_points(engine, "c", model, x, keys, labels=y, payloads=own, batch_size=100)
    upsert_points(engine, "c", model, x, keys, labels=y, payloads=own, batch_size=333)
    assert engine.count("c") == len(x)
    ids, vecs, payloads = next(iter_points(engine, "c", batch_size=5000))
    by_id = dict(zip(ids, payloads, strict=True))
    p = by_id[point_id("c", "k7")]
    assert p["shop"] == "north" and p["price"] == 7
    hq = p["hq"]
    assert hq["model"] == model.model_id and hq["label"] == model.class_names[y[7]]
    assert hq["ancestors"] == model.ancestors(hq["leaf"])
    # Vectors come back as the projected z (Qdrant keeps them unit-normalised; the norm restores them).
    assert vecs is not None
    z = model.transform(x)
    row = ids.index(point_id("c", "k7"))
    np.testing.assert_allclose(vecs[row], z[7], rtol=1e-5, atol=1e-5)


def test_payload_indexes_exist(setup) -> None:
    engine, *_ = setup
    schema = engine.shard("c").info().payload_schema
    assert {"hq.ancestors", "hq.leaf", "hq.model"} <= set(schema)
    assert "Integer" in str(schema["hq.ancestors"].data_type)


def test_a_mismatched_model_is_refused_before_anything_is_written(setup) -> None:
    engine, model, x, y, keys = setup
    other = HierarchyModel.fit(x[:, :4], y, n_components=None)
    with pytest.raises(ModelMismatchError, match="vectors"):
        upsert_points(engine, "c", other, x[:, :4], keys)
    with pytest.raises(ModelMismatchError, match="built with model"):
        upsert_points(engine, "c", model.with_alpha(9.0), x, keys)
    with pytest.raises(ModelMismatchError):
        create_collection(engine, "c", other)
    assert engine.count("c") == 0
    with pytest.raises(NotFoundError):
        upsert_points(engine, "missing", model, x, keys)


def test_reassign_after_a_refit_updates_payloads_only(setup) -> None:
    engine, model, x, y, keys = setup
    upsert_points(engine, "c", model, x, keys, labels=y, payloads=[{"own": 1}] * len(x))
    before = {i: v for ids, vecs, _ in iter_points(engine, "c") for i, v in zip(ids, vecs, strict=True)}  # type: ignore[arg-type]
    flat = HierarchyModel(
        model.projection, model.gaussians, model.hierarchy, alpha=1.0, builder=model.builder
    )
    ward = HierarchyModel.fit(x, y, class_names=list("abcde"), builder="ward", n_components=None)
    assert reassign(engine, "c", ward) == len(x)
    stored, info = read_collection_model(engine, "c")
    assert stored.model_id == ward.model_id and info["model_id"] == ward.model_id
    for ids, vecs, payloads in iter_points(engine, "c"):
        for i, v, p in zip(ids, vecs, payloads, strict=True):  # type: ignore[arg-type]
            np.testing.assert_allclose(v, before[i], rtol=1e-6)
            assert p["own"] == 1
            assert p["hq"]["model"] == ward.model_id
            assert p["hq"]["ancestors"] == ward.ancestors(p["hq"]["leaf"])
            assert "label" in p["hq"]
    # A model with another PCA would change the vectors: refused.
    other_pca = HierarchyModel.fit(x * 2 + 1, y, n_components=None)
    with pytest.raises(ModelMismatchError, match="PCA"):
        reassign(engine, "c", other_pca)
    assert flat.model_id != model.model_id
