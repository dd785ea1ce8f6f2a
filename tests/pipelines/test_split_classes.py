"""``ingest --split-classes`` (issue 15): sub-class leaves from any features, without retraining."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from hierqdrant.core.features import FeatureSet
from hierqdrant.store.collection import read_collection_model
from hierqdrant.store.engines import connect
from hierqdrant_cli import app
from tests.schema_check import check

runner = CliRunner()


def run(*args: Any, code: int = 0) -> Any:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return json.loads(result.stdout) if code == 0 and "--json" in args else result


def _features(path: Path, seed: int = 0) -> tuple[Path, np.ndarray]:
    """Class "two" is two clusters (hidden mode 1, 2); class "one" is one."""
    rng = np.random.default_rng(seed)
    n, d = 80, 6
    x = rng.normal(size=(3 * n, d))
    mode = np.repeat([0, 1, 2], n)
    x[mode == 1, 0] += 9.0
    x[mode == 2, 0] -= 9.0
    x[mode > 0, 1] += 15.0
    y = np.minimum(mode, 1)
    paths = [f"m{m}_{seed}_{i}.jpg" for i, m in enumerate(mode)]
    FeatureSet(x, y, classes=["one", "two"], paths=paths).save(path)
    return path, mode


def test_split_classes_gives_sub_class_leaves_with_class_labels(tmp_path: Path) -> None:
    features, mode = _features(tmp_path / "f.npz")
    store = tmp_path / "db"
    out = run("ingest", features, "-c", "s", "--data-dir", store, "--split-classes", "--json")
    assert out["classes"] == 3  # the model's leaves
    show = run("hierarchy", "show", "-c", "s", "--data-dir", store, "--json")
    check(show, "cli/hierarchy-show")
    assert show["subclass_of"] == [0, 1, 1] and show["classes"] == 2 and show["subclasses"] == 3
    assert "two" in show["hierarchy"]["node_names"]
    text = run("hierarchy", "show", "-c", "s", "--data-dir", store)
    assert "sub-class of two" in text.stdout and "sub-class of one" not in text.stdout
    engine = connect(data_dir=store)
    leaves: dict[int, set[int]] = {0: set(), 1: set(), 2: set()}
    for batch in engine.scroll("s"):
        for r in batch:
            hq = r.payload["hq"]
            m = int(r.payload["path"][1])
            assert hq["label"] == ("one" if m == 0 else "two")  # label stays the class
            leaves[m].add(hq["leaf"])
    engine.close()
    assert leaves[0] == {0} and len(leaves[1]) == len(leaves[2]) == 1 and leaves[1] | leaves[2] == {1, 2}


def test_split_classes_with_tune_searches_the_grid_on_sub_class_leaves(tmp_path: Path) -> None:
    features, _ = _features(tmp_path / "f.npz")
    store = tmp_path / "db"
    out = run("ingest", features, "-c", "s", "--data-dir", store, "--split-classes", "--tune", "--json")
    assert out["classes"] == 3
    show = run("hierarchy", "show", "-c", "s", "--data-dir", store, "--json")
    assert show["subclass_of"] == [0, 1, 1]
    engine = connect(data_dir=store)
    model = read_collection_model(engine, "s")[0]
    tuning = model.info["tuning"]
    assert (model.threshold, model.alpha) == (tuning["best_threshold"], tuning["best_alpha"])
    assert tuning["leaf_accuracy"] == 1.0  # by class: a mode-2 image in a sub-class of "two" is right
    leaves = {m: {r.payload["hq"]["leaf"] for b in engine.scroll("s") for r in b if r.payload["path"][1] == str(m)}
              for m in range(3)}  # fmt: skip
    engine.close()
    assert leaves[0] == {0} and len(leaves[1]) == len(leaves[2]) == 1 and leaves[1] | leaves[2] == {1, 2}


def test_eval_reports_which_classes_break_the_gaussian_assumption(tmp_path: Path) -> None:
    features, _ = _features(tmp_path / "f.npz")
    out = run("eval", "--db", features, "--queries", features, "--methods", "cosine,overlap", "--json")
    check(out, "cli/eval")
    per_class = out["gaussianity"]["classes"]
    assert set(per_class) == {"one", "two"}
    assert per_class["two"]["axis_ks"] > 0.15 > per_class["one"]["axis_ks"]  # two clusters vs one Gaussian


@pytest.mark.slow
def test_eval_on_a_sub_class_collection_ranks_and_scores_by_class(tmp_path: Path) -> None:
    features, _ = _features(tmp_path / "f.npz")
    queries, _ = _features(tmp_path / "q.npz", seed=1)  # new images: held out
    store = tmp_path / "db"
    run("ingest", features, "-c", "s", "--data-dir", store, "--split-classes")
    base = ("eval", "--db", "s", "--data-dir", store, "--json", "--methods", "cosine,overlap,ward")
    held_out = run(*base, "--queries", queries, "--threshold", "0.1")
    check(held_out, "cli/eval")
    assert held_out["protocol"] != "cross-fitting"
    # leaves are sub-classes, accuracy is by class: every query's sub-class is one of its class's
    assert held_out["leaf_sources"]["query_accuracy"] == 1.0 and held_out["leaf_sources"]["database_accuracy"] == 1.0
    for name in ("overlap", "ward"):
        assert held_out["methods"][name]["map@r"] == 1.0 > held_out["methods"]["cosine"]["map@r"]
    # the training images as queries: cross-fitting refits each fold's sub-class Gaussians
    folds = run(*base, "--queries", features)
    assert folds["protocol"] == "cross-fitting" and folds["methods"]["overlap"]["map@r"] == 1.0


def test_ingest_refuses_what_it_cannot_do_with_sub_classes_in_one_line(tmp_path: Path) -> None:
    features, _ = _features(tmp_path / "f.npz")
    store = tmp_path / "db"
    cases = [
        (["--split-classes", "--tune", "--tune-metric", "mahp@5"], "cannot score mahp@5"),
        (["--split-classes", "--keep-model"], "--keep-model keeps the stored model"),
    ]
    for extra, message in cases:
        bad = run("ingest", features, "-c", "s", "--data-dir", store, *extra, code=2)
        assert message in bad.stderr and "Traceback" not in bad.output
    assert not store.exists()  # refused before the store was opened
