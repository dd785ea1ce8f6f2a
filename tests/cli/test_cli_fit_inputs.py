"""`hierqdrant ingest` run again: the collection's fingerprint of its fit's inputs (DESIGN.md §2.6) decides.

The same images, labels and settings continue with the stored model (no refit); one image more, another
label or another setting is refused in one line naming it; a collection written before fingerprints were
recorded refits and compares model ids, as then.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from hierqdrant.core.features import FeatureSet
from hierqdrant.store.engines import EdgeEngine
from hierqdrant_cli import app
from tests.cli.test_cli_ingest import _pattern, ingest_args, make_folder
from tests.conftest import gaussian_classes
from tests.schema_check import check

runner = CliRunner()
FIX = ("--recreate", "--keep-model", "--collection")


def ingest(*args: Any) -> tuple[int, dict[str, Any] | None, str]:
    """Exit code, the --json summary (None on an error) and stderr."""
    result = runner.invoke(app, [str(a) for a in args])
    out = json.loads(result.stdout.strip().splitlines()[-1]) if result.exit_code in (0, 1) else None
    return result.exit_code, out, result.stderr


def info_of(store: Path, name: str = "pics") -> dict[str, Any]:
    engine = EdgeEngine(store)
    try:
        info = engine.read_info(name)
        assert info is not None
        return info
    finally:
        engine.close()


def refused(code: int, err: str, *said: str) -> None:
    """Exit 2 and one line on stderr that says each of ``said`` and the ways on."""
    assert code == 2, err
    (line,) = err.strip().splitlines()
    assert "fitted on other inputs than this ingest's" in line and "Traceback" not in err, line
    for words in (*said, *FIX):
        assert words in line, (words, line)


def test_the_same_ingest_continues_and_other_images_or_settings_are_refused(tmp_path: Path) -> None:
    store = tmp_path / "store"
    src = make_folder(tmp_path / "imgs")
    code, first, err = ingest(*ingest_args(src, store))
    assert code == 0 and first is not None and first["fitted"], err
    info = info_of(store)
    check(info, "model-info")
    fit = info["fit_inputs"]
    assert (fit["version"], fit["source"], fit["items"]) == (1, "images", 24)
    assert fit["settings"]["threshold"] == 0.2 and fit["settings"]["query_classifier"] == "tied"

    # the same command again: the stored model, no refit
    code, again, err = ingest(*ingest_args(src, store))
    assert code == 0 and again is not None, err
    assert not again["fitted"] and again["model_id"] == first["model_id"] and again["ingested"] == 24
    assert "continuing with the collection's model" in err

    # another --threshold
    code, _, err = ingest(*ingest_args(src, store, "--threshold", "0.5", "--quiet"))
    refused(code, err, "--threshold is 0.5 now, 0.2 when it was fitted")
    # one image more
    extra = src / "class1" / "new.png"
    Image.fromarray(_pattern(1, 77)).save(extra)
    code, _, err = ingest(*ingest_args(src, store, "--quiet"))
    refused(code, err, "the labelled images differ (25 now, 24 when it was fitted)")
    # … which --keep-model assigns with the stored model, as before
    code, kept, err = ingest(*ingest_args(src, store, "--keep-model"))
    assert code == 0 and kept is not None and not kept["fitted"] and kept["model_id"] == first["model_id"], err
    assert kept["ingested"] == 25
    extra.unlink()
    # as many images, one with other content
    Image.fromarray(_pattern(1, 78)).save(src / "class1" / "000.png")
    code, _, err = ingest(*ingest_args(src, store, "--quiet"))
    refused(code, err, "the labelled images differ (24 as before, other names or contents)")
    after = info_of(store)
    assert after["model_id"] == first["model_id"] and after["fit_inputs"] == fit and after["state"] == "complete"


def test_test_split_and_unlabelled_images_are_not_what_the_fit_is_on(tmp_path: Path) -> None:
    store = tmp_path / "store"
    root = tmp_path / "tt"
    make_folder(root / "train", per_class=6)
    make_folder(root / "test", per_class=2)
    code, first, err = ingest(*ingest_args(root, store))
    assert code == 0 and first is not None and info_of(store)["fit_inputs"]["items"] == 18, err
    Image.fromarray(_pattern(2, 60)).save(root / "test" / "class2" / "new.png")
    code, again, err = ingest(*ingest_args(root, store))
    assert code == 0 and again is not None, err
    assert not again["fitted"] and again["model_id"] == first["model_id"] and again["splits"]["test"] == 7


def test_a_features_file_is_fingerprinted_by_its_rows_labels_and_splits(tmp_path: Path) -> None:
    store = tmp_path / "store"
    x, y = gaussian_classes(np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]]), per_class=20, dims=5)
    paths = [f"p{i}.jpg" for i in range(len(y))]
    feats = tmp_path / "f.npz"
    FeatureSet(x, y, classes=["a", "b", "c"], paths=paths).save(feats)
    at = ["--data-dir", store, "--json"]
    code, first, err = ingest("ingest", feats, "-c", "f", *at)
    assert code == 0 and first is not None and first["fitted"], err
    assert info_of(store, "f")["fit_inputs"]["source"] == "features"
    code, again, err = ingest("ingest", feats, "-c", "f", *at)
    assert code == 0 and again is not None and not again["fitted"] and again["model_id"] == first["model_id"], err

    relabelled = y.copy()
    relabelled[0] = 1
    FeatureSet(x, relabelled, classes=["a", "b", "c"], paths=paths).save(feats)
    code, _, err = ingest("ingest", feats, "-c", "f", "--quiet", *at)
    refused(code, err, "the classes, labels or splits of the labelled features differ")
    moved = x.copy()
    moved[3, 2] += 0.5
    FeatureSet(moved, y, classes=["a", "b", "c"], paths=paths).save(feats)
    code, _, err = ingest("ingest", feats, "-c", "f", "--quiet", "--paper", "--pca", "all", *at)
    assert code == 2 and "--paper fixes --pca" in err  # refused before anything is read
    code, _, err = ingest("ingest", feats, "-c", "f", "--quiet", "--paper", *at)
    refused(code, err, "the labelled features differ (60 as before, other names or contents)",
            "its leaves: tied query leaf, labels as stored leaves; this ingest's: mahalanobis query leaf")  # fmt: skip


def test_a_collection_without_a_fingerprint_refits_and_compares_model_ids(tmp_path: Path) -> None:
    store = tmp_path / "store"
    src = make_folder(tmp_path / "imgs")
    code, first, err = ingest(*ingest_args(src, store))
    assert code == 0 and first is not None, err
    engine = EdgeEngine(store)  # as an older version wrote it
    info = engine.read_info("pics")
    assert info is not None
    del info["fit_inputs"]
    engine.update_info("pics", info)
    engine.close()
    code, again, err = ingest(*ingest_args(src, store))
    assert code == 0 and again is not None, err
    assert again["fitted"] and again["model_id"] == first["model_id"]  # two fits in one process: equal
    assert "fit_inputs" not in info_of(store)
    code, _, err = ingest(*ingest_args(src, store, "--threshold", "0.5", "--quiet"))
    assert code == 2, err
    (line,) = err.strip().splitlines()
    assert f"holds model {first['model_id']}; this ingest fits model" in line and "--keep-model" in line
