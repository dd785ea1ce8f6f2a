"""The reads of :class:`~hierqdrant.store.engines.client.QdrantEngine`, over qdrant-client's ``AsyncQdrantClient``.

What :class:`~hierqdrant.store.async_search.AsyncHierarchicalSearcher` needs and nothing more: whether a
collection exists, its configuration (vector sizes, replication factor) and info dict, the model stored
in its sidecar, a batch of Query API requests, and points with their vectors (a point id as the query).
Writes stay with the synchronous engines (ingest, attach); an application serving queries from an event
loop reads. Errors, URL wording and the sidecar layout are the synchronous engine's
(:mod:`~hierqdrant.store.engines.client_common`), so both read a model the same way.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from contextlib import AbstractContextManager, suppress
from typing import Any

from qdrant_client import AsyncQdrantClient, models

from hierqdrant.core.errors import InputError, NotFoundError
from hierqdrant.store.engines.base import METADATA_KEY, SIDECAR_SUFFIX, Hit, Record, check_ids, hits_of
from hierqdrant.store.engines.client_common import (
    _MANIFEST_ID,
    check_manifest,
    chunk_batches,
    join_chunks,
    safe_url,
    translate_errors,
)
from hierqdrant.store.engines.vectors import _one_vector, _with_vector

__all__ = ["AsyncQdrantEngine"]


class AsyncQdrantEngine:
    """Async reads of a Qdrant server, cluster or cloud, or of qdrant-client's async local mode.

    ``client`` is kept as :attr:`client`; :meth:`close` closes it.
    """

    kind = "qdrant"
    place = "at"
    not_found_hint = "check the name (hierqdrant collections) or --url"
    model_chunk_bytes = 3 * 1024 * 1024  # the sync engine's default, for manifests that do not say

    def __init__(self, client: AsyncQdrantClient, *, location: str | None = None) -> None:
        if not isinstance(client, AsyncQdrantClient):
            raise InputError(
                f"expected an AsyncQdrantClient, got {type(client).__name__}", "pass a qdrant_client.AsyncQdrantClient"
            )
        self.client = client
        inner = getattr(client, "_client", None)
        self.local = type(inner).__name__ == "AsyncQdrantLocal"
        uri = getattr(inner, "rest_uri", None)
        where = str(getattr(inner, "location", "")) if self.local else (safe_url(uri) if uri else "qdrant")
        self.location = safe_url(location) if location and "://" in location else (location or where)

    def __repr__(self) -> str:
        return f"AsyncQdrantEngine({self.location!r})"

    def _not_found(self, name: str) -> NotFoundError:
        return NotFoundError(f"collection {name!r} not found {self.place} {self.location}", self.not_found_hint)

    def _errors(self, what: str, name: str | None = None) -> AbstractContextManager[None]:
        """qdrant-client exceptions as one-line hierqdrant errors, worded as the synchronous engine's."""
        return translate_errors(self, what, name)

    async def collections(self) -> list[str]:
        """User collections, sorted; sidecars hidden."""
        with self._errors("list collections"):
            cols = (await self.client.get_collections()).collections
        return sorted(c.name for c in cols if not c.name.endswith(SIDECAR_SUFFIX))

    async def exists(self, name: str) -> bool:
        with self._errors("check the collection", name):
            return bool(await self.client.collection_exists(name))

    async def collection_info(self, name: str) -> models.CollectionInfo:
        """The collection's configuration and status (one call)."""
        with self._errors("read the collection", name):
            return await self.client.get_collection(name)

    async def replication_factor(self, name: str) -> int:
        """The collection's replication factor (1 where the server or local mode does not say)."""
        return int((await self.collection_info(name)).config.params.replication_factor or 1)

    async def _manifest(self, name: str) -> dict[str, Any] | None:
        side = name + SIDECAR_SUFFIX
        with self._errors("read the model", side):
            if not await self.client.collection_exists(side):
                return None
            recs = await self.client.retrieve(side, [_MANIFEST_ID], with_payload=True, with_vectors=False)
        return check_manifest(name, recs[0].payload or {}) if recs else None

    async def read_info(self, name: str, config: models.CollectionInfo | None = None) -> dict[str, Any] | None:
        """The info dict from the collection metadata (``config``: an already read ``get_collection``), else
        from the sidecar manifest; ``None`` when there is none."""
        config = config or await self.collection_info(name)
        meta = getattr(config.config, "metadata", None)
        if isinstance(meta, dict) and isinstance(meta.get(METADATA_KEY), dict):
            return dict(meta[METADATA_KEY])
        manifest = await self._manifest(name)
        return dict(manifest["info"]) if manifest and isinstance(manifest.get("info"), dict) else None

    async def read_model(self, name: str) -> tuple[dict[str, bytes], dict[str, Any]] | None:
        """The model files from the sidecar, each checked against its size and sha256, and the info dict."""
        if not await self.exists(name):
            raise self._not_found(name)
        manifest = await self._manifest(name)
        if manifest is None:
            return None
        side = name + SIDECAR_SUFFIX
        files: dict[str, bytes] = {}
        for fname, n, size, sha, batches in chunk_batches(name, manifest, self.model_chunk_bytes):
            payloads = []
            for ids in batches:
                with self._errors("read the model", side):
                    recs = await self.client.retrieve(side, ids, with_payload=True, with_vectors=False)
                payloads += [r.payload or {} for r in recs]
            files[fname] = join_chunks(name, fname, n, size, sha, payloads)
        return files, dict(manifest.get("info") or {})

    async def query_batch(
        self,
        name: str,
        requests: Sequence[models.QueryRequest],
        *,
        consistency: models.ReadConsistencyType | int | None = None,
    ) -> list[list[Hit]]:
        """One ``query_batch_points`` call for the whole batch; ``consistency`` as for the sync engine."""
        if not requests:
            return []
        with self._errors("query", name), warnings.catch_warnings():
            # local mode is always exact: its warning that search params have no effect is noise here
            warnings.filterwarnings("ignore", message="Local mode performs exact")
            responses = await self.client.query_batch_points(name, requests=list(requests), consistency=consistency)
        return [hits_of(r.points) for r in responses]

    async def retrieve_vectors(self, name: str, ids: Sequence[str], vector: str) -> list[Record]:
        """The points ``ids`` that exist, with the vector named ``vector`` (``""``: the unnamed one)."""
        pids: list[Any] = check_ids(ids)
        with self._errors("retrieve", name):
            recs = await self.client.retrieve(name, pids, with_payload=True, with_vectors=_with_vector(vector))
        return [Record(str(r.id), _one_vector(r.vector, vector), r.payload or {}) for r in recs]

    async def close(self) -> None:
        """Close the client."""
        with suppress(Exception):  # closing twice or after a lost connection is harmless
            await self.client.close()
