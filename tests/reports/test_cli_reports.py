"""``hierqdrant query --html/--grid``, ``eval --html`` and the demo's report, end to end on tiny data."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from hierqdrant.core.features import FeatureSet
from hierqdrant_cli import app
from tests.cli.test_cli_ingest import make_folder
from tests.conftest import gaussian_classes
from tests.schema_check import check

runner = CliRunner()
EMBED = ["--device", "cpu", "--workers", "0"]


def invoke(*args: Any, ok: int = 0) -> tuple[str, str]:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == ok, result.output
    return result.stdout, result.stderr


def images_in(html: Path) -> list[str]:
    """The ``src`` of every ``<img>`` of a report."""
    return re.findall(r'<img src="([^"]*)"', html.read_text(encoding="utf-8"))


@dataclass
class Store:
    root: Path
    store: Path
    images: Path  # train/ and test/ class folders, ingested as "pics"
    npz: Path  # features without paths, ingested as "feats"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    root = tmp_path_factory.mktemp("clireports")
    images = root / "tt"
    make_folder(images / "train", per_class=6, size=16)
    make_folder(images / "test", per_class=2, size=16)
    x, y = gaussian_classes(np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]]), per_class=20, dims=4, seed=1)
    FeatureSet(x, y, classes=["p", "q", "r"]).save(root / "f.npz")  # no paths
    s = root / "store"
    invoke("ingest", images, "-c", "pics", "--model", "pixels", "--image-size", "8", "-t", "0.2", *EMBED,
           "--data-dir", s, "--json")  # fmt: skip
    invoke("ingest", root / "f.npz", "-c", "feats", "--data-dir", s, "--json")
    return Store(root, s, images, root / "f.npz")


def test_query_writes_html_and_grid_with_thumbnails(store: Store, tmp_path: Path) -> None:
    html, grid = tmp_path / "r.html", tmp_path / "g.png"
    queries = store.images / "test" / "class1"
    out, err = invoke("query", queries, "-c", "pics", "-k", "3", "--data-dir", store.store, "--html", html,
                      "--grid", grid, "--json")  # fmt: skip
    doc = json.loads(out)
    check(doc, "cli/query")
    assert doc["reports"] == {"html": str(html), "grid": str(grid)}
    assert f"report: {html}" in err and "thumbnails need" not in err
    srcs = images_in(html)
    assert len(srcs) == 2 * (1 + 2 * 3)  # 2 queries: itself + cosine and hierarchical rows of 3
    assert all(s.startswith("data:image/") for s in srcs)
    text = html.read_text(encoding="utf-8")
    assert "class1" in text and "http://" not in text and "https://" not in text
    assert text.count('class="match"') >= 1 + 2  # the legend's, then the query's class mates
    with Image.open(grid) as im:
        assert im.format == "PNG" and im.width > 3 * 96 and im.height > 4 * 96


def test_query_without_image_paths_says_so_and_writes_the_report(store: Store, tmp_path: Path) -> None:
    html = tmp_path / "r.html"
    out, err = invoke("query", store.npz, "-c", "feats", "-k", "2", "--data-dir", store.store, "--html", html)
    assert "thumbnails need image paths" in " ".join(err.split())
    assert html.is_file() and images_in(html) == []
    assert "thumbnails need image paths" in html.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("option", "name", "says"),
    [("--html", "missing/r.html", "does not exist"), ("--grid", "g.jpg", "must end in .png"),
     ("--html", "r.txt", "must end in .html")],
)  # fmt: skip
def test_bad_report_paths_are_one_line_exit_2(store: Store, tmp_path: Path, option: str, name: str, says: str) -> None:
    result = runner.invoke(app, ["query", str(store.npz), "-c", "feats", "--data-dir", str(store.store),
                                 option, str(tmp_path / name)])  # fmt: skip
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and "Traceback" not in result.output


def test_eval_html_of_a_collection_maps_points_to_their_images(store: Store, tmp_path: Path) -> None:
    html = tmp_path / "e.html"
    out, err = invoke("eval", "--db", "pics", "--methods", "cosine,overlap", "--k", "1,5,10", "--data-dir",
                      store.store, "--html", html, "--json", "--quiet", "--image-root", store.images)  # fmt: skip
    doc = json.loads(out)
    check(doc, "cli/eval")
    assert doc["html"] == str(html)
    text = html.read_text(encoding="utf-8")
    assert text.count("<svg") == 2 and "<table>" in text
    assert "differ most" in text  # example queries, whose point ids were mapped to the images' paths
    srcs = images_in(html)
    assert srcs and all(s.startswith("data:image/") for s in srcs)
    assert "thumbnails need" not in err


@pytest.mark.slow
def test_demo_writes_its_report(tmp_path: Path) -> None:
    html = tmp_path / "demo.html"
    out, _ = invoke("demo", "--workdir", tmp_path / "digits", "--data-dir", tmp_path / "s", "--html", html, "--json")
    doc = json.loads(out)
    check(doc, "cli/demo")
    assert doc["report"] == str(html)
    srcs = images_in(html)
    assert len(srcs) >= 4 * (1 + 2 * 8) and all(s.startswith("data:image/png") for s in srcs)
    assert 'class="miss"' in html.read_text(encoding="utf-8")  # the examples are where cosine goes wrong
