"""Stored leaves beyond ingest: `reassign` and the attached-collection payload (`hq_payload_for`) follow the
leaf sources like `upsert_points` does — a known label is the leaf (with sub-class leaves: the best sub-class of
that class, DESIGN.md §1.9), an unknown one gets the query classifier's leaf."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hierqdrant import HierarchyModel
from hierqdrant.store.collection import (
    create_collection,
    hq_payload_for,
    iter_points,
    reassign,
    upsert_points,
)
from hierqdrant.store.engines import EdgeEngine

# Two classes, each made of two well separated clusters (four sub-classes: 0, 1 → class 0; 2, 3 → class 1).
CENTRES = np.array([[0.0, 0.0, 8.0], [8.0, 0.0, 8.0], [0.0, 8.0, -8.0], [8.0, 8.0, -8.0]])
SUBCLASS_OF = [0, 0, 1, 1]


def data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    sub = np.repeat(np.arange(4), 25)
    return CENTRES[sub] + rng.standard_normal((sub.size, 3)) * 0.5, sub


def test_reassign_gives_labelled_points_a_subclass_of_their_class_and_unlabelled_ones_a_prediction(
    tmp_path: Path,
) -> None:
    x, sub = data()
    classes = np.asarray(SUBCLASS_OF)[sub]
    flat = HierarchyModel.fit(x, classes, class_names=["a", "b"], n_components=None)
    engine = EdgeEngine(tmp_path)
    create_collection(engine, "c", flat)
    keys = [f"p{i}" for i in range(sub.size)]
    labels = [None if i % 10 == 0 else int(c) for i, c in enumerate(classes)]  # every tenth point unlabelled
    upsert_points(engine, "c", flat, x, keys, labels=labels, payloads=[{"path": k} for k in keys])
    # Refitted with sub-class leaves on the same points: the same PCA, so reassign keeps the vectors.
    split = HierarchyModel.fit(x, sub, class_names=["a", "b"], n_components=None, subclass_of=SUBCLASS_OF)
    assert reassign(engine, "c", split, leaf_from="label") == sub.size
    stored = {}
    for _, _, payloads in iter_points(engine, "c", with_vectors=False):
        for p in payloads:
            stored[p["path"]] = p["hq"]
    for i, key in enumerate(keys):
        hq = stored[key]
        assert SUBCLASS_OF[hq["leaf"]] == classes[i]  # the well separated clusters: always the right class
        assert hq["leaf"] == sub[i]  # and the right cluster within it
        assert ("label" in hq) == (labels[i] is not None)
    engine.close()


def test_attached_payload_uses_the_label_or_the_prediction_per_point() -> None:
    x, sub = data(1)
    model = HierarchyModel.fit(x, sub, class_names=["a", "b"], n_components=None, subclass_of=SUBCLASS_OF)
    names = [model.class_names[c] for c in np.asarray(SUBCLASS_OF)[sub]]
    names[0] = None  # type: ignore[call-overload]
    names[1] = "not-a-class"  # type: ignore[call-overload]
    out = hq_payload_for(model, x, names, leaf_from="label")
    for i, payload in enumerate(out):
        hq = payload["hq"]
        assert hq["leaf"] == sub[i]  # separated clusters: predicted or within the label, the true sub-class
        assert hq.get("label") == (names[i] if i > 1 else None)
    # leaf_from="predicted" ignores the labels for the leaf but still records them.
    predicted = hq_payload_for(model, x, names, leaf_from="predicted")
    assert [p["hq"]["leaf"] for p in predicted] == model.assign(x).tolist()
    assert predicted[5]["hq"]["label"] == names[5]
