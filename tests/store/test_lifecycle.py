"""The collection lifecycle in the engines: the writer lock, atomic creates and model writes, damage,
and the ``state`` in the info dict (DESIGN.md §2.6)."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient

from hierqdrant.core.errors import EngineError, InputError
from hierqdrant.core.model import HierarchyModel
from hierqdrant.store.collection import (
    collection_state,
    create_collection,
    read_collection_model,
    reassign,
    set_state,
    state_warnings,
    upsert_points,
)
from hierqdrant.store.engines import EdgeEngine, QdrantEngine
from hierqdrant.store.engines.edge_files import lock_path

DIM = 4
FILES = {"model.json": b"{}", "arrays.npz": b"\x00" * 100}


class Killed(BaseException):
    """Stands for the process dying at a fault boundary (in-process tests only)."""


def _die_at(monkeypatch: pytest.MonkeyPatch, module: str, boundary: str) -> None:
    def fault(name: str) -> None:
        if name == boundary:
            raise Killed(name)

    monkeypatch.setattr(f"{module}.fault", fault)


@pytest.fixture
def holder(tmp_path: Path) -> Any:
    """Another process holding the writer lock of collection 'c' under tmp_path (until stdin closes)."""
    code = (
        "import fcntl, os, sys\n"
        f"fd = os.open({str(lock_path(tmp_path, 'c'))!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "os.pwrite(fd, b'%d\\n' % os.getpid(), 0)\n"
        "print('locked', flush=True)\n"
        "sys.stdin.read()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    yield proc
    if proc.poll() is None:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=10)


def test_a_second_writer_fails_fast_naming_the_first_or_waits(tmp_path: Path, holder: Any) -> None:
    edge = EdgeEngine(tmp_path)
    with pytest.raises(EngineError, match=rf"'c' is being written by another process \(pid {holder.pid}\)"):
        edge.create("c", DIM)
    assert not (tmp_path / "c").exists()
    edge.create("d", DIM)  # other collections are free
    seen: list[int | None] = []
    done = threading.Event()

    def wait_and_create() -> None:
        with edge.writing("c", wait=True, on_wait=seen.append):
            edge.create("c", DIM)
        done.set()

    thread = threading.Thread(target=wait_and_create)
    thread.start()
    assert not done.wait(0.3)  # still waiting
    holder.stdin.close()  # the other process ends: its lock is released
    thread.join(10)
    assert done.is_set() and seen == [holder.pid] and edge.exists("c")
    edge.close()


def test_the_lock_is_reentrant_within_a_process_and_allows_long_names(tmp_path: Path) -> None:
    edge = EdgeEngine(tmp_path)
    name = "n" * 255
    with edge.writing(name), edge.writing(name):
        edge.create(name, DIM, model=(FILES, {"model_id": "m"}))
        edge.upsert(name, ["1"], np.ones((1, DIM)), [{}])
    assert edge.count(name) == 1 and edge.read_model(name) == (FILES, {"model_id": "m"})
    edge.delete(name)
    assert edge.collections() == []
    edge.close()


def test_an_edge_create_appears_at_once_with_its_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    edge = EdgeEngine(tmp_path)
    _die_at(monkeypatch, "hierqdrant.store.engines.edge", "before-create-rename")
    with pytest.raises(Killed):
        edge.create("c", DIM, model=(FILES, {"state": "incomplete"}))
    assert not edge.exists("c") and edge.damaged() == {} and not (tmp_path / "c").exists()
    monkeypatch.undo()
    (tmp_path / "c").mkdir()  # an empty folder in the way is fine
    edge.create("c", DIM, model=(FILES, {"state": "incomplete"}))
    assert edge.read_model("c") == (FILES, {"state": "incomplete"})
    assert sorted(p.name for p in tmp_path.iterdir()) == [".c.lock", "c"]
    edge.close()


def test_an_interrupted_model_write_keeps_the_old_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    edge = EdgeEngine(tmp_path)
    edge.create("c", DIM, model=(FILES, {"model_id": "old"}))
    _die_at(monkeypatch, "hierqdrant.store.engines.edge", "after-model-files")
    with pytest.raises(Killed):
        edge.write_model("c", {"model.json": b"[]"}, {"model_id": "new"})
    assert len(list((tmp_path / "c").glob("model-*"))) == 2  # the new files, not yet in use
    assert edge.read_model("c") == (FILES, {"model_id": "old"})
    monkeypatch.undo()
    with edge.writing("c"):  # the next writer removes what the dead one left
        pass
    assert len(list((tmp_path / "c").glob("model-*"))) == 1
    edge.write_model("c", {"model.json": b"[]"}, {"model_id": "new"})
    assert edge.read_model("c") == ({"model.json": b"[]"}, {"model_id": "new"})
    edge.close()


def test_damage_is_reported_never_replaced(tmp_path: Path) -> None:
    edge = EdgeEngine(tmp_path)
    edge.create("lost", DIM, model=(FILES, {"model_id": "m"}))
    (tmp_path / "lost" / "collection.json").unlink()
    (tmp_path / "cache").mkdir()  # the feature cache and other folders are not collections
    (tmp_path / "cache" / "x").write_text("x")
    (tmp_path / "notes").write_text("a file")
    assert edge.collections() == [] and list(edge.damaged()) == ["lost"]
    with pytest.raises(InputError, match="damaged"):
        edge.create("lost", DIM)
    with pytest.raises(InputError, match="not a hierqdrant collection"):
        edge.create("notes", DIM)
    with pytest.raises(InputError, match="not a hierqdrant collection"):
        edge.create("cache", DIM)
    assert (tmp_path / "notes").read_text() == "a file" and (tmp_path / "lost" / "shard").is_dir()
    edge.delete("lost")
    assert not (tmp_path / "lost").exists() and edge.damaged() == {}
    edge.close()


@pytest.fixture
def model(five_classes: tuple[np.ndarray, np.ndarray]) -> tuple[HierarchyModel, np.ndarray]:
    x, y = five_classes
    return HierarchyModel.fit(x, y, class_names=list("abcde"), n_components=None), x


@pytest.mark.parametrize("kind", ["edge", "local"])
def test_state_lives_in_the_info_dict(tmp_path: Path, model: Any, kind: str) -> None:
    m, x = model
    engine: Any = EdgeEngine(tmp_path) if kind == "edge" else QdrantEngine(QdrantClient(":memory:"))
    create_collection(engine, "c", m, state="incomplete")
    assert collection_state(engine.read_info("c")) == "incomplete"
    assert "incomplete" in state_warnings(engine, "c")[0]
    upsert_points(engine, "c", m, x, [f"k{i}" for i in range(len(x))])
    set_state(engine, "c", "complete")
    info = engine.read_info("c")
    assert info["state"] == "complete" and info["model_id"] == m.model_id
    assert read_collection_model(engine, "c")[1]["state"] == "complete"  # the sidecar manifest agrees
    assert state_warnings(engine, "c") == []
    create_collection(engine, "c", m)  # the library default leaves the state as it is
    assert engine.read_info("c")["state"] == "complete"
    # a reassign keeps the state (and the lock)
    set_state(engine, "c", "incomplete")
    reassign(engine, "c", m.with_alpha(1.0))
    assert engine.read_info("c")["state"] == "incomplete"
    assert collection_state(None) is None and collection_state({"model_id": "x"}) == "complete"
    engine.close()


def test_a_server_create_stopped_before_its_model_is_completed(
    model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    m, x = model
    engine = QdrantEngine(QdrantClient(":memory:"))
    _die_at(monkeypatch, "hierqdrant.store.engines.client", "after-create")
    with pytest.raises(Killed):
        create_collection(engine, "c", m, state="incomplete")
    monkeypatch.undo()
    assert engine.exists("c") and engine.read_info("c") is None
    create_collection(engine, "c", m, state="incomplete")  # the same call again stores the model
    assert engine.read_info("c")["state"] == "incomplete"
    assert read_collection_model(engine, "c")[0].model_id == m.model_id
    # a collection with points but no hierqdrant model is someone else's: refused
    engine.create("plain", m.dims)
    engine.upsert("plain", ["1"], np.ones((1, m.dims)), [{}])
    with pytest.raises(InputError, match="holds 1 points but no hierqdrant model"):
        create_collection(engine, "plain", m)
    engine.close()


def test_a_writer_that_waited_retries_the_shard_until_the_last_writer_closes_it() -> None:
    """The last writer releases the lock, then closes its shard: the waiter retries the open meanwhile."""
    from hierqdrant.store.engines.edge_files import retry_while_busy

    tries: list[int] = []

    def busy_twice() -> None:
        tries.append(1)
        if len(tries) <= 2:
            raise EngineError("collection 'c' is open in another process (WouldBlock)", "close it")

    retry_while_busy(busy_twice)
    assert len(tries) == 3
    tries.clear()
    with pytest.raises(EngineError, match="open in another process"):  # bounded: a writer that never closes
        retry_while_busy(busy_twice, timeout=0.0)

    def full() -> None:
        tries.append(1)
        raise EngineError("disk full")

    tries.clear()
    with pytest.raises(EngineError, match="disk full"):  # other errors are not waited on
        retry_while_busy(full)
    assert len(tries) == 1
