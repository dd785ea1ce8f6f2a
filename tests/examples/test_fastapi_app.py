"""``examples/fastapi_app.py`` as it is deployed: ``python -m uvicorn examples.fastapi_app:app`` in a subprocess,
configured by ``HQ_URL=local:DIR`` and ``HQ_COLLECTION``, answering real HTTP requests (httpx) on 127.0.0.1.

The collection is written by the synchronous engine into a qdrant-client local-mode folder, whose client is
closed before the server opens the folder (local mode locks it to one client). ``POST /search`` must return the
NumPy brute-force ranking, ``/openapi.json`` must describe the request body, and a missing or bad ``HQ_URL``
must stop the import with one line. FastAPI and uvicorn come with the ``serve`` extra (``pip install
"hierqdrant[serve]"``; ``dev`` includes it): without them the server tests skip, saying why, unless
``HIERQDRANT_REQUIRE_FASTAPI`` is set (CI): then they fail.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from qdrant_client import QdrantClient

import hierqdrant
from hierqdrant.store.collection import point_id
from hierqdrant.store.engines import QdrantEngine
from hierqdrant.store.search import HierarchicalSearcher
from tests.store.test_search import _fill, assert_same_ranking, brute_force, data  # noqa: F401 (fixture)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "fastapi_app.py"
COLLECTION = "pts"
# what the example reads; the tests give each server exactly the settings they mean to
SETTINGS = ("HQ_URL", "HQ_COLLECTION", "QDRANT_URL", "QDRANT_API_KEY")
START_S = 90  # imports (numpy, qdrant-client, FastAPI) and local mode's load, on a loaded machine
STOP_S = 15


def require_serving() -> Any:
    """httpx, once FastAPI and uvicorn import; else skip with the reason, or fail under HIERQDRANT_REQUIRE_FASTAPI."""
    missing = []
    for name in ("fastapi", "uvicorn", "httpx"):
        try:
            importlib.import_module(name)
        except ImportError as exc:
            missing.append(f"{name} ({exc})")
    if missing:
        if os.environ.get("HIERQDRANT_REQUIRE_FASTAPI"):
            pytest.fail(f"HIERQDRANT_REQUIRE_FASTAPI is set but not importable: {', '.join(missing)}")
        pytest.skip(f'not installed: {", ".join(missing)}: pip install "hierqdrant[serve]"')
    return importlib.import_module("httpx")


def _environment(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS}
    return {**env, **settings}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (uvicorn shuts down, closing the searcher), then SIGKILL; every wait bounded."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(STOP_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_S)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, data) -> dict[str, Any]:  # noqa: F811
    """The collection in a local-mode folder, and the synchronous searcher's "more like this" for one point."""
    path = tmp_path_factory.mktemp("local")
    engine = QdrantEngine(QdrantClient(path=str(path)))
    try:
        _fill(engine, COLLECTION, data)
        first = point_id(COLLECTION, data["keys"][0])
        by_id = HierarchicalSearcher(engine, COLLECTION, exact=True).search(first, 6)
    finally:
        engine.close()  # releases the folder's lock for the server
    return {"path": path, "first": first, "by_id": by_id}


