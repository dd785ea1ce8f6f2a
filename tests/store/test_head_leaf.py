"""A model whose query leaf is the network's head: the searcher hands the head the raw query vector, and
``exact`` / ``auto`` still equal the NumPy brute force of D on both in-process engines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from qdrant_client import QdrantClient

from hierqdrant import HierarchicalSearcher, HierarchyModel
from hierqdrant.core.classifiers import LinearClassifier
from hierqdrant.store.collection import create_collection, point_id, upsert_points
from hierqdrant.store.engines.client import QdrantEngine
from hierqdrant.store.engines.edge import EdgeEngine


@pytest.mark.parametrize("kind", ["edge", "local"])
def test_head_leaf_through_the_searcher_equals_brute_force(tmp_path: Path, kind: str) -> None:
    rng = np.random.default_rng(0)
    k, d = 4, 6
    centres = rng.standard_normal((k, d)) * 3
    y = np.repeat(np.arange(k), 20)
    x = centres[y] + rng.standard_normal((y.size, d))
    # A head that disagrees with the Gaussians on purpose for class 3 (it never predicts it): the leaf
    # must come from the head, so the result differs from a Mahalanobis or tied model's.
    weight = centres.copy()
    bias = -0.5 * (centres**2).sum(axis=1)
    bias[3] = -1e9
    head = LinearClassifier(weight, bias)
    model = HierarchyModel.fit(
        x, y, class_names=[f"c{i}" for i in range(k)], query_classifier="head", head=head, n_components=None
    )
    engine = EdgeEngine(tmp_path / "store") if kind == "edge" else QdrantEngine(QdrantClient(":memory:"))
    keys = [f"p{i}" for i in range(y.size)]
    create_collection(engine, "h", model)
    upsert_points(engine, "h", model, x, keys, labels=y)
    searcher = HierarchicalSearcher(engine, "h", exact=True)
    ids = np.asarray([point_id("h", key) for key in keys])
    queries = centres[[0, 3, 1]] + rng.standard_normal((3, d)) * 0.5
    assert model.assign(model.transform(queries), projected=True, raw=queries).tolist()[1] != 3
    for strategy in ("exact", "auto"):
        for q in queries:
            hits = searcher.search(q, 5, strategy=strategy)
            want = model.distance(q, x, leaves=model.database_leaves(x, y))  # labels: the model's leaf_from
            order = np.lexsort((ids, want))[:5]
            assert [h.distance for h in hits] == pytest.approx(want[order].tolist(), abs=2e-5)
            assert hits[0].id == ids[order[0]]
    engine.close()
