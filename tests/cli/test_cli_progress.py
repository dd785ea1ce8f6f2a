"""Issue 11, points 4–6: progress on stderr (also under --json, whose stdout stays one JSON document) and the
warnings of ``ingest``, ``embed`` and ``info`` — a randomly initialised extractor, a narrow PCA."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from typer.testing import CliRunner

from hierqdrant.core.features import FeatureSet
from hierqdrant_cli import app
from tests.cli.test_cli_ingest import make_folder
from tests.conftest import gaussian_classes
from tests.schema_check import check

runner = CliRunner()
EMBED = ["--device", "cpu", "--workers", "0"]
RANDOM = "with random weights (--weights random)"


def run_json(*args: Any, ok: tuple[int, ...] = (0,)) -> tuple[dict[str, Any], list[str]]:
    """Run the CLI with --json: (the one JSON document on stdout, the lines on stderr)."""
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code in ok, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, f"--json printed {len(lines)} lines on stdout:\n{result.stdout}"
    return json.loads(lines[0]), result.stderr.strip().splitlines()


def starts(lines: list[str], *prefixes: str) -> list[str]:
    """The first line starting with each prefix, in the order the prefixes are given (the phase order)."""
    found, at = [], 0
    for prefix in prefixes:
        hits = [i for i in range(at, len(lines)) if lines[i].startswith(prefix)]
        assert hits, f"no line starting {prefix!r} after line {at}:\n" + "\n".join(lines)
        at = hits[0]
        found.append(lines[at])
    return found


def test_ingest_json_reports_its_phases_on_stderr_and_flags_a_random_network(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "imgs", classes=3, per_class=8, size=16)
    store = tmp_path / "store"
    args = ["ingest", src, "-c", "rnd", "--model", "cifar_resnet20", "--weights", "random", "--image-size", "16",
            *EMBED, "--data-dir", store, "--json"]  # fmt: skip
    summary, err = run_json(*args)
    check(summary, "cli/ingest")
    scanned, *_ = starts(
        err, "scanned ", "embedding 24 images with cifar_resnet20", "embedding: 24/24", "fitting PCA (0.95 of the",
        "fitted in ", "upserting 24 points", "upserting: 24/24",
        f"warning: the features come from cifar_resnet20 {RANDOM}",
    )  # fmt: skip
    assert "24 images of 3 classes" in scanned
    assert len(err) <= 12, err  # a few plain lines off a terminal, no bar redrawn
    assert summary["random_init"] is True and RANDOM in summary["warnings"][0]

    info, _ = run_json("info", "--data-dir", store, "--json")
    check(info, "cli/info")
    assert [c["random_init"] for c in info["collections"]] == [True]
    table = runner.invoke(app, ["info", "--data-dir", str(store)])
    assert "cifar_resnet20 (random)" in table.stdout
    assert "random init" in table.stderr and RANDOM in " ".join(table.stderr.split())

    again, err = run_json(*args, "--quiet")  # quiet: nothing on stderr, the warnings still in the JSON
    assert err == [] and again["embedded"] == 0 and again["warnings"] == summary["warnings"]
    human = runner.invoke(app, [str(a) for a in args if a != "--json"])
    assert human.exit_code == 0, human.output
    assert f"warning: the features come from cifar_resnet20 {RANDOM}" in " ".join(human.stdout.split())


def test_ingest_tune_reports_each_grid_and_a_trained_extractor_is_not_flagged(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "imgs", classes=4, per_class=10, size=16)
    summary, err = run_json("ingest", src, "-c", "pics", "--model", "pixels", "--image-size", "8", *EMBED,
                            "--data-dir", tmp_path / "store", "--tune", "--json")  # fmt: skip
    check(summary, "cli/ingest")
    starts(err, "scanned ", "embedding: 40/40", "tuning overlap: fitting PCA 0.95", "tuning overlap (tied): PCA 0.95: ",
           "tuning overlap: fitting PCA all", "tuning overlap (mahalanobis): PCA all: ",
           "tuned on a validation split: ", "upserting: 40/40")  # fmt: skip
    assert summary["random_init"] is False and not any(RANDOM in w for w in summary["warnings"])


def test_ingest_warns_about_a_narrow_pca(tmp_path: Path) -> None:
    centres = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0], [6.0, 6.0]])
    x, y = gaussian_classes(centres, per_class=20, dims=5, seed=0)
    FeatureSet(x, y, classes=["a", "b", "c", "d"]).save(tmp_path / "f.npz")
    summary, err = run_json("ingest", tmp_path / "f.npz", "-c", "f", "--pca", "1", "--data-dir", tmp_path / "s",
                            "--json")  # fmt: skip
    check(summary, "cli/ingest")
    assert err[0] == "read 80 × 5 features from f.npz"
    (narrow,) = [w for w in summary["warnings"] if w.startswith("PCA keeps 1 dimensions for 4 classes")]
    assert f"warning: {narrow}" in err and summary["random_init"] is False
    full, _ = run_json("ingest", tmp_path / "f.npz", "-c", "g", "--pca", "all", "--data-dir", tmp_path / "s", "--json")
    assert not any(w.startswith("PCA keeps") for w in full["warnings"])


def test_embed_flags_a_random_network(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "imgs", classes=2, per_class=3, size=16)
    out, err = run_json("embed", src, "-o", tmp_path / "r.npz", "--model", "cifar_resnet20", "--weights", "random",
                        "--image-size", "16", *EMBED, "--json")  # fmt: skip
    check(out, "cli/embed")
    assert out["extractor"]["random_init"] is True and RANDOM in out["warnings"][0]
    starts(err, "embedding 6 images", "embedding: 6/6", "warning: the features come from cifar_resnet20")
    plain, err = run_json("embed", src, "-o", tmp_path / "p.npz", "--model", "pixels", "--image-size", "8", *EMBED,
                          "--json")  # fmt: skip
    assert plain["warnings"] == [] and not any(line.startswith("warning") for line in err)
