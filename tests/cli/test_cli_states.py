"""Nothing lost, second pass: what ``info``, ``query``, ``ingest`` and ``attach`` say and do about a collection's
state (items 14, 15, 17 and 18 of the issue), end to end through the CLI.

- ``info`` calls damaged only what is damaged: a collection another process is writing is ``incomplete,
  being written (pid N)``, one a reader holds open says so, one on a read-only store is ``read-only``, an
  application's collection that is not attached is ``not attached`` — each with its row, not dropped.
- An ingest refused because another process has the collection open leaves it as it was (it used to mark a
  complete, untouched collection ``incomplete``).
- ``attach --update`` / ``--refit`` / a resume use the stored ``--payload-key`` when it is omitted.
- A stopped attach says "run the same attach again"; ``query`` and ``info`` agree on a lost
  ``collection.json`` (damaged); fewer points than the last ingest left is damaged, with both numbers; the
  name ``cache`` is refused on the embedded store; a cache temporary file left by a killed writer is gone
  after the resume.
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

from hierqdrant.core.faults import FAULT_EXIT
from hierqdrant.store.engines import EdgeEngine
from hierqdrant_cli import app
from tests.cli.test_cli_ingest import make_folder
from tests.helpers.cli import only_error_line, open_store, store_args
from tests.pipelines.conftest import ingest_argv
from tests.schema_check import check
from tests.store import application as appmod
from tests.unprivileged import run_unprivileged, shared_tmp

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def _invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    assert "Traceback" not in result.output, result.output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def _info(*where: str) -> dict[str, Any]:
    code, output = _invoke("info", "--json", *where)
    assert code == 0, output
    data: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    check(data, "cli/info")
    return data


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``hierqdrant …`` in another process."""
    return subprocess.run(
        [sys.executable, "-m", "hierqdrant", *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


@pytest.fixture
def features(tmp_path: Path, five_classes: tuple[np.ndarray, np.ndarray]) -> Path:
    x, y = five_classes
    path = tmp_path / "f.npz"
    np.savez(path, features=x, labels=y, classes=np.array(["cat", "lynx", "bus", "truck", "fish"]))
    return path


def _products(where: list[str]) -> None:
    engine = open_store(where)
    appmod.build(engine, "products", appmod.make_points(60, seed=1))
    engine.close()


# ---------------------------------------------------------------------------------------------------------
# 14. info: damaged means damaged


def test_info_during_a_live_ingest_says_being_written(tmp_path: Path, features: Path) -> None:
    """What an ingest holds while it writes — the writer lock and the open shard, the collection marked
    incomplete — held by this process; ``info`` runs in another."""
    store = tmp_path / "store"
    assert _invoke("ingest", str(features), "-c", "f", "-q", "--data-dir", str(store))[0] == 0
    engine = EdgeEngine(store)
    try:
        with engine.writing("f"):
            from hierqdrant.store.collection import set_state

            set_state(engine, "f", "incomplete")
            engine.shard("f")
            done = _cli("info", "--data-dir", str(store), "--json")
            table = _cli("info", "--data-dir", str(store))
        reader = _cli("info", "--data-dir", str(store), "--json")  # a reader holds it open, no writer
    finally:
        engine.close()
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    check(data, "cli/info")
    assert data["damaged"] == [] and data["collections"] == []
    (row,) = data["other"]
    assert row == {"collection": "f", "status": "being written", "state": "incomplete", "pid": os.getpid(),
                   "model_id": row["model_id"]}  # fmt: skip
    assert f"incomplete, being written (pid {os.getpid()})" in table.stdout.replace("\n", " "), table.stdout
    assert "damaged" not in table.stderr and "WouldBlock" not in table.stdout + table.stderr
    (row,) = json.loads(reader.stdout)["other"]
    assert row["status"] == "open in another process" and "pid" not in row


@pytest.mark.parametrize("kind", ["edge", "local"])
def test_info_on_an_application_s_collection_says_not_attached(kind: str, tmp_path: Path) -> None:
    where = store_args(kind, tmp_path)
    _products(where)
    data = _info(*where)
    assert data["damaged"] == [] and data["other"] == [{"collection": "products", "status": "not attached",
                                                         "points": 60}]  # fmt: skip
    code, output = _invoke("info", *where)
    assert code == 0 and "not attached" in output and "damaged" not in output, output


def test_info_on_a_read_only_store_says_read_only(features: Path) -> None:
    with shared_tmp() as tmp:
        store = tmp / "store"
        assert _invoke("ingest", str(features), "-c", "f", "-q", "--data-dir", str(store))[0] == 0
        for p in [store, *store.rglob("*")]:
            p.chmod(0o555 if p.is_dir() else 0o444)

        def step() -> dict[str, Any]:
            return json.loads(runner.invoke(app, ["info", "--data-dir", str(store), "--json"]).output)

        data = run_unprivileged(step)
    check(data, "cli/info")
    assert data["damaged"] == [], data
    assert data["other"][0]["status"] == "read-only" and data["other"][0]["state"] == "complete"


# ---------------------------------------------------------------------------------------------------------
# 15. a refused writer changes nothing


def test_a_refused_ingest_leaves_the_collection_complete(tmp_path: Path, features: Path) -> None:
    store = tmp_path / "store"
    assert _invoke("ingest", str(features), "-c", "f", "-q", "--data-dir", str(store))[0] == 0
    meta = (store / "f" / "collection.json").read_bytes()
    reader = EdgeEngine(store)
    try:
        assert reader.count("f") == 750  # this process holds the shard open
        done = _cli("ingest", str(features), "-c", "f", "-q", "--data-dir", str(store))
    finally:
        reader.close()
    assert done.returncode == 2 and "is open in another process" in only_error_line(done.stderr), done.stderr
    assert (store / "f" / "collection.json").read_bytes() == meta  # still complete, untouched
    assert [r["state"] for r in _info("--data-dir", str(store))["collections"]] == ["complete"]


def test_a_refused_ingest_on_local_mode_changes_nothing(tmp_path: Path, features: Path) -> None:
    where = store_args("local", tmp_path)
    assert _invoke("ingest", str(features), "-c", "f", "-q", *where)[0] == 0
    holder = open_store(where)
    try:
        done = _cli("ingest", str(features), "-c", "f", "-q", *where)
        assert done.returncode == 2, done.stderr
        assert "is open in another process" in only_error_line(done.stderr)
        assert (holder.read_info("f") or {})["state"] == "complete"
    finally:
        holder.close()


# ---------------------------------------------------------------------------------------------------------
# 17. attach: the stored payload key


@pytest.mark.parametrize("kind", ["edge", "local"])
def test_attach_uses_the_stored_payload_key(kind: str, tmp_path: Path) -> None:
    where = store_args(kind, tmp_path)
    _products(where)
    base = ("attach", "products", "-q", "--json", *where)
    code, output = _invoke(*base, "--vector", "image", "--label-key", "category", "--payload-key", "tag")
    assert code == 0, output
    for extra in (["--update"], [], ["--refit"]):  # the key omitted: the stored one
        code, output = _invoke(*base, *extra)
        assert code == 0, output
        assert json.loads(output.strip().splitlines()[-1])["payload_key"] == "tag"
    engine = open_store(where)
    try:
        payloads = [r.payload for batch in engine.scroll("products") for r in batch]
        assert all("hq" not in p for p in payloads) and sum("tag" in p for p in payloads) >= 50
    finally:
        engine.close()
    code, output = _invoke(*base, "--update", "--payload-key", "hq")  # another one: still refused
    line = only_error_line(output)
    assert code == 2 and "payload key 'tag', not 'hq'" in line and "detach" in line, line


# ---------------------------------------------------------------------------------------------------------
# 18. the same words everywhere, counts, reserved names, cache leftovers


@pytest.mark.parametrize("kind", ["edge", "local"])
def test_a_stopped_attach_says_run_the_same_attach_again(kind: str, tmp_path: Path) -> None:
    where = store_args(kind, tmp_path)
    _products(where)
    argv = ("attach", "products", "--vector", "image", "--label-key", "category", "-q", *where)
    stopped = _cli(*argv, env={"HIERQDRANT_FAULT": "before-complete"})
    assert stopped.returncode == FAULT_EXIT, stopped.stderr
    code, output = _invoke("info", *where)
    assert code == 0 and "run the same hierqdrant attach (or detach) again" in output.replace("\n", " "), output
    assert "run the same ingest" not in output
    engine = open_store(where)
    try:
        from hierqdrant.store.collection import state_warnings

        (warning,) = state_warnings(engine, "products")
        assert "run the same hierqdrant attach (or detach) again" in warning
    finally:
        engine.close()
    assert _invoke(*argv)[0] == 0


def test_query_and_info_agree_on_a_lost_collection_json(tmp_path: Path, features: Path) -> None:
    store = tmp_path / "store"
    assert _invoke("ingest", str(features), "-c", "f", "-q", "--data-dir", str(store))[0] == 0
    (store / "f" / "collection.json").unlink()
    (damaged,) = _info("--data-dir", str(store))["damaged"]
    code, output = _invoke("query", str(features), "-c", "f", "--data-dir", str(store))
    line = only_error_line(output)
    assert code == 2 and damaged["problem"] in line and "does not exist" not in line, line


def test_lost_points_are_damage_with_the_numbers(tmp_path: Path, features: Path) -> None:
    store = tmp_path / "store"
    code, output = _invoke("ingest", str(features), "-c", "f", "--upsert-batch", "50", "-q", "--data-dir", str(store))
    assert code == 0, output
    for segment in (store / "f" / "shard" / "segments").iterdir():
        if segment.is_dir():  # segments lost; the WAL gives back its last operations only
            for p in sorted(segment.rglob("*"), reverse=True):
                p.rmdir() if p.is_dir() else p.unlink()
            segment.rmdir()
    data = _info("--data-dir", str(store))
    assert data["collections"] == [], data
    (damaged,) = data["damaged"]
    assert damaged["collection"] == "f" and "of the 750 points its last ingest left" in damaged["problem"], damaged
    code, output = _invoke("query", str(features), "-c", "f", "-k", "1", "--json", "--data-dir", str(store))
    assert any("of the 750 points" in w for w in json.loads(output.strip().splitlines()[-1])["warnings"]), output
    assert _invoke("ingest", str(features), "-c", "f", "-q", "--data-dir", str(store))[0] == 0  # restores them
    assert [(r["collection"], r["points"]) for r in _info("--data-dir", str(store))["collections"]] == [("f", 750)]


def test_the_name_cache_is_refused_on_the_embedded_store(tmp_path: Path, features: Path) -> None:
    store = tmp_path / "store"
    code, output = _invoke("ingest", str(features), "-c", "cache", "-q", "--data-dir", str(store))
    line = only_error_line(output)
    assert code == 2 and "'cache' is reserved" in line and str(store / "cache") in line, line
    assert not (store / "cache").exists()
    code, output = _invoke("ingest", str(features), "-c", "cache", "-q", "--url", f"local:{tmp_path / 'local'}")
    assert code == 0, output  # a server's collection shares no folder with the cache


def test_a_cache_temporary_file_is_removed_on_resume(tmp_path: Path) -> None:
    images = make_folder(tmp_path / "imgs", classes=3, per_class=4, size=8)
    store = tmp_path / "store"
    assert _invoke(*ingest_argv(images, store))[0] == 0
    (folder,) = (store / "cache" / "pics").iterdir()
    left = folder / f".part-000099-0badc0de.npz.tmp-{'0' * 32}"  # a writer killed while writing a part
    left.write_bytes(b"half a part")
    assert _invoke(*ingest_argv(images, store))[0] == 0
    assert not left.exists() and list(folder.glob("part-*.npz"))
