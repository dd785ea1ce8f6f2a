"""Leaf sources on the command line (DESIGN.md §1.5): `ingest` / `hierarchy build` with --query-classifier,
--leaf-from, --paper and --head; what is stored, shown and refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from hierqdrant.core.features import FeatureSet
from hierqdrant.core.model import HierarchyModel
from hierqdrant.store.collection import iter_points, read_collection_model
from hierqdrant.store.engines import EdgeEngine
from hierqdrant_cli import app
from tests.cli.test_cli_ingest import make_folder
from tests.conftest import gaussian_classes
from tests.schema_check import check

runner = CliRunner()
NAMES = ["a", "b", "c", "d"]


def run(*args: Any, code: int = 0) -> Any:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return json.loads(result.stdout) if code == 0 and "--json" in args else result


@pytest.fixture
def features(tmp_path: Path) -> Path:
    """Four classes in two overlapping pairs (a classifier misses some), 5-d, with unique paths."""
    x, y = gaussian_classes(np.array([[0.0, 0.0], [1.0, 0.0], [6.0, 6.0], [6.8, 6.0]]), per_class=40, dims=5)
    path = tmp_path / "f.npz"
    FeatureSet(x, y, classes=NAMES, paths=[f"p{i}.jpg" for i in range(len(y))]).save(path)
    return path


def stored(store: Path, name: str) -> tuple[HierarchyModel, dict[str, int], dict[str, str | None]]:
    """The collection's model, each point's leaf and label by path."""
    engine = EdgeEngine(store)
    try:
        model = read_collection_model(engine, name)[0]
        leaves: dict[str, int] = {}
        labels: dict[str, str | None] = {}
        for _, _, payloads in iter_points(engine, name, with_vectors=False):
            for p in payloads:
                leaves[p["path"]] = p["hq"]["leaf"]
                labels[p["path"]] = p["hq"].get("label")
        return model, leaves, labels
    finally:
        engine.close()


def test_ingest_defaults_put_labelled_points_in_their_labels_leaf(tmp_path: Path, features: Path) -> None:
    data = FeatureSet.load(features)
    store = tmp_path / "store"
    out = run("ingest", features, "-c", "f", "--data-dir", store, "--json")
    assert (out["query_classifier"], out["leaf_from"]) == ("tied", "label")
    check(out, "cli/ingest")
    model, leaves, _ = stored(store, "f")
    assert (model.query_classifier, model.leaf_from) == ("tied", "label")
    assert data.labels is not None and data.paths is not None
    predicted = model.assign(data.features)
    assert (predicted != data.labels).any(), "the pairs overlap: the classifier misses some"
    assert [leaves[p] for p in data.paths] == data.labels.tolist()
    # --leaf-from predicted: the query classifier's leaf for all, labelled or not
    run("ingest", features, "-c", "g", "--data-dir", store, "--leaf-from", "predicted", "--json")
    model, leaves, _ = stored(store, "g")
    assert [leaves[p] for p in data.paths] == model.assign(data.features).tolist()
    show = run("hierarchy", "show", "-c", "g", "--data-dir", store, "--json")
    assert (show["query_classifier"], show["leaf_from"]) == ("tied", "predicted")


def test_paper_is_mahalanobis_predicted_95_and_refuses_what_it_fixes(tmp_path: Path, features: Path) -> None:
    store = tmp_path / "store"
    out = run("ingest", features, "-c", "p", "--data-dir", store, "--paper", "--json")
    assert (out["query_classifier"], out["leaf_from"]) == ("mahalanobis", "predicted")
    model, leaves, _ = stored(store, "p")
    data = FeatureSet.load(features)
    assert data.paths is not None
    assert model.query_classifier == "mahalanobis" and model.classifier is None
    assert [leaves[p] for p in data.paths] == model.assign(data.features).tolist()
    assert model.summary()["explained_variance"] >= 0.95 and model.dims < 5
    for extra in (["--pca", "all"], ["--query-classifier", "tied"], ["--leaf-from", "label"]):
        result = run("ingest", features, "-c", "q", "--data-dir", store, "--paper", *extra, code=2)
        assert f"--paper fixes {extra[0]}" in result.output
    built = run("hierarchy", "build", "-f", features, "-o", tmp_path / "m", "--paper", "--json")
    assert (built["query_classifier"], built["leaf_from"]) == ("mahalanobis", "predicted")
    # the default ingest into the paper's collection is another model: the error names the leaves and --paper
    result = run("ingest", features, "-c", "p", "--data-dir", store, "--json", code=2)
    assert "mahalanobis query leaf, predicted stored leaves" in result.output and "--paper" in result.output
    run("ingest", features, "-c", "p", "--data-dir", store, "--paper", "--json")  # the same model again: fine


def test_head_needs_a_checkpoint_for_a_features_file_and_uses_its_final_layer(tmp_path: Path, features: Path) -> None:
    import torch

    store = tmp_path / "store"
    result = run("ingest", features, "-c", "h", "--data-dir", store, "--query-classifier", "head", code=2)
    assert "is a features file" in result.output and "--head CHECKPOINT" in result.output
    result = run("hierarchy", "build", "-f", features, "-o", tmp_path / "m", "--query-classifier", "head", code=2)
    assert "--head CHECKPOINT" in result.output
    rng = np.random.default_rng(5)
    w, b = rng.standard_normal((4, 5)), rng.standard_normal(4)
    ckpt = tmp_path / "net.pt"
    state = {"body.weight": torch.ones(5, 5), "fc.weight": torch.tensor(w), "fc.bias": torch.tensor(b)}
    torch.save({"state_dict": state, "classes": NAMES, "objective": "ce"}, ckpt)
    out = run("ingest", features, "-c", "h", "--data-dir", store, "--query-classifier", "head", "--head", ckpt,
              "--leaf-from", "predicted", "--json")  # fmt: skip
    assert out["query_classifier"] == "head"
    model, leaves, _ = stored(store, "h")
    data = FeatureSet.load(features)
    assert data.paths is not None
    want = (data.features @ w.T + b).argmax(axis=1)
    assert [leaves[p] for p in data.paths] == want.tolist()
    assert model.classifier is not None
    np.testing.assert_allclose(model.classifier.weight, w)
    built = run("hierarchy", "build", "-f", features, "-o", tmp_path / "m", "--query-classifier", "head", "--head",
                ckpt, "--json")  # fmt: skip
    assert built["query_classifier"] == "head"
    np.testing.assert_array_equal(HierarchyModel.load(tmp_path / "m").assign(data.features), want)
    # a head of other classes, or --head without the head classifier, is refused
    torch.save({"state_dict": state, "classes": ["a", "b", "d", "c"]}, tmp_path / "other.pt")
    result = run("hierarchy", "build", "-f", features, "-o", tmp_path / "m2", "--query-classifier", "head", "--head",
                 tmp_path / "other.pt", code=2)  # fmt: skip
    assert "trained on other classes" in result.output and "class 2 is 'd' there, 'c' here" in result.output
    result = run("hierarchy", "build", "-f", features, "-o", tmp_path / "m2", "--head", ckpt, code=2)
    assert "--query-classifier head" in result.output
    torch.save({"state_dict": state, "classes": NAMES, "objective": "semantic"}, tmp_path / "sem.pt")
    result = run("ingest", features, "-c", "s", "--data-dir", store, "--query-classifier", "head", "--head",
                 tmp_path / "sem.pt", code=2)  # fmt: skip
    assert "semantic objective" in result.output
    torch.save({"w": torch.ones(4, 3)}, tmp_path / "none.pt")
    result = run("ingest", features, "-c", "s", "--data-dir", store, "--query-classifier", "head", "--head",
                 tmp_path / "none.pt", code=2)  # fmt: skip
    assert "no final linear layer on 5-d features" in result.output


def test_head_from_images_is_the_backbones_own_final_layer(tmp_path: Path) -> None:
    import torch

    from hierqdrant.vision import load_backbone
    from hierqdrant.vision.cifar_resnet import CifarResNet

    torch.manual_seed(0)
    net = CifarResNet(20, 3)
    ckpt = tmp_path / "r20.pt"
    torch.save(net.state_dict(), ckpt)
    images = make_folder(tmp_path / "imgs", classes=3, per_class=6, size=16)
    store = tmp_path / "store"
    common = ["--model", "cifar_resnet20", "--weights", ckpt, "--device", "cpu", "--workers", "0", "--data-dir", store]
    out = run("ingest", images, "-c", "r", *common, "--query-classifier", "head", "--leaf-from", "predicted",
              "--json")  # fmt: skip
    assert out["query_classifier"] == "head"
    model, leaves, _ = stored(store, "r")
    backbone = load_backbone("cifar_resnet20", str(ckpt))
    assert model.classifier is not None and backbone.classifier is not None
    np.testing.assert_allclose(model.classifier.weight, backbone.classifier.weight.detach().double().numpy())
    run("embed", images, "-o", tmp_path / "e.npz", *common[:8], "--json")
    data = FeatureSet.load(tmp_path / "e.npz")
    assert data.paths is not None
    logits = backbone.classifier(torch.tensor(data.features)).detach().numpy()
    assert [leaves[p] for p in data.paths] == logits.argmax(axis=1).tolist()
    # a network whose head scores other classes than the folder's is refused
    make_folder(tmp_path / "four", classes=4, per_class=3, size=16)
    result = run("ingest", tmp_path / "four", "-c", "r4", *common, "--query-classifier", "head", code=2)
    assert "scores 3 classes, the data has 4" in result.output


def test_info_shows_the_leaf_sources_its_info_records(tmp_path: Path, features: Path) -> None:
    """`info` reads the collection's info dict (no model load): the leaf sources where it records them
    (the store's collection_info writes them), null / "—" where it does not."""
    store = tmp_path / "store"
    run("ingest", features, "-c", "f", "--data-dir", store, "--json")
    engine = EdgeEngine(store)
    try:
        info = engine.read_info("f") or {}
        recorded = "query_classifier" in info
        if not recorded:  # until the store records them: what it will write
            engine.update_info("f", {**info, "query_classifier": "tied", "leaf_from": "label"})
    finally:
        engine.close()
    out = run("info", "--data-dir", store, "--json")
    check(out, "cli/info")
    (row,) = out["collections"]
    assert (row["query_classifier"], row["leaf_from"]) == ("tied", "label")
    table = run("info", "--data-dir", store)
    assert "tied / label" in table.stdout


def test_eval_reports_the_leaf_sources_and_their_accuracy(tmp_path: Path, features: Path) -> None:
    """`eval` says which leaf sources ranked and how often each is right, on held-out queries: the numbers
    are the fitted model's own leaf accuracy, recomputed here."""
    x, y = gaussian_classes(np.array([[0.0, 0.0], [1.0, 0.0], [6.0, 6.0], [6.8, 6.0]]), per_class=15, dims=5, seed=9)
    queries = tmp_path / "q.npz"
    FeatureSet(x, y, classes=NAMES, paths=[f"q{i}.jpg" for i in range(len(y))]).save(queries)
    common = ("eval", "--db", features, "--queries", queries, "--methods", "cosine,overlap", "--json")
    for flags, classifier, leaf_from in (((), "tied", "label"), (("--paper",), "mahalanobis", "predicted")):
        data = run(*common, *flags)
        check(data, "cli/eval")
        record = data["leaf_sources"]
        assert (record["query_classifier"], record["leaf_from"]) == (classifier, leaf_from)
        db = FeatureSet.load(features)
        assert db.labels is not None
        model = HierarchyModel.fit(
            db.features, db.labels, class_names=NAMES, query_classifier=classifier, leaf_from=leaf_from,  # type: ignore[arg-type]
            n_components=0.95,
        )  # fmt: skip
        assert record["query_accuracy"] == pytest.approx(np.mean(model.assign(x) == y))
        want_db = 1.0 if leaf_from == "label" else np.mean(model.assign(db.features) == db.labels)
        assert record["database_accuracy"] == pytest.approx(want_db)
    assert 0.5 < record["database_accuracy"] < 1.0  # the paper's predicted leaves miss some stored images
    text = run(*common[:-1]).stdout
    assert "tied query classifier (leaf accuracy" in text and "database leaves from label (1.000)" in text
