"""The feature cache: progress written per batch group (bounded loss), bounded number of parts."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from hierqdrant.vision import cache
from hierqdrant.vision.cache import FeatureCache

DESC = {"name": "pixels", "size": 8}


def _batch(i: int, n: int = 3) -> tuple[list[str], list[str], np.ndarray]:
    keys = [f"b{i}/{j}" for j in range(n)]
    return keys, [f"stamp{i}"] * n, np.full((n, 5), float(i), dtype=np.float32)


def test_batches_are_written_once_the_flush_time_has_passed(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path, "c", DESC, flush_every=10_000, flush_seconds=0.05)
    cache.add(*_batch(0))
    assert FeatureCache(tmp_path, "c", DESC).load() == {}  # under 0.05 s: still in memory
    time.sleep(0.06)
    cache.add(*_batch(1))  # the time has passed: both batches are on disk now, before any flush()
    known = FeatureCache(tmp_path, "c", DESC).load()  # what a rerun after a kill here sees
    assert sorted(known) == sorted(_batch(0)[0] + _batch(1)[0])
    assert known["b1/2"][0] == "stamp1" and known["b1/2"][1].tolist() == [1.0] * 5


def test_the_number_of_parts_stays_bounded(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path, "c", DESC, flush_every=1, max_parts=4)
    for i in range(40):
        cache.add(*_batch(i))
    parts = list(cache.directory.glob("part-*.npz"))
    assert len(parts) <= 5
    known = FeatureCache(tmp_path, "c", DESC).load()
    assert len(known) == 120 and all(known[f"b{i}/0"][1][0] == i for i in range(40))


def test_load_compacts_many_parts_and_removes_abandoned_temporaries(tmp_path: Path) -> None:
    writer = FeatureCache(tmp_path, "c", DESC, flush_every=1, max_parts=1000)
    for i in range(12):
        writer.add(*_batch(i))
    old = writer.directory / ".part-000099-deadbeef.npz.tmp-0123"
    fresh = writer.directory / ".part-000100-deadbeef.npz.tmp-4567"
    old.write_bytes(b"half")
    fresh.write_bytes(b"being written")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    reader = FeatureCache(tmp_path, "c", DESC, max_parts=8)
    with cache._lock(writer.directory, shared=True):  # a writer is writing a part: its fresh file stays
        known = reader.load()
    assert len(known) == 36 and len(list(reader.directory.glob("part-*.npz"))) == 1
    assert not old.exists() and fresh.exists()  # a temporary file may belong to a writer still running
    FeatureCache(tmp_path, "c", DESC).load()  # no writer holds the lock: every temporary file is a dead one's
    assert not fresh.exists()
    assert FeatureCache(tmp_path, "c", DESC).load().keys() == known.keys()
    reader.add(*_batch(50))  # new parts continue after the compacted one
    reader.flush()
    assert len(FeatureCache(tmp_path, "c", DESC).load()) == 39
