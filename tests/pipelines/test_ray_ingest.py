"""``ingest --backend ray``: the embedding in a pool of Ray actors gives the same collection as the default path.

The Ray tests run on a local Ray instance of 2 CPUs (two embedding actors) and skip, saying why, when Ray
Data is not installed (``pip install "hierqdrant[ray]"``; CI installs it through the ``dev`` extra). The
missing-Ray error is checked without Ray.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from hierqdrant.core.errors import InputError
from hierqdrant.pipelines.ingest import IngestOptions, IngestResult, ingest
from hierqdrant.store.collection import iter_points
from hierqdrant.store.engines import EdgeEngine
from hierqdrant_cli import app
from tests.cli.test_cli_ingest import add_bad_files, make_folder
from tests.model_check import assert_same_model

pytestmark = pytest.mark.slow  # Ray starts a local cluster

COLLECTION = "pics"


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[Any]:
    """A local Ray of 2 CPUs for the module (started once: ``ray.init`` takes seconds). Without Ray Data the
    tests skip, unless ``HIERQDRANT_REQUIRE_RAY`` is set (CI, whose ``dev`` extra installs it): then they fail."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        if os.environ.get("HIERQDRANT_REQUIRE_RAY"):
            pytest.fail(f"HIERQDRANT_REQUIRE_RAY is set but Ray Data is not importable ({exc})")
        pytest.skip(f'Ray Data is not installed ({exc}): pip install "hierqdrant[ray]"')
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes × 8 images, plus every bad-input case (unreadable, truncated, too small, a symlink loop, …)."""
    root = make_folder(tmp_path_factory.mktemp("ray") / "images", classes=3, per_class=8, size=32)
    add_bad_files(root)
    return root


def _ingest(folder: Path, store: Path, backend: str, **extra: Any) -> IngestResult:
    # A tiny conv net (CIFAR ResNet-20, fixed-seed random weights) exercises the split uint8 transform and
    # the device-side normalisation; batches of 5 spread 29 files over both actors in several calls.
    options = IngestOptions(
        backbone="cifar_resnet20",
        weights="random",
        device="cpu",
        batch_size=5,
        num_workers=0,
        threshold=0.2,
        pca=4,
        progress=False,
        cache_dir=store / "cache",
        backend=backend,  # type: ignore[arg-type]
        **extra,
    )
    with EdgeEngine(store / "data") as engine:
        return ingest(folder, engine, COLLECTION, options)


def _points(store: Path) -> dict[str, tuple[np.ndarray, dict[str, Any]]]:
    with EdgeEngine(store / "data") as engine:
        out: dict[str, tuple[np.ndarray, dict[str, Any]]] = {}
        for ids, vectors, payloads in iter_points(engine, COLLECTION):
            assert vectors is not None
            out.update({pid: (vec, payload) for pid, vec, payload in zip(ids, vectors, payloads, strict=True)})
        return out


def test_ray_backend_gives_the_same_collection_as_the_default(ray_instance: Any, folder: Path, tmp_path: Path) -> None:
    local = _ingest(folder, tmp_path / "local", "local")
    distributed = _ingest(folder, tmp_path / "ray", "ray", ray_concurrency=2)

    # The same images embedded (none from a cache), the same files skipped for the same reasons.
    assert distributed.embedded == local.embedded == local.ingested > 0
    assert distributed.ingested == local.ingested
    assert [(s.path, s.reason) for s in distributed.skipped] == [(s.path, s.reason) for s in local.skipped]
    assert any("truncated.jpg" in s.path for s in distributed.skipped)  # a decode failure inside an actor
    # The same model, up to the last bits: the actors embed in other processes (whose kernels may round
    # otherwise), and a model id hashes the arrays' bytes, so the models are compared, not their ids.
    assert_same_model(distributed.model, local.model, rtol=1e-5, atol=1e-6)
    assert distributed.model.extractor == local.model.extractor

    # The actors' batches went through the same feature cache as the default path: a second run embeds nothing
    # (and goes on with the collection's model: it was fitted on the same images and settings).
    again = _ingest(folder, tmp_path / "ray", "ray", ray_concurrency=2)
    assert (again.embedded, again.reused, again.model_id) == (0, distributed.ingested, distributed.model_id)

    a, b = _points(tmp_path / "local"), _points(tmp_path / "ray")
    assert sorted(a) == sorted(b) and len(a) == local.ingested
    for pid, (vec, payload) in a.items():
        other_vec, other_payload = b[pid]
        np.testing.assert_allclose(other_vec, vec, rtol=1e-5, atol=1e-5)
        hq, other_hq = payload["hq"], other_payload["hq"]
        assert (other_payload["path"], other_hq["label"], other_hq["leaf"], other_hq["ancestors"]) == (
            payload["path"],
            hq["label"],
            hq["leaf"],
            hq["ancestors"],
        )


def test_without_ray_the_backend_is_one_line_naming_the_extra(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(InputError, match=r'pip install "hierqdrant\[ray\]"'):
        _ingest(folder, tmp_path, "ray")
    assert not (tmp_path / "data" / COLLECTION).exists()  # refused before anything was written

    result = CliRunner().invoke(
        app,
        ["ingest", str(folder), "-c", COLLECTION, "--model", "pixels", "--backend", "ray", "--data-dir", str(tmp_path)],
    )
    assert result.exit_code == 2
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and 'pip install "hierqdrant[ray]"' in lines[0] and "Traceback" not in result.output


def test_an_actors_user_error_comes_back_as_one_line(folder: Path) -> None:
    """A weights file missing on a node fails the actor's backbone build; Ray would report a traceback without
    the exception, so the actor returns it with its batch and the driver raises the same one-line error."""
    from hierqdrant.vision import load_backbone
    from hierqdrant.vision.extractor import describe
    from hierqdrant.vision.ray_extract import _Embedder, _raise_error

    description = describe(load_backbone("cifar_resnet20", "random"), "random")
    description.update(weights_kind="file", weights="gone.th", weights_sha256="ab" * 32)
    actor = _Embedder(description, None, "cpu", batch_size=4, num_workers=0)
    paths = sorted(str(p) for p in (folder / "class0").glob("*.png"))[:3]
    rows = actor({"index": np.arange(3), "path": np.asarray(paths)})
    assert not rows["ok"].any() and rows["feature"].shape == (3, 64)
    with pytest.raises(InputError, match=r"gone\.th .* pass that file with --weights PATH$"):
        _raise_error(str(rows["error"][0]))
