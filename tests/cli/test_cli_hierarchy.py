"""`hierqdrant hierarchy build|show|export` end to end with Typer's CliRunner."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from hierqdrant.core.hierarchy import Hierarchy
from hierqdrant_cli import app

runner = CliRunner()


def _features(tmp_path, five_classes, **extra) -> str:
    x, y = five_classes
    path = tmp_path / "train.npz"
    np.savez(path, features=x, labels=y, classes=np.array(["cat", "lynx", "bus", "truck", "fish"]), **extra)
    return str(path)


def test_build_json_show_and_export(tmp_path, five_classes) -> None:
    feats = _features(tmp_path, five_classes)
    out = tmp_path / "model"
    result = runner.invoke(app, ["hierarchy", "build", "--features", feats, "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    for key in ("leaves", "nodes", "height", "pca_dims", "model_id"):
        assert key in summary
    assert summary["leaves"] == 5 and summary["height"] == 2

    shown = runner.invoke(app, ["hierarchy", "show", str(out)])
    assert shown.exit_code == 0
    assert "lynx" in shown.stdout and "truck" in shown.stdout

    for fmt in ("newick", "json", "parent-child"):
        exported = runner.invoke(app, ["hierarchy", "export", str(out), "--format", fmt])
        assert exported.exit_code == 0, exported.output
    newick = runner.invoke(app, ["hierarchy", "export", str(out), "--format", "newick"]).stdout
    tree = Hierarchy.from_newick(newick, class_names=["cat", "lynx", "bus", "truck", "fish"])
    assert tree.lca_height_matrix()[0, 1] == 1


def test_build_with_given_taxonomy(tmp_path, five_classes) -> None:
    feats = _features(tmp_path, five_classes)
    tax = tmp_path / "tax.txt"
    tax.write_text("6 1\n6 2\n7 3\n7 4\n8 6\n8 7\n8 5\n")  # 1-based leaves
    result = runner.invoke(
        app,
        [
            "hierarchy",
            "build",
            "-f",
            feats,
            "-o",
            str(tmp_path / "m"),
            "--builder",
            "given",
            "--taxonomy",
            str(tax),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["height"] == 2


def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, five_classes) -> None:
    x, y = five_classes
    bad = tmp_path / "nan.npz"
    x = x.copy()
    x[3, 1] = np.nan
    np.savez(bad, features=x, labels=y)
    out = tmp_path / "never"
    for args in (
        ["-f", str(bad)],
        ["-f", _features(tmp_path, five_classes), "--threshold", "1.5"],
        ["-f", str(tmp_path / "missing.npz")],
    ):
        result = runner.invoke(app, ["hierarchy", "build", *args, "-o", str(out)])
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output
        assert "error:" in result.output
        assert not out.exists()


def test_version_and_help() -> None:
    assert runner.invoke(app, ["--version"]).stdout.startswith("hierqdrant ")
    assert "hierarchy" in runner.invoke(app, ["--help"]).stdout


def _build_killed(args: list[str], boundary: str) -> None:
    import os
    import subprocess
    import sys

    from hierqdrant.core.faults import FAULT_ENV, FAULT_EXIT

    env = {**os.environ, FAULT_ENV: boundary}
    done = subprocess.run([sys.executable, "-m", "hierqdrant", *args], env=env, capture_output=True, timeout=300)
    assert done.returncode == FAULT_EXIT, done.stderr.decode()


@pytest.mark.slow
def test_a_build_killed_between_its_files_is_finished_by_the_same_command(tmp_path, five_classes) -> None:
    """Issue 12 (resume from every point): each model file is replaced atomically, the manifest last. A kill
    between the two leaves no half-written file; what is there is refused with a one-line hint, and the same
    command run again finishes — over a first build (new arrays beside the old manifest) or in a new folder."""
    feats = _features(tmp_path, five_classes)
    out = tmp_path / "model"
    build = ["hierarchy", "build", "--features", feats, "--out", str(out), "--json"]
    first = runner.invoke(app, [*build, "--pca", "2"])  # other arrays than the rebuild's (3 dims)
    assert first.exit_code == 0, first.output
    for folder, args in ((out, build), (tmp_path / "fresh", [*build[:-2], str(tmp_path / "fresh"), "--json"])):
        _build_killed(args, "after-model-arrays:1")
        assert not list(folder.glob(".*.tmp-*"))  # the temporary file of each write became the file
        shown = runner.invoke(app, ["hierarchy", "show", str(folder)])
        assert shown.exit_code == 2
        line = shown.stderr.strip()
        assert "\n" not in line and ("does not match its manifest" in line or "is missing model.json" in line), line
        assert "hierqdrant hierarchy build" in line
        again = runner.invoke(app, args)
        assert again.exit_code == 0, again.output
        summary = json.loads(again.stdout)
        assert runner.invoke(app, ["hierarchy", "show", str(folder), "--json"]).exit_code == 0
        assert summary["model_id"] != json.loads(first.stdout)["model_id"] and summary["pca_dims"] == 3


def test_build_reports_its_phases_on_stderr_and_warns(tmp_path, five_classes) -> None:
    """Issue 11: a line per phase on stderr, also under --json (stdout: one JSON document); the model's
    warnings (here: 1 PCA dim for 5 classes) in the JSON, in yellow on stderr, and under the human summary."""
    from tests.schema_check import check

    feats = _features(tmp_path, five_classes)
    args = ["hierarchy", "build", "-f", feats, "-o", str(tmp_path / "m"), "--pca", "1"]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    (line,) = result.stdout.strip().splitlines()
    summary = json.loads(line)
    check(summary, "cli/hierarchy-build")
    (narrow,) = [w for w in summary["warnings"] if w.startswith("PCA keeps 1 dimensions for 5 classes")]
    err = result.stderr.strip().splitlines()
    assert err[0] == f"read 750 × 6 features of 5 classes from {feats}"
    assert err[1].startswith("fitting PCA (1 dim), 5 class Gaussians and the overlap tree on 750 items of 6 dims")
    assert err[2].startswith("fitted in ") and err[2].endswith(f"1 PCA dims ({summary['explained_variance']:.1%} "
                                                                f"of the variance), tree height {summary['height']}")
    assert f"warning: {narrow}" in err
    quiet = runner.invoke(app, [*args, "--json", "--quiet"])
    assert quiet.exit_code == 0 and quiet.stderr == "" and json.loads(quiet.stdout)["warnings"] == summary["warnings"]
    human = runner.invoke(app, args)
    assert human.exit_code == 0 and "warning: PCA keeps 1 dimensions" in human.stdout
    fine = runner.invoke(app, ["hierarchy", "build", "-f", feats, "-o", str(tmp_path / "m2"), "--pca", "all", "--json"])
    assert json.loads(fine.stdout)["warnings"] == [] and "warning" not in fine.stderr
