"""Fault injection: ``hierqdrant ingest`` killed at every named write boundary, then run again.

Each case runs the ingest in a child process with ``HIERQDRANT_FAULT=<boundary>`` (the process ends with
``os._exit`` the moment it reaches it), checks what a reader sees then, runs the same command again without
the fault and checks: exit 0, the exact point count, unique ids, state complete, no temporary files left.
The table of README.md ("Reliability") is this matrix.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from hierqdrant.core.faults import FAULT_EXIT
from hierqdrant.store.engines import EdgeEngine
from tests.cli.test_cli_ingest import _pattern
from tests.pipelines.conftest import (
    ROOT,
    SMALL_PARTS,
    ForkServer,
    check_store,
    ingest_argv,
    keys_of,
)

# boundary → what a reader sees after the kill: no collection, or one in that state
NEW_COLLECTION = {
    "after-cache-flush:1": None,  # the first cache part is written; nothing in the store yet
    "after-cache-flush:4": None,
    "before-create-rename": None,  # shard, model and collection.json built in the temporary folder
    "after-create": "incomplete",  # the collection is in place, with its model (one rename)
    "after-model": "incomplete",
    "after-upsert-batch:1": "incomplete",
    "after-upsert-batch:4": "incomplete",  # the last batch, before the shard is flushed (WAL only)
    "before-complete": "incomplete",  # every point upserted and optimized
    "after-complete": "complete",  # the ingest stopped before printing its summary
}


def _state(store: Path) -> str | None:
    engine = EdgeEngine(store)
    try:
        if not engine.exists("pics"):
            assert engine.damaged() == {}
            return None
        info = engine.read_info("pics")
        assert info is not None
        return str(info["state"])
    finally:
        engine.close()


@pytest.mark.parametrize("boundary", list(NEW_COLLECTION))
def test_a_kill_at_any_boundary_of_a_new_ingest_resumes(
    children: ForkServer, images: Path, tmp_path: Path, boundary: str
) -> None:
    store = tmp_path / "store"
    argv = ingest_argv(images, store)
    killed = children.one(argv, env={**SMALL_PARTS, "HIERQDRANT_FAULT": boundary})
    assert killed.code == FAULT_EXIT, (boundary, killed.stderr)
    assert _state(store) == NEW_COLLECTION[boundary]
    again = children.one(argv, env=SMALL_PARTS)
    assert again.code == 0, again.stderr
    summary = again.json
    assert summary["ingested"] == 18 and summary["embedded"] + summary["reused_from_cache"] == 18
    if boundary == "after-cache-flush:4":  # four parts of 4 images survived the kill
        assert summary["reused_from_cache"] == 16
    check_store(store, keys_of(images))


def test_a_kill_while_adding_to_a_complete_collection_resumes(
    children: ForkServer, images: Path, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    assert children.one(ingest_argv(images, store)).code == 0
    loose = tmp_path / "loose"
    loose.mkdir()
    for i in range(7):
        Image.fromarray(_pattern(i % 3, 90 + i, 8)).save(loose / f"u{i}.png")
    argv = ingest_argv(loose, store)
    argv = argv[: argv.index("--threshold")] + ["--json", "--quiet"]  # the collection's model assigns them
    for boundary in ("after-incomplete", "after-upsert-batch:1"):
        killed = children.one(argv, env={"HIERQDRANT_FAULT": boundary})
        assert killed.code == FAULT_EXIT, killed.stderr
        assert _state(store) == "incomplete"
    again = children.one(argv)
    assert again.code == 0, again.stderr
    assert again.json["ingested"] == 7 and again.json["fitted"] is False
    check_store(store, keys_of(images) + keys_of(loose))


def test_the_fault_variable_works_in_a_plain_python_m_hierqdrant(images: Path, tmp_path: Path) -> None:
    """The same boundary through a fresh interpreter (no fork server), then the resume."""
    store = tmp_path / "store"
    argv = [sys.executable, "-m", "hierqdrant", *ingest_argv(images, store)]
    env = {**os.environ, "HIERQDRANT_FAULT": "after-upsert-batch:2"}
    killed = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert killed.returncode == FAULT_EXIT, killed.stderr
    assert _state(store) == "incomplete"
    env.pop("HIERQDRANT_FAULT")
    again = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    check_store(store, keys_of(images))
