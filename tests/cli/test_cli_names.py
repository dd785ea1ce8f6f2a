"""Nothing lost, second pass, items 10 and 11: names that come from data.

- 10: a file or class folder whose name is not valid UTF-8, or a features file with a path that is not (a lone
  surrogate), used to raise ``UnicodeEncodeError`` once the collection was made, leaving it ``incomplete`` with
  0 points, and every rerun crashed the same way. Such names are skipped and reported before anything is
  written; the ingest and its rerun finish.
- 11: rich markup in names (a class ``[/x]closing``, a folder ``x[/y]``, a class ``[red]cat``) crashed
  ingest's end, ``hierarchy show`` and ``query`` with ``MarkupError`` or printed wrongly. Every name from data
  is escaped (``hierqdrant_cli.common.shown``) by every command that prints names.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hierqdrant.core.features import FeatureSet
from hierqdrant_cli import app
from tests.cli.test_cli_ingest import make_folder
from tests.conftest import gaussian_classes

runner = CliRunner()
PIXELS = ["--model", "pixels", "--image-size", "8", "--device", "cpu", "--workers", "0", "--threshold", "0.2"]
NOT_UTF8 = "name is not valid UTF-8"


def run(*args: object) -> tuple[int, str, str]:
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------------------
# 10. names that are not UTF-8


@pytest.mark.skipif(os.fsencode("\udcff") != b"\xff", reason="file names are not bytes here")
def test_a_file_or_folder_named_in_latin1_is_skipped_and_the_rerun_finishes(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "imgs", classes=3, per_class=6, size=16)
    os.rename(src / "class0" / "000.png", os.fsdecode(os.fsencode(src / "class0") + b"/caf\xe9.png"))
    bad_class = os.fsdecode(os.fsencode(src) + b"/\xe9t\xe9")
    os.mkdir(bad_class)
    (src / "class1" / "001.png").rename(Path(bad_class) / "x.png")
    store = tmp_path / "store"
    for attempt in range(2):  # the rerun finishes the same way (it used to crash every time)
        code, out, err = run("ingest", src, "-c", "pics", *PIXELS, "--data-dir", store, "--json")
        assert code == 1, err  # partial: two entries skipped
        summary = last_json(out)
        skipped = {s["path"]: s["reason"] for s in summary["skipped"]}
        assert skipped == {
            str(src / "class0" / "caf\\xe9.png"): f"{NOT_UTF8} (rename it to store it)",
            str(src / "\\xe9t\\xe9"): f"{NOT_UTF8} (rename it to store it)",
        }, attempt
        assert summary["ingested"] == 3 * 6 - 2 and summary["classes"] == 3
    code, out, _ = run("info", "--data-dir", store, "--json")
    row = last_json(out)["collections"][0]
    assert (row["points"], row["state"]) == (16, "complete")


def test_a_features_file_with_a_surrogate_path_skips_that_row(tmp_path: Path) -> None:
    x, y = gaussian_classes(np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]]), per_class=10, dims=4, seed=1)
    paths = [f"img/{i}.png" for i in range(len(x))]
    paths[3] = "img/caf\udce9.png"
    npz = tmp_path / "f.npz"
    np.savez(npz, features=x, labels=y, paths=np.asarray(paths))
    store = tmp_path / "store"
    for _ in range(2):
        code, out, err = run("ingest", npz, "-c", "feats", "--data-dir", store, "--json")
        assert code == 1, err
        summary = last_json(out)
        assert summary["skipped"] == [{"path": "img/caf\\xe9.png", "reason": f"{NOT_UTF8} (rename it to store it)"}]
        assert summary["ingested"] == len(x) - 1
    code, out, err = run("ingest", npz, "-c", "feats", "--data-dir", store)  # the table prints it too
    assert code == 1 and "skipped img/caf\\xe9.png: name is not valid UTF-8" in err, err
    code, out, _ = run("info", "--data-dir", store, "--json")
    row = last_json(out)["collections"][0]
    assert (row["points"], row["state"]) == (len(x) - 1, "complete")


def test_class_names_that_are_not_utf8_empty_or_twice_are_refused_in_one_line(tmp_path: Path) -> None:
    x, y = gaussian_classes(np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]]), per_class=10, dims=4, seed=1)
    cases = {
        "surrogate": (["a", "b\udce9", "c"], "class name 'b\\\\xe9' is not valid UTF-8"),
        "twice": (["a", "b", "a"], "class name 'a' is given twice (classes 0 and 2)"),
        "empty": (["a", " ", "c"], "class 1 has an empty name"),
    }
    for name, (classes, says) in cases.items():
        npz = tmp_path / f"{name}.npz"
        np.savez(npz, features=x, labels=y, classes=np.asarray(classes))
        code, out, err = run("ingest", npz, "-c", name, "--data-dir", tmp_path / "store")
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
        assert says in lines[0], lines[0]
    assert not (tmp_path / "store" / "surrogate").exists()  # nothing written


# ---------------------------------------------------------------------------------------------------------
# 11. rich markup in names


MARKUP_CLASSES = ["[/x]closing", "[red]cat", "plain[/]"]


@pytest.fixture(scope="module")
def marked(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A store at a path with markup in it, holding a features collection whose classes and paths are markup,
    and an image collection with a class folder ``[red]c1`` and a skipped file under ``x[/y]``."""
    root = tmp_path_factory.mktemp("markup")
    x, y = gaussian_classes(np.array([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]]), per_class=15, dims=4, seed=3)
    npz = root / "f.npz"
    FeatureSet(x, y, classes=MARKUP_CLASSES, paths=[f"x[/y]/[red]{i}.png" for i in range(len(x))]).save(npz)
    src = make_folder(root / "imgs", classes=3, per_class=5, size=16)
    (src / "class1").rename(src / "[red]c1")
    (src / "class2" / "x[" / "y]").mkdir(parents=True)
    (src / "class2" / "x[" / "y]" / "bad.png").write_text("not an image")
    return {"root": root, "npz": npz, "imgs": src, "store": root / "[red]store[/]"}


