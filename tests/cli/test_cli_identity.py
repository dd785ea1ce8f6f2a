"""Nothing lost, second pass: a collection keeps its identity (items 4 and 5 of the issue).

- Point ids come from the id namespace recorded when the collection was made, not from the name it is
  reached by now: a collection renamed, or reached through a symbolic link, and ingested again keeps its
  point count (it used to double); on qdrant-client's local mode the same when its storage is renamed.
- A long-lived reader notices a collection deleted and made again by another process: the embedded engine
  reopens the new shard (it used to serve the deleted points, and ``close()`` raised), a new searcher over
  the same engine reads the new model with the new points, and the old searcher fails in one line instead
  of pairing its model with other points.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from hierqdrant.core.errors import HierqdrantError, ModelMismatchError
from hierqdrant.pipelines.ingest import IngestOptions, ingest
from hierqdrant.store.collection import iter_points, point_id
from hierqdrant.store.engines import EdgeEngine, connect
from hierqdrant.store.search import HierarchicalSearcher
from hierqdrant_cli import app

ROOT = Path(__file__).resolve().parents[2]
CLASSES = np.array(["cat", "lynx", "bus", "truck", "fish"])
runner = CliRunner()


def _invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    assert "Traceback" not in result.output, result.output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


@pytest.fixture
def features(tmp_path: Path, five_classes: tuple[np.ndarray, np.ndarray]) -> Path:
    x, y = five_classes
    path = tmp_path / "f.npz"
    np.savez(path, features=x, labels=y, classes=CLASSES)
    return path


@pytest.fixture
def fewer(tmp_path: Path, five_classes: tuple[np.ndarray, np.ndarray]) -> Path:
    """Other data for the same collection name: three of the classes, other keys."""
    x, y = five_classes
    keep = y < 3
    path = tmp_path / "fewer.npz"
    paths = np.array([f"other/{i}.png" for i in range(int(keep.sum()))])
    np.savez(path, features=x[keep] + 0.01, labels=y[keep], classes=CLASSES[:3], paths=paths)
    return path


def _ids(engine: Any, name: str) -> list[str]:
    return sorted(i for ids, _, _ in iter_points(engine, name, with_vectors=False) for i in ids)


# ---------------------------------------------------------------------------------------------------------
# 4. the point ids of a moved collection


def test_a_renamed_or_symlinked_collection_keeps_its_point_ids(tmp_path: Path, features: Path) -> None:
    store = tmp_path / "store"
    assert _invoke("ingest", str(features), "-c", "f", "-q", "--data-dir", str(store))[0] == 0
    engine = EdgeEngine(store)
    first = _ids(engine, "f")
    assert (engine.read_info("f") or {})["id_namespace"] == "f"
    engine.close()
    assert len(first) == 750 and point_id("f", "f.npz#0") in first

    os.rename(store / "f", store / "g")  # moved: a rename of its folder
    code, output = _invoke("ingest", str(features), "-c", "g", "--json", "--data-dir", str(store))
    assert code == 0, output
    assert json.loads(output.strip().splitlines()[-1])["ingested"] == 750
    (store / "h").symlink_to(store / "g", target_is_directory=True)  # reached through a symbolic link
    assert _invoke("ingest", str(features), "-c", "h", "-q", "--data-dir", str(store))[0] == 0

    for name in ("g", "h"):  # one shard: opened under one name at a time
        engine = EdgeEngine(store)
        try:
            assert engine.count(name) == 750  # not 1,500, not 2,250
            assert _ids(engine, name) == first
            info = engine.read_info(name) or {}
            assert info["state"] == "complete" and info["id_namespace"] == "f" and info["points"] == 750
        finally:
            engine.close()


def test_local_mode_ids_follow_the_recorded_namespace(tmp_path: Path, features: Path) -> None:
    """qdrant-client's local mode: its storage renamed (folders and meta.json), ingested again: the same ids."""
    local = tmp_path / "local"
    where = ["--url", f"local:{local}"]
    assert _invoke("ingest", str(features), "-c", "f", "-q", *where)[0] == 0
    for suffix in ("", "--hq-model"):
        os.rename(local / "collection" / f"f{suffix}", local / "collection" / f"g{suffix}")
    meta = json.loads((local / "meta.json").read_text())
    meta["collections"] = {k.replace("f", "g", 1): v for k, v in meta["collections"].items()}
    (local / "meta.json").write_text(json.dumps(meta))

    code, output = _invoke("ingest", str(features), "-c", "g", "-q", *where)
    assert code == 0, output
    engine = connect(f"local:{local}")
    try:
        assert engine.collections() == ["g"] and engine.count("g") == 750
        assert point_id("f", "f.npz#0") in _ids(engine, "g")
    finally:
        engine.close()


# ---------------------------------------------------------------------------------------------------------
# 5. a long-lived reader and a recreate


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``hierqdrant …`` in another process."""
    return subprocess.run(
        [sys.executable, "-m", "hierqdrant", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_a_long_lived_reader_notices_a_recreate_by_another_process(
    tmp_path: Path, features: Path, fewer: Path, five_classes: tuple[np.ndarray, np.ndarray]
) -> None:
    store = tmp_path / "store"
    assert _invoke("ingest", str(features), "-c", "f", "-q", "--data-dir", str(store))[0] == 0
    x = five_classes[0]
    engine = EdgeEngine(store)
    searcher = HierarchicalSearcher(engine, "f", exact=True)
    old = {h.id for h in searcher.search(x[0], k=5)}
    old_model = searcher.model.model_id

    done = _cli("ingest", str(fewer), "-c", "f", "--recreate", "-q", "--data-dir", str(store))
    assert done.returncode == 0, done.stderr
    new_ids = {point_id("f", f"other/{i}.png") for i in range(450)}

    assert engine.count("f") == 450  # the engine opened the new shard, not the deleted one (750)
    with pytest.raises(ModelMismatchError) as caught:
        searcher.search(x[0], k=5)  # the old searcher: one line, no deleted points
    assert "was deleted and made again" in str(caught.value) and "\n" not in str(caught.value)

    fresh = HierarchicalSearcher(engine, "f", exact=True)
    assert fresh.model.model_id != old_model
    hits = {h.id for h in fresh.search(x[0] + 0.01, k=5)}
    assert hits and hits <= new_ids and not hits & old
    engine.close()  # used to raise: it flushed the deleted shard into the new collection's folder


def test_local_mode_reader_notices_a_recreate(tmp_path: Path, features: Path, fewer: Path) -> None:
    engine = connect(f"local:{tmp_path / 'local'}")
    try:
        opts = IngestOptions(progress=False, cache_dir=tmp_path / "cache")
        ingest(features, engine, "f", opts)
        searcher = HierarchicalSearcher(engine, "f", exact=True)
        query = np.zeros(6) + 0.1
        assert len(searcher.search(query, k=3)) == 3
        ingest(fewer, engine, "f", IngestOptions(progress=False, cache_dir=tmp_path / "cache", recreate=True))
        with pytest.raises(HierqdrantError) as caught:
            searcher.search(query, k=3)
        assert "was deleted and made again" in str(caught.value)
        assert len(HierarchicalSearcher(engine, "f", exact=True).search(query, k=3)) == 3
    finally:
        engine.close()
