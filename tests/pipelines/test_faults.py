"""Fault injection: ``hierqdrant ingest`` killed at every named write boundary, then run again.

Each case runs the ingest in a child process with ``HIERQDRANT_FAULT=<boundary>`` (the process ends with
``os._exit`` the moment it reaches it), checks what a reader sees then, runs the same command again without
the fault and checks: exit 0, the exact point count, unique ids, state complete, no temporary files left.
The table of README.md ("Reliability") is this matrix.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hierqdrant.core.classifiers import LinearClassifier
from hierqdrant.core.faults import FAULT_EXIT
from hierqdrant.store.collection import iter_points, read_collection_model
from hierqdrant.store.engines import EdgeEngine
from tests.blas_kernels import kernels, other_core_type
from tests.cli.test_cli_ingest import _pattern
from tests.pipelines.conftest import (
    ROOT,
    SMALL_PARTS,
    ForkServer,
    check_store,
    ingest_argv,
    keys_of,
)

pytestmark = pytest.mark.slow  # kill matrices: subprocesses stopped at every write boundary

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


def test_a_resume_under_another_blas_kernel_continues(images: Path, tmp_path: Path) -> None:
    """Killed under this machine's OpenBLAS kernel, resumed under another one (other last bits of any refit):
    the same images and settings continue the collection with its stored model."""
    other = other_core_type()
    if other is None:
        pytest.skip("this CPU offers no second OpenBLAS kernel")
    env = {**os.environ, "OPENBLAS_CORETYPE": other}
    probe = [sys.executable, "-m", "tests.blas_kernels", "current"]
    kernel = subprocess.run(probe, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120).stdout.strip()
    assert kernel.lower() == other.lower() and kernel not in kernels(), (kernel, kernels())  # really another one
    store = tmp_path / "store"
    argv = [sys.executable, "-m", "hierqdrant", *ingest_argv(images, store)]
    killed = subprocess.run(
        argv, env={**os.environ, "HIERQDRANT_FAULT": "after-upsert-batch:2"}, cwd=ROOT, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert killed.returncode == FAULT_EXIT, killed.stderr
    again = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout.strip().splitlines()[-1])
    assert summary["fitted"] is False and summary["ingested"] == 18
    assert check_store(store, keys_of(images))["model_id"] == summary["model_id"]


def _stored_elsewhere(store: Path) -> str:
    """Make the stored model what a fit of the same inputs on another machine (another BLAS kernel) stores:
    every float array one ulp off. The points written so far are re-stamped with its id, as that machine
    would have written them. Returns the model's id."""
    engine = EdgeEngine(store)
    try:
        model, info = read_collection_model(engine, "pics")
        assert model.classifier is not None  # the default tied query leaf: a linear classifier

        def up(a: np.ndarray) -> np.ndarray:
            return np.nextafter(a, np.inf)

        p, g, c = model.projection, model.gaussians, model.classifier
        elsewhere = dataclasses.replace(
            model,
            projection=dataclasses.replace(p, mean=up(p.mean), components=up(p.components)),
            gaussians=dataclasses.replace(g, means=up(g.means), covariances=up(g.covariances)),
            classifier=LinearClassifier(up(c.weight), up(c.bias)),
        )
        assert elsewhere.model_id != model.model_id
        engine.write_model("pics", elsewhere.to_files(), {**info, "model_id": elsewhere.model_id})
        for ids, _, payloads in iter_points(engine, "pics", with_vectors=False):
            engine.set_payload("pics", ids, [{**p["hq"], "model": elsewhere.model_id} for p in payloads], key="hq")
        return elsewhere.model_id
    finally:
        engine.close()


def test_a_resume_continues_with_a_stored_model_whose_last_bits_differ(
    children: ForkServer, images: Path, tmp_path: Path
) -> None:
    """The resume does not refit and compare model ids (the bits of a refit depend on the machine): the same
    images and settings continue with the stored model, bit for bit."""
    store = tmp_path / "store"
    argv = ingest_argv(images, store)
    killed = children.one(argv, env={**SMALL_PARTS, "HIERQDRANT_FAULT": "after-upsert-batch:2"})
    assert killed.code == FAULT_EXIT, killed.stderr
    model_id = _stored_elsewhere(store)
    engine = EdgeEngine(store)
    files = engine.read_model("pics")
    engine.close()
    assert files is not None
    again = children.one(argv, env=SMALL_PARTS)
    assert again.code == 0, again.stderr
    assert again.json["fitted"] is False and again.json["model_id"] == model_id and again.json["ingested"] == 18
    info = check_store(store, keys_of(images))
    assert info["model_id"] == model_id
    engine = EdgeEngine(store)
    try:
        now = engine.read_model("pics")
        batches = list(iter_points(engine, "pics", with_vectors=False))
    finally:
        engine.close()
    assert now is not None and now[0] == files[0]  # the same model files
    assert {p["hq"]["model"] for _, _, payloads in batches for p in payloads} == {model_id}