def _no_markup_lost(text: str, *names: str) -> None:
    for name in names:
        assert name in text, (name, text)


def test_ingest_prints_markup_names_as_they_are(marked: dict[str, Path]) -> None:
    store = marked["store"]
    code, out, err = run("ingest", marked["npz"], "-c", "feats", "--data-dir", store, "--threshold", "0.9")
    assert code == 0, err
    _no_markup_lost(out, *MARKUP_CLASSES, str(store))  # the tree and the summary's location
    code, out, err = run("ingest", marked["imgs"], "-c", "pics", *PIXELS, "--data-dir", store)
    assert code == 1, err  # bad.png skipped
    _no_markup_lost(out, "[red]c1")
    _no_markup_lost(err, "skipped " + str(marked["imgs"] / "class2" / "x[" / "y]" / "bad.png"))


def test_hierarchy_show_query_info_and_eval_print_markup_names(marked: dict[str, Path]) -> None:
    store = marked["store"]
    if not (store / "feats").exists():
        assert run("ingest", marked["npz"], "-c", "feats", "--data-dir", store, "--threshold", "0.9")[0] == 0
    code, out, err = run("hierarchy", "show", "-c", "feats", "--data-dir", store)
    assert code == 0, err
    _no_markup_lost(out, *MARKUP_CLASSES)
    code, out, err = run("query", marked["npz"], "-c", "feats", "--data-dir", store, "-k", "3", "--explain")
    assert code == 0, err
    _no_markup_lost(out, "x[/y]/[red]0.png", "[/x]closing")  # the query's title, paths, labels, leaves, LCA
    code, out, err = run("info", "--data-dir", store)
    assert code == 0, err
    _no_markup_lost(out.replace("\n", ""), "[red]store[/]")
    code, out, err = run("eval", "--db", marked["npz"], "--methods", "cosine,overlap", "--threshold", "0.9")
    assert code == 0, err
    _no_markup_lost(out, "[red]cat")  # e.g. the least Gaussian classes
