"""Issue 12, points 6–8: the messages and edges of the CLI, each a one-line error with exit 2 where it is a
user error (a file that is not what it should be, a corrupt query image, a bad URL, a bad option), checked
before anything slow is loaded; and our own one-line warning for an API key over plain http."""

from __future__ import annotations

import json
import socket
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

runner = CliRunner()
EMBED = ["--device", "cpu", "--workers", "0"]


def run(*args: Any) -> Any:
    return runner.invoke(app, [str(a) for a in args])


def one_error_line(result: Any) -> str:
    """The run failed with exit 2 and exactly one line on stderr, an ``error:`` line; that line."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output and "allow_pickle" not in result.output
    return str(lines[0][len("error: ") :])


@dataclass
class Store:
    root: Path
    store: Path
    images: Path  # the image folder of collection "pics" (the pixels extractor)
    npz: Path  # the features of collection "feats"
    jpeg: Path  # a real JPEG image
    corrupt: Path  # a file named .jpg that is text


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Store:
    root = tmp_path_factory.mktemp("messages")
    images = make_folder(root / "imgs", classes=3, per_class=5, size=16)
    x, y = gaussian_classes(np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]]), per_class=20, dims=5, seed=0)
    npz = root / "f.npz"
    FeatureSet(x, y, classes=["a", "b", "c"]).save(npz)
    store = root / "store"
    ok = run("ingest", images, "-c", "pics", "--model", "pixels", "--image-size", "8", *EMBED, "--data-dir", store)
    assert ok.exit_code == 0, ok.output
    ok = run("ingest", npz, "-c", "feats", "--data-dir", store)
    assert ok.exit_code == 0, ok.output
    jpeg = root / "some.jpg"
    Image.new("RGB", (16, 16), (10, 200, 30)).save(jpeg, format="JPEG")
    corrupt = root / "bad.jpg"
    corrupt.write_text("this is not an image\n")
    return Store(root, store, images, npz, jpeg, corrupt)


# -- 6: misleading messages --------------------------------------------------------------------------------


def test_an_image_given_as_the_source_says_what_it_is(world: Store) -> None:
    line = one_error_line(run("ingest", world.jpeg, "-c", "x", "--data-dir", world.root / "s2"))
    assert line == (
        f"{world.jpeg} is not a features .npz file (it is a JPEG image) — pass an image folder or a features file"
        " made by `hierqdrant embed`"
    )
    text = world.root / "table.npz"
    text.write_text("a,b\n1,2\n")
    line = one_error_line(run("ingest", text, "-c", "x", "--data-dir", world.root / "s2"))
    assert line.startswith(f"{text} is not a features .npz file (it is a text file) — pass an image folder")
    assert not (world.root / "s2" / "collections").exists() or not any((world.root / "s2").rglob("x"))
    line = one_error_line(run("hierarchy", "build", "-f", world.jpeg, "-o", world.root / "m"))
    assert line == (
        f"{world.jpeg} is not a features .npz file (it is a JPEG image) — pass a features file made by "
        "`hierqdrant embed` (with labels)"
    )
    line = one_error_line(run("query", text, "-c", "feats", "--data-dir", world.store))
    assert line.endswith("(it is a text file) — pass image files, folders of images or a features file made by "
                         "`hierqdrant embed`")  # fmt: skip


def test_a_corrupt_query_image_gives_its_path_and_reason(world: Store) -> None:
    at = ["-c", "pics", "--data-dir", world.store]
    line = one_error_line(run("query", world.corrupt, *at))
    assert line.startswith(f"cannot query with {world.corrupt}: ") and "see the skipped" not in line
    reason = line.split(": ", 1)[1].split(" — ")[0]
    assert reason  # the decoder's reason, in the line itself
    # --json: the same error line, and the JSON names the file and the reason
    result = run("query", world.corrupt, *at, "--json")
    assert one_error_line(result) == line
    doc = json.loads(result.stdout)
    assert doc["queries"] == [] and doc["skipped"] == [{"path": str(world.corrupt), "reason": reason}]
    from tests.schema_check import check

    check(doc, "cli/query")
    # several bad files: one line each with its reason, then the error
    other = world.root / "bad2.png"
    other.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    result = run("query", world.corrupt, other, *at)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert [ln.split(":")[0] for ln in lines[:2]] == [f"skipped {world.corrupt}", f"skipped {other}"]
    assert lines[2].startswith("error: none of the 2 queries could be used (reasons above)")
    # one good image and one bad: results, the bad one reported with its reason, exit 1
    good = next(world.images.rglob("*.png"))
    result = run("query", good, world.corrupt, *at, "-k", "2", "--json")
    assert result.exit_code == 1, result.output
    doc = json.loads(result.stdout)
    assert len(doc["queries"]) == 1 and doc["skipped"][0]["path"] == str(world.corrupt)
    check(doc, "cli/query")


def test_a_query_at_the_models_mean_is_skipped_with_the_reason(world: Store) -> None:
    """Issue 12 (7): a query projecting to the zero vector is reported, not answered with cosine 0."""
    from hierqdrant.store.collection import read_collection_model
    from hierqdrant.store.engines import EdgeEngine

    engine = EdgeEngine(world.store)
    model, _ = read_collection_model(engine, "feats")
    engine.close()
    data = FeatureSet.load(world.npz)
    queries = world.root / "q.npz"
    FeatureSet(np.vstack([data.features[0], model.projection.mean]), paths=["good", "mean"]).save(queries)
    result = run("query", queries, "-c", "feats", "--data-dir", world.store, "-k", "2", "--json")
    assert result.exit_code == 1, result.output
    doc = json.loads(result.stdout)
    assert [q["query"] for q in doc["queries"]] == ["good"]
    assert doc["skipped"] == [
        {"path": "mean", "reason": "its features project to the zero vector (the model's mean feature): no cosine "
                                   "is defined"}
    ]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("url", "shown"),
    [("http://127.0.0.1:99999", "http://127.0.0.1:99999"), ("http://127.0.0.1:0", "http://127.0.0.1:0"),
     ("http://user:secret@127.0.0.1:7x", "http://127.0.0.1:7x"), ("https://[::1]:70000/", "https://[::1]:70000")],
)  # fmt: skip
def test_a_url_with_a_bad_port_says_so_and_keeps_the_port(url: str, shown: str) -> None:
    line = one_error_line(run("info", "--url", url))
    assert line == f"invalid port in Qdrant URL '{shown}': a port is a number from 1 to 65535 — e.g. http://localhost:6333"
    assert "secret" not in line


# -- 8: loose edges ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["-k", "0"], "-k 0 must be at least 1 — e.g. -k 10"),
        (["--top", "-3"], "-k -3 must be at least 1 — e.g. -k 10"),
        (["--hnsw-ef", "0"], "--hnsw-ef 0 must be at least 1 — e.g. --hnsw-ef 10"),
        (["--alpha", "-1"], "alpha=-1.0 must be a finite number ≥ 0 — pass --alpha, e.g. 3"),
        (["--filter", "nokey"], "--filter 'nokey' is not key=value — e.g. --filter split=test"),
    ],
)
def test_query_options_are_checked_before_anything_loads(world: Store, args: list[str], line: str) -> None:
    """Issue 12 (8): `-k 0` was refused only after the model loaded and the query was embedded. Now the
    options are checked first: no store is opened (this store does not even exist)."""
    result = run("query", world.jpeg, *args, "--data-dir", world.root / "no-store-here")
    assert one_error_line(result) == line
    assert not (world.root / "no-store-here").exists()


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--epochs", "0"], "--epochs 0 must be at least 1 — e.g. --epochs 10"),
        (["--batch-size", "0"], "--batch-size 0 must be at least 1 — e.g. --batch-size 10"),
        (["--workers", "-1"], "--workers -1 must be at least 0 — e.g. --workers 10"),
        (["--val-share", "1.5"], "--val-share 1.5 must be between 0 and 1 — e.g. --val-share 0.2"),
    ],
)
def test_train_options_are_checked_before_anything_loads(world: Store, args: list[str], line: str) -> None:
    result = run("train", world.root / "no-such-folder", "-o", world.root / "x.pt", *args)
    assert one_error_line(result) == line


def test_an_api_key_over_http_gives_one_warning_line_without_the_key(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = run("info", "--url", url, "--api-key", "s3cr3t-key")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"warning: the API key is sent unencrypted over http to {url} — use https:// for a remote server",
        f"error: cannot reach Qdrant at {url} — start the server or check --url / QDRANT_URL",
    ]
    assert "s3cr3t" not in result.output and "UserWarning" not in result.output
    again = run("info", "--url", url, "--api-key", "s3cr3t-key")  # once per URL and process
    assert again.stderr.strip().splitlines() == lines[1:]
    plain = run("info", "--url", f"http://127.0.0.1:{free_port()}")  # no key: no warning
    assert "warning" not in plain.stderr
