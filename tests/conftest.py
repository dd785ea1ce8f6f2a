"""Shared fixtures: small synthetic data made inside the tests (no ../shared), and engines.

Engine fixtures (prefix ``engine_``) give each test a fresh engine of every kind:

- ``edge``: the embedded engine in ``tmp_path``;
- ``local``: qdrant-client's local mode (``":memory:"``);
- ``server``: a Qdrant server — ``$HIERQDRANT_TEST_QDRANT_URL`` if set, else a testcontainers container of
  ``$HIERQDRANT_TEST_QDRANT_IMAGE`` (default ``qdrant/qdrant:v1.16.3``); skipped, with the reason, when
  neither is available (no Docker engine answering, image not pullable, ...).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest


def pytest_sessionstart(session: pytest.Session) -> None:
    """CI's second run of the fitting tests under another BLAS kernel sets ``HIERQDRANT_EXPECT_BLAS_KERNEL``
    (.ci/blas_kernel.py): check that NumPy's and SciPy's OpenBLAS really run it, or the run proves nothing."""
    expected = os.environ.get("HIERQDRANT_EXPECT_BLAS_KERNEL")
    if not expected:
        return
    import scipy.linalg  # noqa: F401 — loads SciPy's BLAS too
    from threadpoolctl import threadpool_info

    kernels = {str(i.get("architecture")) for i in threadpool_info() if i.get("internal_api") == "openblas"}
    if not kernels or {k.lower() for k in kernels} != {expected.lower()}:
        raise pytest.UsageError(f"HIERQDRANT_EXPECT_BLAS_KERNEL={expected}, but OpenBLAS runs {sorted(kernels)}")


def gaussian_classes(
    centres: np.ndarray, per_class: int, dims: int, spread: float = 1.0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` points around each centre (first coordinates from ``centres``, the rest 0)."""
    rng = np.random.default_rng(seed)
    k = centres.shape[0]
    full = np.zeros((k, dims))
    full[:, : centres.shape[1]] = centres
    x = np.concatenate([c + spread * rng.standard_normal((per_class, dims)) for c in full])
    return x, np.repeat(np.arange(k), per_class)


@pytest.fixture
def five_classes() -> tuple[np.ndarray, np.ndarray]:
    """{0,1} overlap, {2,3} overlap, 4 is far from all."""
    centres = np.array([[0.0, 0.0], [0.6, 0.0], [8.0, 8.0], [8.6, 8.0], [4.0, -12.0]])
    return gaussian_classes(centres, per_class=150, dims=6, seed=0)


# ---------------------------------------------------------------------------------------------------------
# engines

ENGINE_KINDS = ("edge", "local", "server")
ENGINE_QDRANT_IMAGE = os.environ.get("HIERQDRANT_TEST_QDRANT_IMAGE", "qdrant/qdrant:v1.16.3")


def _docker_unavailable() -> str | None:
    """Why no Docker engine can be used, or None when one answers (checked in a few seconds at most)."""
    # docker-py (used by testcontainers) looks only here; answering early avoids a leaked socket warning
    configured = os.environ.get("DOCKER_HOST") or (Path.home() / ".testcontainers.properties").exists()
    if not configured and not Path("/var/run/docker.sock").exists():
        return "no DOCKER_HOST and no /var/run/docker.sock"
    try:
        import docker
    except ImportError:
        return "the docker Python package is not installed"
    try:
        client = docker.from_env(timeout=3)
    except Exception as e:
        return f"no Docker engine answers ({type(e).__name__})"
    try:
        client.ping()
    except Exception as e:
        return f"no Docker engine answers ({type(e).__name__})"
    finally:
        client.close()
    return None


@pytest.fixture(scope="session")
def engine_qdrant_url() -> Iterator[str]:
    """URL of a Qdrant server for the whole session, or skip with the reason."""
    url = os.environ.get("HIERQDRANT_TEST_QDRANT_URL")
    if url:
        yield url
        return
    reason = _docker_unavailable()
    if reason:
        pytest.skip(f"Qdrant server tests need Docker or HIERQDRANT_TEST_QDRANT_URL: {reason}")
    try:
        from testcontainers.community.qdrant import QdrantContainer
    except ImportError:  # older testcontainers
        from testcontainers.qdrant import QdrantContainer
    container: Any = QdrantContainer(image=ENGINE_QDRANT_IMAGE)
    try:
        container.start()
    except Exception as e:
        pytest.skip(f"cannot start {ENGINE_QDRANT_IMAGE} with testcontainers: {type(e).__name__}: {e}")
    try:
        host = container.get_container_host_ip()
        port = container.get_exposed_port(6333)
        yield f"http://{host}:{port}"
    finally:
        container.stop()


def engine_make(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Any:
    """A fresh engine of ``kind`` (server: a connection to the session's server)."""
    from qdrant_client import QdrantClient

    from hierqdrant.store.engines import EdgeEngine, QdrantEngine, connect

    if kind == "edge":
        return EdgeEngine(tmp_path / "edge-data")
    if kind == "local":
        return QdrantEngine(QdrantClient(":memory:"))
    if kind == "server":
        url = request.getfixturevalue("engine_qdrant_url")
        return connect(url)
    raise ValueError(kind)


@pytest.fixture
def engine_created() -> list[str]:
    """Names of the collections a test created through ``engine_name`` (deleted after the test)."""
    return []


@pytest.fixture(params=ENGINE_KINDS)
def engine_any(request: pytest.FixtureRequest, tmp_path: Path, engine_created: list[str]) -> Iterator[Any]:
    """Each engine kind in turn (edge, local, server); closed, and its test collections deleted, after."""
    engine = engine_make(request.param, tmp_path, request)
    try:
        yield engine
    finally:
        for name in engine_created:
            try:
                engine.delete(name)
            except Exception:
                pass
        engine.close()


@pytest.fixture
def engine_name(engine_any: Any, engine_created: list[str]) -> str:
    """A collection name unique to this test (a server is shared across the session); deleted after."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    engine_created.append(name)
    return name
