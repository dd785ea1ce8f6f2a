"""`hierqdrant eval` and `hierqdrant tune` end to end on small generated features and images."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from hierqdrant.core.features import FeatureSet
from hierqdrant.core.model import HierarchyModel
from hierqdrant.store.collection import create_collection, read_collection_model, upsert_points
from hierqdrant.store.engines import EdgeEngine
from hierqdrant_cli import app
from tests.conftest import gaussian_classes

runner = CliRunner()
CENTRES = np.array([[0.0, 0.0], [1.0, 0.0], [7.0, 7.0], [7.6, 7.0], [3.0, -9.0]])
FIVE = ["euclidean", "cosine", "hierarchy-only", "overlap", "ward"]
RAW = ["cosine-raw", "euclidean-raw"]


def run(*args: str) -> tuple[int, Any, Any]:
    result = runner.invoke(app, [str(a) for a in args])
    data = None
    if "--json" in args and result.exit_code == 0:
        data = json.loads(result.stdout.strip().splitlines()[-1])
    return result.exit_code, data, result


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """f.npz: 5 classes × 30 (train 24 / test 6 per class); tax.txt: {0,1}, {2,3}, {4}."""
    root = tmp_path_factory.mktemp("eval")
    x, y = gaussian_classes(CENTRES, per_class=30, dims=5, seed=0)
    splits = np.where(np.arange(len(y)) % 30 < 24, "train", "test")
    FeatureSet(
        x,
        y,
        classes=[f"k{i}" for i in range(5)],
        paths=[f"{s}/{i}.jpg" for i, s in enumerate(splits)],
        splits=list(splits),
    ).save(root / "f.npz")
    (root / "tax.txt").write_text("5 0\n5 1\n6 2\n6 3\n7 5\n7 6\n7 4\n")
    return {"npz": root / "f.npz", "tax": root / "tax.txt", "root": root}


def test_eval_json_shape_leave_one_out(files: dict[str, Path]) -> None:
    code, data, result = run(
        "eval", "--db", files["npz"], "--db-split", "test", "--k", "1,5,10", "--mahp-k", "5", "--hdist-k", "5", "--json"
    )
    assert code == 0, result.output
    assert data["protocol"] == data["ranking"] == "leave-one-out"  # the test split; fitted on the train split
    assert data["queries"] == data["database"] == 30
    assert list(data["methods"]) == RAW + FIVE  # 'given' needs --taxonomy
    for row in data["methods"].values():
        assert set(row) == {"map@1", "map@5", "map@10", "map@r", "p@1", "mahp@5", "hdist@5", "severity"}
        assert all(v is None or 0.0 <= v <= 10 for v in row.values())
    assert data["scored_by"].startswith("learned overlap tree")
    assert data["fit"].startswith("f.npz [train]: 120")
    assert set(data["paired"]) == {"map@10", "map@r"}
    p = data["paired"]["map@10"]
    # Tested against what users have without us: cosine on the raw features.
    assert p["a"] == "overlap" and p["b"] == "cosine-raw" and p["n"] == 30
    assert p["diff"] == pytest.approx(data["methods"]["overlap"]["map@10"] - data["methods"]["cosine-raw"]["map@10"])
    assert data["settings"]["overlap"]["alpha"] == 3.0 and data["settings"]["overlap"]["threshold"] == 0.3
    assert any("(k − 1)/k" in n for n in data["notes"]) and isinstance(data["warnings"], list)


def test_eval_queries_against_database_with_taxonomy_and_plot(files: dict[str, Path], tmp_path: Path) -> None:
    plot = tmp_path / "map.png"
    code, data, result = run(
        "eval",
        "--db", files["npz"], "--db-split", "train",
        "--queries", files["npz"], "--query-split", "test",
        "--taxonomy", files["tax"], "--score-taxonomy", files["tax"],
        "--alpha", "2,ward=0.5", "--k", "1,5,10,20",
        "--plot", plot, "--json",
    )  # fmt: skip
    assert code == 0, result.output
    assert data["protocol"] == "queries-vs-database"
    assert (data["queries"], data["database"]) == (30, 120)
    assert list(data["methods"]) == [*RAW, *FIVE, "given"]
    assert data["scored_by"].startswith("taxonomy tax.txt")
    assert data["settings"]["ward"]["alpha"] == 0.5 and data["settings"]["given"]["alpha"] == 2.0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The rich table: methods × metrics, with the chosen settings below it.
    code, _, result = run(
        "eval", "--db", files["npz"], "--db-split", "train", "--queries", files["npz"], "--query-split", "test",
        "--methods", "cosine,overlap", "--k", "5", "--quiet",
    )  # fmt: skip
    assert code == 0, result.output
    assert "map@5" in result.stdout and "overlap − cosine on map@r" in result.stdout


def test_eval_tune_chooses_on_training_items(files: dict[str, Path]) -> None:
    code, data, result = run(
        "eval", "--db", files["npz"], "--db-split", "test", "--methods", "cosine,hierarchy-only,overlap",
        "--tune", "--thresholds", "0.05,0.5", "--alphas", "0.5,2", "--k", "5,10", "--json",
    )  # fmt: skip
    assert code == 0, result.output
    tuning = data["tuning"]["overlap"]
    assert tuning["protocol"] == "split"  # as tune and ingest --tune
    assert tuning["fit_size"] + tuning["val_size"] == 120  # the train split, not the 30 test queries
    assert {g["pca"] for g in tuning["grid"]} <= {0.95, 0.99, "all"} and tuning["best_pca"] in (0.95, 0.99, "all")
    assert len(tuning["grid"]) >= 4
    assert data["settings"]["overlap"]["alpha"] == tuning["best_alpha"]
    assert data["settings"]["overlap"]["threshold"] == tuning["best_threshold"]


def test_eval_through_a_collection_matches_numpy(files: dict[str, Path], tmp_path: Path) -> None:
    data_set = FeatureSet.load(files["npz"]).subset(
        np.flatnonzero(np.asarray(FeatureSet.load(files["npz"]).splits) == "train")
    )
    assert data_set.labels is not None and data_set.paths is not None
    model = HierarchyModel.fit(  # predicted leaves stored (the paper's): what --leaf-from predicted ranks with
        data_set.features, data_set.labels, class_names=data_set.classes, threshold=0.3, alpha=3.0,
        leaf_from="predicted",
    )  # fmt: skip
    store = tmp_path / "store"
    engine = EdgeEngine(store)
    create_collection(engine, "pics", model)
    upsert_points(engine, "pics", model, data_set.features, data_set.paths, labels=data_set.labels)
    engine.close()
    # The same (leaky) leave-one-out on both paths: the same rankings, so the same scores.
    common = ["--methods", "cosine,hierarchy-only,overlap", "--k", "1,5,10", "--protocol", "loo-leaky",
              "--leaf-from", "predicted", "--json"]  # fmt: skip
    code, via_engine, result = run("eval", "--db", "pics", "--data-dir", store, *common)
    assert code == 0, result.output
    code, via_numpy, result = run("eval", "--db", files["npz"], "--db-split", "train", *common)
    assert code == 0, result.output
    assert via_engine["path"] == "engine" and via_numpy["path"] == "numpy"
    assert via_engine["protocol"] == via_numpy["protocol"] == "loo-leaky"
    assert via_engine["ranking"] == via_numpy["ranking"] == "leave-one-out"
    assert any("loo-leaky" in w for w in via_engine["warnings"]) and any(
        "loo-leaky" in w for w in via_numpy["warnings"]
    )
    for name, row in via_numpy["methods"].items():
        for key, value in row.items():
            assert via_engine["methods"][name][key] == pytest.approx(value, nan_ok=True), (name, key)


def _images(root: Path, classes: int = 3, per_class: int = 6, size: int = 16) -> Path:
    for c in range(classes):
        folder = root / f"class{c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            rng = np.random.default_rng(100 * c + i)
            yy, xx = np.mgrid[0:size, 0:size] / size
            base = [xx, yy, (xx + yy) / 2][c]
            img = np.clip(base * 200 + 20 + rng.normal(0, 12, (size, size)), 0, 255).astype(np.uint8)
            Image.fromarray(np.repeat(img[:, :, None], 3, axis=2)).save(folder / f"{i}.png")
    return root


def test_eval_perturbs_query_images_with_a_fixed_seed(tmp_path: Path) -> None:
    folder = _images(tmp_path / "imgs")
    args = ["eval", "--db", folder, "--model", "pixels", "--methods", "cosine,overlap", "--k", "1,3",
            "--perturb", "occlusion:2", "--seed", "7", "--workers", "0", "--device", "cpu", "--json"]  # fmt: skip
    code, first, result = run(*args)
    assert code == 0, result.output
    assert first["perturb"] == {"queries": "occlusion:2", "database": None, "seed": 7}
    # Perturbed copies of the database images, own item excluded; the model is fitted on those very
    # images, so the queries are cross-fitted.
    assert first["ranking"] == "leave-one-out" and first["protocol"] == "cross-fitting"
    assert list(first["methods"]) == ["cosine", "overlap"] and first["queries"] == 18


@pytest.mark.parametrize(
    "extra",
    [
        ["--methods", "cosine,nearest"],
        ["--k", "0"],
        ["--k", "a,b"],
        ["--methods", "given"],
        ["--alpha", "overlap=x"],
        ["--threshold", "ward=0.2"],
        ["--queries", "QUERIES_NPZ", "--perturb", "blur"],
        ["--perturb", "sharpen"],
        ["--perturb-db", "blur"],
        ["--tune", "--val-share", "1.5"],
        ["--tune", "--tune-metric", "ndcg@3"],
        ["--tune", "--tune-metric", "severity"],
        ["--tune", "--tune-metric", "mahp@10"],
        ["--tune", "--alphas", "-1"],
        ["--taxonomy", "missing.txt"],
        ["--max-queries", "0"],
        ["--folds", "1"],
        ["--image-size", "0"],
        ["--tune", "--pcas", "1.5x"],
        ["--tune", "--pcas", "0"],
    ],
)
def test_eval_bad_input_is_one_line_exit_2_nothing_written(
    files: dict[str, Path], tmp_path: Path, extra: list[str]
) -> None:
    plot = tmp_path / "out.png"
    extra = [str(files["npz"]) if e == "QUERIES_NPZ" else e for e in extra]
    code, _, result = run("eval", "--db", files["npz"], "--db-split", "test", "--plot", plot, "--json", *extra)
    assert code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "Traceback" not in result.output
    assert result.stdout.strip() == ""
    assert not plot.exists()


@pytest.mark.parametrize(
    "args",
    [
        ["--db", "missing/f.npz"],
        ["--db", "nosuchcollection"],
        ["--db", "somecollection", "--fit", "DB"],
        ["--db", "somecollection", "--model", "pixels"],
        ["--db", "DB", "--plot", "PLOTDIR/out.txt"],
        ["--db", "DB", "--plot", "PLOTDIR/missing/out.png"],
    ],
)
def test_eval_bad_sources_and_plots(files: dict[str, Path], tmp_path: Path, args: list[str]) -> None:
    args = [str(files["npz"]) if a == "DB" else a.replace("PLOTDIR", str(tmp_path)) for a in args]
    code, _, result = run("eval", *args, "--data-dir", tmp_path / "store")
    assert code == 2, result.output
    assert len(result.stderr.strip().splitlines()) == 1
    assert list(tmp_path.glob("out.*")) == []


def test_tune_command_writes_a_model_dir(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "model"
    code, data, result = run(
        "tune", "--features", files["npz"], "--out", out, "--thresholds", "0.05,0.5", "--alphas", "0.5,2",
        "--pcas", "all", "--metric", "map@5", "--query-classifier", "tied", "--json",
    )  # fmt: skip
    assert code == 0, result.output
    assert len(data["grid"]) == 4 + 4 * len(data["widened"]) and data["fit_size"] + data["val_size"] == 120
    assert data["best_pca"] == "all" and data["best_dims"] == 5 and {g["pca"] for g in data["grid"]} == {"all"}
    assert {g["classifier"] for g in data["grid"]} == {"tied"} == {data["best_classifier"]}  # pinned: not searched
    model = HierarchyModel.load(out)
    assert model.alpha == data["best_alpha"] and model.threshold == data["best_threshold"]
    assert model.info["tuning"]["metric"] == "map@5"
    code, data, result = run("tune", "--features", files["npz"], "--out", tmp_path / "m2", "--alphas", "1", "--json")
    assert code == 0, result.output
    assert {g["classifier"] for g in data["grid"]} == {"tied", "mahalanobis"}  # searched by default
    assert HierarchyModel.load(tmp_path / "m2").query_classifier == data["best_classifier"]
    code, _, result = run("tune", "--features", files["npz"], "--out", tmp_path / "m3", "--alphas", "1")
    assert code == 0, result.output
    assert "t \\ α" in result.stdout and "query leaf, PCA" in result.stdout and ", t=" in result.stdout


def test_tune_command_updates_a_collection(files: dict[str, Path], tmp_path: Path) -> None:
    data_set = FeatureSet.load(files["npz"])
    assert data_set.labels is not None and data_set.paths is not None and data_set.splits is not None
    model = HierarchyModel.fit(data_set.features, data_set.labels, class_names=data_set.classes, threshold=0.9)
    store = tmp_path / "store"
    engine = EdgeEngine(store)
    create_collection(engine, "pics", model)
    upsert_points(
        engine, "pics", model, data_set.features, data_set.paths, labels=data_set.labels, splits=data_set.splits
    )
    engine.close()
    code, data, result = run(
        "tune", "--collection", "pics", "--data-dir", store, "--thresholds", "0.05,0.3", "--alphas", "1,2", "--json"
    )
    assert code == 0, result.output
    assert data["reassigned"] == len(data_set)
    assert data["fit_size"] + data["val_size"] == 120  # labelled non-test points only
    engine = EdgeEngine(store)
    stored, _ = read_collection_model(engine, "pics")
    engine.close()
    assert stored.model_id == data["model_id"]
    assert stored.alpha == data["best_alpha"] and stored.threshold == data["best_threshold"]
    assert np.array_equal(stored.projection.components, model.projection.components)


@pytest.mark.parametrize(
    "args",
    [
        ["--features", "NPZ"],  # nowhere to store
        [],  # nothing to tune on
        ["--features", "missing.npz", "--out", "OUT"],
        ["--features", "NPZ", "--out", "OUT", "--metric", "severity"],
        ["--features", "NPZ", "--out", "OUT", "--thresholds", "0,0.5"],
        ["--features", "NPZ", "--out", "OUT", "--builder", "given"],
        ["--features", "NPZ", "--out", "OUT", "--alphas", "x"],
        ["--features", "NPZ", "--out", "OUT", "--val-share", "0"],
    ],
)
def test_tune_bad_input(files: dict[str, Path], tmp_path: Path, args: list[str]) -> None:
    out = tmp_path / "model"
    args = [str(files["npz"]) if a == "NPZ" else str(out) if a == "OUT" else a for a in args]
    code, _, result = run("tune", *args, "--data-dir", tmp_path / "store")
    assert code == 2, result.output
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


# ---------------------------------------------------------------------------------------------------------
# progress, warnings and notes, --image-size, one tuning routine


def test_eval_json_keeps_stdout_one_document_and_reports_progress_on_stderr(files: dict[str, Path]) -> None:
    result = runner.invoke(app, ["eval", "--db", str(files["npz"]), "--db-split", "train", "--methods",
                                 "cosine-raw,cosine,overlap", "--k", "1,5", "--folds", "3", "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)  # the whole of stdout is one JSON document
    assert data["protocol"] == "cross-fitting" and data["cross_fitting"]["folds"] == 3
    err = result.stderr
    assert "read 150 items" in err and "fitting PCA" in err and "cross-fitting fold 3/3" in err
    assert "ranking fold 1/3" in err and "ranking by the raw features" in err
    assert len(err.strip().splitlines()) < 20  # off a terminal: a few plain lines, no bar redraws
    quiet = runner.invoke(
        app, ["eval", "--db", str(files["npz"]), "--methods", "cosine", "--k", "1", "--json", "--quiet"]
    )
    assert quiet.exit_code == 0 and quiet.stderr.strip() == ""


def test_eval_table_prints_warnings_and_the_mahp_footnote(files: dict[str, Path]) -> None:
    code, _, result = run("eval", "--db", files["npz"], "--db-split", "train", "--methods", "cosine,overlap",
                          "--k", "1", "--mahp-k", "5", "--threshold", "0.99", "--protocol", "loo-leaky")  # fmt: skip
    assert code == 0, result.output
    out = " ".join(result.stdout.split())
    assert out.startswith("loo-leaky:")
    assert "warning: --protocol loo-leaky" in out and "warning: the overlap tree is flat (height 1) at t = 0.99" in out
    assert "note: mahp@k keeps Barz & Denzler's normalisation" in out and "0.8000 at k = 5" in out


def test_eval_image_size_embeds_at_that_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hierqdrant.vision as vision

    folder = _images(tmp_path / "imgs")
    sizes: list[int | None] = []
    real = vision.load_backbone

    def spy(name: str, weights: str | None = None, **kwargs: Any) -> Any:
        sizes.append(kwargs.get("image_size"))
        backbone = real(name, weights, **kwargs)
        sizes.append(backbone.feature_dim)
        return backbone

    monkeypatch.setattr(vision, "load_backbone", spy)
    code, data, result = run("eval", "--db", folder, "--model", "pixels", "--methods", "cosine,overlap", "--k", "1",
                             "--workers", "0", "--device", "cpu", "--image-size", "4", "--json")  # fmt: skip
    assert code == 0, result.output
    assert sizes == [4, 16] and data["queries"] == 18  # 4 × 4 grayscale pixels


def test_ingest_tune_eval_tune_and_tune_reach_the_same_optimum(files: dict[str, Path], tmp_path: Path) -> None:
    """One tuning routine: on the same training items with the same settings, ingest --tune, eval --tune
    (held-out queries, so the model is fitted on the train split, as ingest fits its labelled non-test
    images) and tune choose the same PCA, t and α."""
    store = tmp_path / "store"
    code, _, result = run("ingest", files["npz"], "--collection", "tuned", "--tune", "--data-dir", store, "--json")
    assert code == 0, result.output
    engine = EdgeEngine(store)
    stored, _ = read_collection_model(engine, "tuned")
    engine.close()
    by_ingest = stored.info["tuning"]
    code, data, result = run("eval", "--db", files["npz"], "--db-split", "train", "--queries", files["npz"],
                             "--query-split", "test", "--methods", "cosine,overlap", "--k", "1", "--tune",
                             "--json")  # fmt: skip
    assert code == 0, result.output
    by_eval = data["tuning"]["overlap"]
    code, by_tune, result = run("tune", "--features", files["npz"], "--out", tmp_path / "m", "--json")
    assert code == 0, result.output
    chosen = [(r["best_pca"], r["best_threshold"], r["best_alpha"]) for r in (by_ingest, by_eval, by_tune)]
    assert chosen[0] == chosen[1] == chosen[2], chosen
    assert by_ingest["best_score"] == by_eval["best_score"] == by_tune["best_score"]
    assert stored.model_id == by_eval["model_id"] or stored.dims == by_eval["best_dims"]
