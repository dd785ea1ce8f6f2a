"""A FastAPI service answering hierarchical queries with ``AsyncHierarchicalSearcher``.

Run (FastAPI and uvicorn are not dependencies of hierqdrant; install them for this example)::

    pip install fastapi uvicorn
    QDRANT_URL=http://localhost:6333 HQ_COLLECTION=birds uvicorn examples.fastapi_app:app

    curl -s localhost:8000/search -H 'content-type: application/json' \\
         -d '{"vector": [0.1, ...], "k": 5}'
    curl -s 'localhost:8000/similar/3f1c…?k=5'        # "more like this": a stored point's id

One searcher is opened at start-up (it reads the collection's model once) and shared by every request:
its ``auto`` policy is thread- and task-safe, and each search awaits one to three batched Qdrant calls, so
the event loop keeps serving other requests meanwhile. ``make_app`` takes the client, so a test can pass
``AsyncQdrantClient(":memory:")`` or a local folder; nothing here is imported by hierqdrant itself.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from qdrant_client import AsyncQdrantClient

from hierqdrant import AsyncHierarchicalSearcher, HierqdrantError


def make_app(client: AsyncQdrantClient, collection: str, **options: Any) -> Any:
    """A FastAPI app searching ``collection`` (``options``: the searcher's, e.g. ``strategy="exact"``)."""
    from fastapi import FastAPI, HTTPException
    from pydantic import BaseModel, Field

    state: dict[str, AsyncHierarchicalSearcher] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state["searcher"] = await AsyncHierarchicalSearcher.open(client, collection, **options)
        try:
            yield
        finally:
            await state["searcher"].close()

    app = FastAPI(title=f"hierarchical search over {collection}", lifespan=lifespan)

    class Query(BaseModel):
        vector: list[float]  # a raw feature (the extractor's output) or an already projected vector
        k: int = Field(10, ge=1, le=1000)
        alpha: float | None = None  # default: the collection's model's α
        explain: bool = False

    def hits(found: list[Any], explain: bool) -> list[dict[str, Any]]:
        return [h.to_dict(explanation=explain) for h in found]

    @app.post("/search")
    async def search(q: Query) -> list[dict[str, Any]]:
        try:
            found = await state["searcher"].search(q.vector, q.k, alpha=q.alpha, explain=q.explain)
        except HierqdrantError as e:  # a user error (wrong width, NaN, …): one line, no traceback
            raise HTTPException(status_code=422, detail=str(e)) from None
        return hits(found, q.explain)

    @app.get("/similar/{point_id}")
    async def similar(point_id: str, k: int = 10) -> list[dict[str, Any]]:
        try:
            found = await state["searcher"].search(point_id, k)
        except HierqdrantError as e:
            raise HTTPException(status_code=404 if "no point" in str(e) else 422, detail=str(e)) from None
        return hits(found, False)

    @app.get("/stats")
    async def stats() -> dict[str, Any]:
        s = state["searcher"].stats
        return {"queries": s.queries, "certified": s.certified, "fallbacks": s.fallbacks, "reads": s.reads}

    return app


def _from_environment() -> Any:
    url = os.environ.get("QDRANT_URL", "http://localhost:6333")
    client = AsyncQdrantClient(url=url, api_key=os.environ.get("QDRANT_API_KEY"))
    return make_app(client, os.environ.get("HQ_COLLECTION", "images"))


if os.environ.get("HQ_COLLECTION"):  # `uvicorn examples.fastapi_app:app`
    app = _from_environment()
