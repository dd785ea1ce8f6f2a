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
    assert data["protocol"] == "leave-one-out"
    assert data["queries"] == data["database"] == 30
    assert list(data["methods"]) == FIVE  # 'given' needs --taxonomy
    for row in data["methods"].values():
        assert set(row) == {"map@1", "map@5", "map@10", "map@r", "p@1", "mahp@5", "hdist@5", "severity"}
        assert all(v is None or 0.0 <= v <= 10 for v in row.values())
    assert data["scored_by"].startswith("learned overlap tree")
    assert data["fit"].startswith("f.npz [train]: 120")
    assert set(data["paired"]) == {"map@10", "map@r"}
    p = data["paired"]["map@10"]
    assert p["a"] == "overlap" and p["b"] == "cosine" and p["n"] == 30
    assert p["diff"] == pytest.approx(data["methods"]["overlap"]["map@10"] - data["methods"]["cosine"]["map@10"])
    assert data["settings"]["overlap"]["alpha"] == 3.0 and data["settings"]["overlap"]["threshold"] == 0.3


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
    assert list(data["methods"]) == [*FIVE, "given"]
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
    assert tuning["protocol"] == "loo"  # the evaluation is leave-one-out, so is the validation
    assert tuning["fit_size"] + tuning["val_size"] == 120  # the train split, not the 30 test queries
    assert len(tuning["grid"]) == 4
    assert data["settings"]["overlap"]["alpha"] == tuning["best_alpha"]
    assert data["settings"]["overlap"]["threshold"] == tuning["best_threshold"]


def test_eval_through_a_collection_matches_numpy(files: dict[str, Path], tmp_path: Path) -> None:
    data_set = FeatureSet.load(files["npz"]).subset(
        np.flatnonzero(np.asarray(FeatureSet.load(files["npz"]).splits) == "train")
    )
    assert data_set.labels is not None and data_set.paths is not None
    model = HierarchyModel.fit(
        data_set.features, data_set.labels, class_names=data_set.classes, threshold=0.3, alpha=3.0
    )
    store = tmp_path / "store"
    engine = EdgeEngine(store)
    create_collection(engine, "pics", model)
    upsert_points(engine, "pics", model, data_set.features, data_set.paths, labels=data_set.labels)
    engine.close()
    common = ["--methods", "cosine,hierarchy-only,overlap", "--k", "1,5,10", "--json"]
    code, via_engine, result = run("eval", "--db", "pics", "--data-dir", store, *common)
    assert code == 0, result.output
    code, via_numpy, result = run("eval", "--db", files["npz"], "--db-split", "train", *common)
    assert code == 0, result.output
    assert via_engine["path"] == "engine" and via_numpy["path"] == "numpy"
    assert via_engine["protocol"] == via_numpy["protocol"] == "leave-one-out"
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
    assert first["protocol"] == "leave-one-out"  # perturbed copies of the database images, own item excluded
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
        "--metric", "map@5", "--json",
    )  # fmt: skip
    assert code == 0, result.output
    assert len(data["grid"]) == 4 and data["fit_size"] + data["val_size"] == 120  # the train split
    model = HierarchyModel.load(out)
    assert model.alpha == data["best_alpha"] and model.threshold == data["best_threshold"]
    assert model.info["tuning"]["metric"] == "map@5"
    code, _, result = run("tune", "--features", files["npz"], "--out", tmp_path / "m2", "--alphas", "1")
    assert code == 0, result.output
    assert "t \\ α" in result.stdout and "chose t=" in result.stdout


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
