"""`hierqdrant hierarchy build|show|export` end to end with Typer's CliRunner."""

from __future__ import annotations

import json

import numpy as np
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
