"""A FastAPI service answering hierarchical queries with ``AsyncHierarchicalSearcher``.

Run (FastAPI and uvicorn come with the ``serve`` extra; hierqdrant itself does not need them)::

    pip install "hierqdrant[serve]"
    HQ_URL=local:./qdrant HQ_COLLECTION=birds uvicorn examples.fastapi_app:app

    curl -s localhost:8000/search -H 'content-type: application/json' \\
         -d '{"vector": [0.1, ...], "k": 5}'
    curl -s 'localhost:8000/similar/3f1c…?k=5'        # "more like this": a stored point's id
    open http://localhost:8000/docs                    # the OpenAPI page (/openapi.json)

``HQ_COLLECTION`` names the collection; ``HQ_URL`` (else ``QDRANT_URL``) says where it is, as the CLI's
``--url``: a Qdrant server or cloud (``http(s)://host:port``, with ``QDRANT_API_KEY``; checked at start-up),
``local:DIR`` (a folder written by qdrant-client's local mode, ``QdrantClient(path=DIR)``) or ``:memory:``.
There is no default: the async searcher reads through ``AsyncQdrantClient``, which cannot open hierqdrant's
embedded store (the CLI's default without ``--url``), so without ``HQ_URL`` the import stops with one line
saying so.

One searcher is opened at start-up (it reads the collection's model once) and shared by every request:
its ``auto`` policy is thread- and task-safe, and each search awaits one to three batched Qdrant calls, so
the event loop keeps serving other requests meanwhile. ``make_app`` takes the client, so a test can pass
``AsyncQdrantClient(":memory:")`` or a local folder; nothing here is imported by hierqdrant itself.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

# pydantic ships with qdrant-client. The models live at module level: FastAPI resolves the (string, under
# ``from __future__ import annotations``) annotations of the endpoints in this module's namespace.
from pydantic import BaseModel, Field
from qdrant_client import AsyncQdrantClient

from hierqdrant import AsyncHierarchicalSearcher, HierqdrantError, SearchHit, connect
from hierqdrant.core.errors import InputError
from hierqdrant.store.engines.client import insecure_key_warning

MISSING_URL = (
    "examples.fastapi_app: HQ_COLLECTION is set but HQ_URL is not — set HQ_URL (or QDRANT_URL) to a Qdrant "
    "server or a qdrant-client local-mode folder, e.g. HQ_URL=http://localhost:6333 or HQ_URL=local:./qdrant "
    "(the async searcher cannot open the embedded store)"
)


class SearchRequest(BaseModel):
    """``POST /search``: a query vector and the search's options."""

    vector: list[float] = Field(description="a raw feature (the extractor's output) or an already projected vector")
    k: int = Field(10, ge=1, le=1000, description="how many hits")
    alpha: float | None = Field(None, description="the weight of the hierarchy (default: the collection model's α)")
    explain: bool = Field(False, description="add each hit's explanation (class names, heights, α, strategy)")


class Hit(BaseModel):
    """One hit, as :meth:`SearchHit.to_dict`: D, the cosine, the lowest common ancestor and the payload."""

    id: str
    distance: float
    cosine: float
    lca: int
    lca_height: int
    leaf: int | None
    payload: dict[str, Any]
    explanation: dict[str, Any] | None = None  # only with ``explain``


class Stats(BaseModel):
    """``GET /stats``: the shared searcher's counters since start-up."""

    queries: int
    certified: int
    fallbacks: int
    reads: int


def _hits(found: list[SearchHit], explain: bool) -> list[Hit]:
    # validated from to_dict: ``explanation`` stays unset (and out of the JSON) unless asked for
    return [Hit.model_validate(h.to_dict(explanation=explain)) for h in found]


def make_app(client: AsyncQdrantClient, collection: str, **options: Any) -> Any:
    """A FastAPI app searching ``collection`` (``options``: the searcher's, e.g. ``strategy="exact"``)."""
    from fastapi import FastAPI, HTTPException, Query

    state: dict[str, AsyncHierarchicalSearcher] = {}

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        state["searcher"] = await AsyncHierarchicalSearcher.open(client, collection, **options)
        try:
            yield
        finally:
            await state["searcher"].close()

    app = FastAPI(title=f"hierarchical search over {collection}", lifespan=lifespan)

    @app.post("/search", response_model_exclude_unset=True)
    async def search(request: SearchRequest) -> list[Hit]:
        """The top-k points by D for a feature vector."""
        try:
            found = await state["searcher"].search(
                request.vector, request.k, alpha=request.alpha, explain=request.explain
            )
        except HierqdrantError as e:  # a user error (wrong width, NaN, …): one line, no traceback
            raise HTTPException(status_code=422, detail=str(e)) from None
        return _hits(found, request.explain)

    @app.get("/similar/{point_id}", response_model_exclude_unset=True)
    async def similar(point_id: str, k: int = Query(10, ge=1, le=1000)) -> list[Hit]:
        """More like this: the top-k points by D for a stored point (the point itself left out)."""
        try:
            found = await state["searcher"].search(point_id, k)
        except HierqdrantError as e:
            raise HTTPException(status_code=404 if "no point" in str(e) else 422, detail=str(e)) from None
        return _hits(found, False)

    @app.get("/stats")
    async def stats() -> Stats:
        """How many queries, how many ``auto`` searches were certified or fell back, how many reads."""
        s = state["searcher"].stats
        return Stats(queries=s.queries, certified=s.certified, fallbacks=s.fallbacks, reads=s.reads)

    return app


def client_from_url(url: str, api_key: str | None = None) -> AsyncQdrantClient:
    """An ``AsyncQdrantClient`` for what the CLI's ``--url`` takes: ``http(s)://host:port``, ``local:DIR`` or
    ``:memory:``. A server URL is checked as the CLI checks it (:func:`hierqdrant.connect`: its form, then one
    request); a bad one raises a one-line :class:`HierqdrantError`."""
    if url == ":memory:":
        return AsyncQdrantClient(location=":memory:")
    if url.startswith("local:"):
        path = url[len("local:") :]
        if not path:
            raise InputError("empty path in 'local:' URL", "use local:<directory>, e.g. HQ_URL=local:./qdrant")
        if not Path(path).is_dir():
            raise InputError(f"no local-mode folder {path!r}", "name the folder a QdrantClient(path=...) wrote")
        return AsyncQdrantClient(path=path)
    connect(url, api_key).close()  # the CLI's checks: a well-formed URL, a server that answers
    with insecure_key_warning(url, api_key):  # an API key over http: connect has said so once already
        # connect's request replaces the client's own version check (which only warns), as in the CLI
        return AsyncQdrantClient(url=url, api_key=api_key, check_compatibility=False)


def _from_environment(environ: Mapping[str, str] = os.environ) -> Any:
    name = "HQ_URL" if environ.get("HQ_URL") else "QDRANT_URL"
    url = environ.get(name)
    if not url:
        raise SystemExit(MISSING_URL)
    try:
        client = client_from_url(url, environ.get("QDRANT_API_KEY") or None)
    except HierqdrantError as e:  # one line, as the CLI prints it
        raise SystemExit(f"examples.fastapi_app: {name}: {e}") from None
    return make_app(client, environ["HQ_COLLECTION"])


if os.environ.get("HQ_COLLECTION"):  # `uvicorn examples.fastapi_app:app`
    app = _from_environment()
