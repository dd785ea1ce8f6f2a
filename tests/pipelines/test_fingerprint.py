"""The fingerprint of a fit's inputs (:mod:`hierqdrant.pipelines.fingerprint`, DESIGN.md §2.6): what it
hashes, what it leaves out, and how a difference is worded."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest

from hierqdrant.core.errors import InputError
from hierqdrant.pipelines.fingerprint import differences, fit_inputs, recorded
from hierqdrant.pipelines.ingest import IngestOptions

KEYS = ["a/1.png", "a/2.png", "b/1.png", "b/2.png", "b/3.png"]
LABELS: list[int | None] = [0, 0, 1, 1, None]
SPLITS: list[str | None] = [None, None, None, "test", None]
EXTRACTOR = {"name": "pixels", "image_size": 8, "weights_path": "/somewhere/w.pt"}


def files(tmp_path: Path) -> list[Path]:
    out = []
    for i, key in enumerate(KEYS):
        path = tmp_path / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes([i]) * 100)
        out.append(path)
    return out


def of(paths: list[Path], opts: IngestOptions, **changes: object) -> dict:
    args: dict = dict(keys=KEYS, labels=LABELS, splits=SPLITS, class_names=["a", "b"], extractor=EXTRACTOR)
    args.update(changes)
    rows = [i for i, y in enumerate(args["labels"]) if y is not None and args["splits"][i] != "test"]
    return fit_inputs(
        args["keys"], args["labels"], args["splits"], args["class_names"], rows, args["extractor"], opts, paths=paths
    )


def test_it_hashes_the_fitted_files_content_and_labels_not_where_they_live(tmp_path: Path) -> None:
    paths = files(tmp_path)
    base = of(paths, IngestOptions())
    assert base["items"] == 3 and base["source"] == "images"  # labelled, not test
    assert of(paths, IngestOptions()) == base
    # elsewhere on disk (another machine): the same; the weights file elsewhere too
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    copies = [Path(shutil.copy(p, moved / f"{i}.png")) for i, p in enumerate(paths)]
    assert of(copies, IngestOptions(), extractor={**EXTRACTOR, "weights_path": "/else/w.pt"}) == base
    # the unlabelled and test items are not what the fit is on
    paths[3].write_bytes(b"other")
    paths[4].write_bytes(b"other")
    assert of(paths, IngestOptions()) == base
    paths[1].write_bytes(b"other")
    assert differences(base, of(paths, IngestOptions())) == [
        "the labelled images differ (3 as before, other names or contents)"
    ]
    relabelled = of(copies, IngestOptions(), labels=[0, 1, 1, 1, None])
    assert differences(base, relabelled) == ["the classes, labels or splits of the labelled images differ"]
    other = of(copies, IngestOptions(), extractor={**EXTRACTOR, "image_size": 16})
    assert differences(base, other) == ["the feature extractor differs"]


def test_settings_are_worded_by_their_flag(tmp_path: Path) -> None:
    paths = files(tmp_path)
    base = of(paths, IngestOptions())
    taxonomy = tmp_path / "tree.txt"
    taxonomy.write_text("2 0\n2 1\n")
    now = of(paths, IngestOptions(pca=None, covariance="oas", taxonomy=str(taxonomy), builder="given"))
    assert differences(base, now) == [
        "--builder is given now, overlap when it was fitted",
        "--taxonomy is given now, not given when it was fitted",
        "--pca is all now, 0.95 when it was fitted",
        "the covariance estimator is oas now, ledoit-wolf when it was fitted",
    ]
    then = of(paths, IngestOptions(taxonomy=str(taxonomy), builder="given"))
    taxonomy.write_text("2 1\n2 0\n")
    assert differences(then, of(paths, IngestOptions(taxonomy=str(taxonomy), builder="given"))) == [
        "the --taxonomy file differs"
    ]
    tuned = of(paths, dataclasses.replace(IngestOptions(tune=True), pinned=frozenset({"pca"})))
    assert differences(base, tuned) == ["--tune is on now, off when it was fitted"]  # said once
    assert differences(tuned, of(paths, IngestOptions(tune=True, tune_metric="p@1"))) == [
        "--tune-metric is p@1 now, map@r when it was fitted",
        "--tune keeps nothing fixed now, pca when it was fitted",
    ]
    # the leaf sources are the caller's to word
    assert differences(base, of(paths, IngestOptions(query_classifier="mahalanobis"))) == []


def test_a_features_file_is_hashed_by_its_rows(tmp_path: Path) -> None:
    x = np.arange(15, dtype=np.float32).reshape(5, 3)
    rows = [0, 1, 2]
    base = fit_inputs(KEYS, LABELS, SPLITS, ["a", "b"], rows, EXTRACTOR, IngestOptions(), features=x)
    assert base["source"] == "features"
    moved = x.copy()
    moved[4] += 1  # an unlabelled row
    assert fit_inputs(KEYS, LABELS, SPLITS, ["a", "b"], rows, EXTRACTOR, IngestOptions(), features=moved) == base
    moved[0, 0] = np.nextafter(moved[0, 0], np.float32(1))
    now = fit_inputs(KEYS, LABELS, SPLITS, ["a", "b"], rows, EXTRACTOR, IngestOptions(), features=moved)
    assert differences(base, now) == ["the labelled features differ (3 as before, other names or contents)"]


def test_only_a_fingerprint_of_this_version_and_kind_of_source_is_compared(tmp_path: Path) -> None:
    now = of(files(tmp_path), IngestOptions())
    assert recorded({"fit_inputs": now}, now) == now
    assert recorded(None, now) is None and recorded({"model_id": "x"}, now) is None
    assert recorded({"fit_inputs": {**now, "version": 2}}, now) is None
    assert recorded({"fit_inputs": {**now, "source": "features"}}, now) is None


def test_a_file_it_cannot_read_is_one_line(tmp_path: Path) -> None:
    paths = files(tmp_path)
    paths[0].unlink()
    with pytest.raises(InputError, match="cannot read .*1.png to fingerprint"):
        of(paths, IngestOptions())