@pytest.fixture(scope="module")
def server(folder: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    """(httpx, base URL) of ``uvicorn examples.fastapi_app:app`` serving the folder; stopped afterwards."""
    httpx = require_serving()
    port = _free_port()
    log = tmp_path_factory.mktemp("uvicorn") / "server.log"
    command = [sys.executable, "-m", "uvicorn", "examples.fastapi_app:app", "--host", "127.0.0.1",
               "--port", str(port), "--lifespan", "on", "--log-level", "warning", "--no-access-log"]  # fmt: skip
    env = _environment(HQ_URL=f"local:{folder['path']}", HQ_COLLECTION=COLLECTION)
    base = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_S
        while True:  # uvicorn listens once the lifespan has opened the searcher
            if proc.poll() is not None:
                pytest.fail(f"the server exited ({proc.returncode}) before answering:\n{log.read_text()}")
            try:
                if httpx.get(f"{base}/stats", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the server did not answer within {START_S} s:\n{log.read_text()}")
            time.sleep(0.1)
        yield httpx, base
    finally:
        _stop(proc)


def test_the_example_imports_without_fastapi_and_makes_no_app_without_a_collection(monkeypatch) -> None:
    # hierqdrant does not depend on FastAPI: the module imports anyway; HQ_COLLECTION unset: no app at import
    monkeypatch.delenv("HQ_COLLECTION", raising=False)
    spec = importlib.util.spec_from_file_location("fastapi_app", EXAMPLE)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    assert callable(example.make_app) and not hasattr(example, "app")


@pytest.mark.slow  # a uvicorn server in a subprocess
def test_search_answers_with_the_brute_force_ranking(server, data) -> None:  # noqa: F811
    httpx, base = server
    query = data["queries"][0]
    got = httpx.post(f"{base}/search", json={"vector": query.tolist(), "k": 5}, timeout=30)
    assert got.status_code == 200, got.text
    hits = got.json()
    assert all("explanation" not in h for h in hits)  # only when asked for
    assert_same_ranking([hierqdrant.SearchHit(**h) for h in hits], *brute_force(data, query, 5, data["model"].alpha))

    query = data["queries"][3]
    got = httpx.post(f"{base}/search", json={"vector": query.tolist(), "k": 7, "alpha": 0.5, "explain": True},
                     timeout=30)  # fmt: skip
    assert got.status_code == 200, got.text
    hits = [hierqdrant.SearchHit(**h) for h in got.json()]
    assert_same_ranking(hits, *brute_force(data, query, 7, 0.5))
    assert all(h.explanation is not None and h.explanation["alpha"] == 0.5 for h in hits), hits[0].explanation


@pytest.mark.slow  # a uvicorn server in a subprocess
def test_user_errors_are_422_with_the_reason(server) -> None:
    httpx, base = server
    bad = httpx.post(f"{base}/search", json={"vector": [1.0, 2.0], "k": 5}, timeout=30)
    assert bad.status_code == 422 and "dims" in bad.json()["detail"], bad.text
    # the request model's own checks (FastAPI's validation errors)
    assert httpx.post(f"{base}/search", json={"vector": [1.0] * 8, "k": 0}, timeout=30).status_code == 422
    assert httpx.post(f"{base}/search", json={"k": 5}, timeout=30).status_code == 422


@pytest.mark.slow  # a uvicorn server in a subprocess
def test_openapi_describes_the_search_request(server) -> None:
    httpx, base = server
    got = httpx.get(f"{base}/openapi.json", timeout=30)
    assert got.status_code == 200, got.text
    spec = got.json()
    body = spec["paths"]["/search"]["post"]["requestBody"]
    assert body["required"] is True
    ref = body["content"]["application/json"]["schema"]["$ref"]
    request = spec["components"]["schemas"][ref.rpartition("/")[2]]
    assert set(request["properties"]) == {"vector", "k", "alpha", "explain"} and request["required"] == ["vector"]
    assert "/similar/{point_id}" in spec["paths"] and "/stats" in spec["paths"]
    assert httpx.get(f"{base}/docs", timeout=30).status_code == 200


@pytest.mark.slow  # a uvicorn server in a subprocess
def test_similar_answers_as_the_sync_searcher(server, folder) -> None:
    httpx, base = server
    got = httpx.get(f"{base}/similar/{folder['first']}", params={"k": 6}, timeout=30)
    assert got.status_code == 200, got.text
    hits = [hierqdrant.SearchHit(**h) for h in got.json()]
    want = folder["by_id"]
    assert folder["first"] not in [h.id for h in hits]  # the query point itself is left out
    assert_same_ranking(hits, [h.id for h in want], [h.distance for h in want])
    missing = httpx.get(f"{base}/similar/00000000-0000-0000-0000-000000000000", timeout=30)
    assert missing.status_code == 404 and "no point" in missing.json()["detail"], missing.text
    stats = httpx.get(f"{base}/stats", timeout=30).json()
    assert set(stats) == {"queries", "certified", "fallbacks", "reads"} and stats["queries"] >= 1


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({}, "HQ_URL"),
        ({"HQ_URL": "localhost"}, "invalid Qdrant URL"),
        ({"QDRANT_URL": "local:"}, "empty path"),
    ],
    ids=["no-url", "bad-url", "empty-local"],
)
@pytest.mark.parametrize("launcher", ["import", "uvicorn"])
def test_a_missing_or_bad_url_stops_the_import_with_one_line(
    launcher: str, settings: dict[str, str], says: str, tmp_path: Path
) -> None:
    if launcher == "uvicorn":
        require_serving()
        command = [sys.executable, "-m", "uvicorn", "examples.fastapi_app:app", "--port", str(_free_port())]
    else:
        command = [sys.executable, "-c", "import examples.fastapi_app"]
    env = _environment(HQ_COLLECTION=COLLECTION, **settings)
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0 and done.stdout == "", (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and len(lines) == 1, done.stderr
    assert lines[0].startswith("examples.fastapi_app: ") and says in lines[0], lines[0]
    if not settings:
        assert "HQ_URL=local:" in lines[0] and "HQ_URL=http" in lines[0]  # an example of each kind
