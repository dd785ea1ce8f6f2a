"""Nothing lost, second pass: `hierqdrant ingest` end to end, where it used to delete what was not its own.

- ``ingest --recreate`` on an application's collection (named vectors, its own payload; attached or not), on
  the embedded store and on qdrant-client's local mode (``--url local:DIR``): refused in one line naming
  attach, nothing written or deleted; a collection that ingest made is still rebuilt.
- A writer refused because the stored model is corrupt (``collection.json`` edited) keeps every model
  folder: restoring ``collection.json`` brings the collection back.
- The writer lock never follows a link or writes into anything but a plain file of its own.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from hierqdrant.store.engines import EdgeEngine
from hierqdrant.store.engines.vectors import vector_config
from hierqdrant_cli import app
from tests.helpers.cli import only_error_line, open_store, store_args
from tests.store import application as appmod

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
    np.savez(path, features=x, labels=y, classes=np.array(["cat", "lynx", "bus", "truck", "fish"]))
    return path


def _state(where: list[str], name: str) -> tuple[Any, ...]:
    """Everything the application has in ``name``: its points (payload minus ``hq``, both vectors' bytes),
    the ``hq`` payloads, its vectors' layout and the stored info dict."""
    engine = open_store(where)
    try:
        hqs = {r.id: r.payload.get("hq") for batch in engine.scroll(name) for r in batch}
        return appmod.snapshot(engine, name), hqs, vector_config(engine, name), engine.read_info(name)
    finally:
        engine.close()


# ---------------------------------------------------------------------------------------------------------
# 1. --recreate deletes only what ingest created


@pytest.mark.parametrize("attached", [False, True], ids=["own", "attached"])
@pytest.mark.parametrize("kind", ["edge", "local"])
def test_recreate_refuses_an_application_s_collection(
    kind: str, attached: bool, tmp_path: Path, features: Path
) -> None:
    where = store_args(kind, tmp_path)
    engine = open_store(where)
    appmod.build(engine, "products", appmod.make_points(60, seed=1))
    engine.close()
    if attached:
        code, output = _invoke("attach", "products", "--vector", "image", "--label-key", "category", "-q", *where)
        assert code == 0, output
    before = _state(where, "products")
    assert set(before[2]) == {"image", "text"} and len(before[0]) == 60
    assert (before[3] is not None) == attached

    code, output = _invoke("ingest", str(features), "-c", "products", "--recreate", "-q", *where)
    line = only_error_line(output)
    assert code == 2 and "'products'" in line and "hierqdrant attach products" in line, line
    assert _state(where, "products") == before  # nothing written, nothing deleted

    # without --recreate: refused as well, and the hint does not send the user to --recreate
    code, output = _invoke("ingest", str(features), "-c", "products", "-q", *where)
    line = only_error_line(output)
    assert code == 2 and "attach" in line and "--recreate" not in line, line
    assert _state(where, "products") == before


@pytest.mark.parametrize("kind", ["edge", "local"])
def test_recreate_still_rebuilds_a_collection_ingest_made(kind: str, tmp_path: Path, features: Path) -> None:
    where = store_args(kind, tmp_path)
    assert _invoke("ingest", str(features), "-c", "f", "-q", *where)[0] == 0
    code, output = _invoke("ingest", str(features), "-c", "f", "--recreate", "--threshold", "0.5", "--json", *where)
    assert code == 0, output
    summary = json.loads(output.strip().splitlines()[-1])
    assert summary["ingested"] == 750 and "dropping collection 'f'" in output
    engine = open_store(where)
    try:
        assert engine.count("f") == 750 and (engine.read_info("f") or {})["model_id"] == summary["model_id"]
    finally:
        engine.close()


def test_recreate_does_not_delete_what_is_not_a_collection(tmp_path: Path, features: Path) -> None:
    """On the embedded store ``--recreate`` removes a damaged collection (its shard or model without
    ``collection.json``), never another folder in its place, such as the feature cache."""
    store = tmp_path / "store"
    (store / "cache" / "part").mkdir(parents=True)
    (store / "cache" / "part" / "x.npz").write_bytes(b"cached")
    code, output = _invoke("ingest", str(features), "-c", "cache", "--recreate", "-q", "--data-dir", str(store))
    line = only_error_line(output)
    assert code == 2 and "not a hierqdrant collection" in line, line
    assert (store / "cache" / "part" / "x.npz").read_bytes() == b"cached"


# ---------------------------------------------------------------------------------------------------------
# 2. a refused writer keeps the model


def _tamper_dir(meta: dict[str, Any]) -> None:
    folder = meta["model"]["dir"]
    meta["model"]["dir"] = folder[:-1] + ("0" if folder[-1] != "0" else "1")


def _tamper_null(meta: dict[str, Any]) -> None:
    meta["model"] = None


@pytest.mark.parametrize("tamper", [_tamper_dir, _tamper_null], ids=["dir-digit", "model-null"])
def test_a_corrupt_collection_json_leaves_every_model_folder(tamper: Any, tmp_path: Path, features: Path) -> None:
    store = tmp_path / "store"
    argv = ["ingest", str(features), "-c", "f", "-q", "--data-dir", str(store)]
    assert _invoke(*argv)[0] == 0
    cj = store / "f" / "collection.json"
    good = cj.read_bytes()
    (model,) = (store / "f").glob("model-*")
    files = {p.name: p.read_bytes() for p in model.iterdir()}
    meta = json.loads(good)
    tamper(meta)
    cj.write_text(json.dumps(meta))

    code, output = _invoke(*argv)
    line = only_error_line(output)
    assert code == 2 and "stored model of collection 'f' is corrupt" in line and "restore a backup" in line, line
    assert {p.name: p.read_bytes() for p in model.iterdir()} == files  # the model is still there
    assert code == 2 and _invoke(*argv, "--keep-model")[0] == 2 and model.is_dir()

    cj.write_bytes(good)  # the backup of collection.json is all a restore needs
    code, output = _invoke(*argv, "--json")
    assert code == 0, output
    engine = EdgeEngine(store)
    try:
        assert engine.read_model("f") is not None and engine.count("f") == 750
    finally:
        engine.close()


def test_a_model_folder_left_by_a_dead_writer_is_still_removed(tmp_path: Path, features: Path) -> None:
    """The cleanup still removes a model folder that a verified ``collection.json`` does not use."""
    store = tmp_path / "store"
    argv = ["ingest", str(features), "-c", "f", "-q", "--data-dir", str(store)]
    assert _invoke(*argv)[0] == 0
    (model,) = (store / "f").glob("model-*")
    leftover = store / "f" / "model-0123456789abcdef"
    shutil.copytree(model, leftover)
    assert _invoke(*argv)[0] == 0
    assert not leftover.exists() and model.is_dir()


# ---------------------------------------------------------------------------------------------------------
# 3. the lock file is a plain file of its own, never followed


def _symlink(lock: Path, other: Path) -> None:
    os.symlink(other, lock)


def _dangling(lock: Path, other: Path) -> None:
    os.symlink(other.parent / "nowhere", lock)


def _dev_null(lock: Path, other: Path) -> None:
    os.symlink("/dev/null", lock)


def _directory(lock: Path, other: Path) -> None:
    (lock / "inside").mkdir(parents=True)


def _hard_link(lock: Path, other: Path) -> None:
    os.link(other, lock)


def _fifo(lock: Path, other: Path) -> None:
    os.mkfifo(lock)


@pytest.mark.parametrize(
    "make, what",
    [
        (_symlink, "a symbolic link"),
        (_dangling, "a symbolic link"),
        (_dev_null, "a symbolic link"),
        (_directory, "a directory"),
        (_hard_link, "2 hard links"),
        (_fifo, "a FIFO"),
    ],
    ids=["symlink", "dangling", "dev-null", "directory", "hard-link", "fifo"],
)
def test_a_lock_path_that_is_not_a_plain_file_is_refused(make: Any, what: str, tmp_path: Path, features: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    other = tmp_path / "other.txt"
    other.write_text("precious\n")
    lock = store / ".f.lock"
    make(lock, other)
    code, output = _invoke("ingest", str(features), "-c", "f", "-q", "--data-dir", str(store))
    line = only_error_line(output)
    assert code == 2 and str(lock) in line and what in line, line
    assert "remove it" in line or "move it away" in line, line
    assert other.read_text() == "precious\n"
    assert not (tmp_path / "nowhere").exists()
    assert [p.name for p in store.iterdir()] == [".f.lock"]  # nothing written
