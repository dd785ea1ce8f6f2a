"""The server engine: a Qdrant server, cluster or cloud (or qdrant-client's local mode) via ``qdrant-client``.

Where the model lives:

- the small info dict in the collection's metadata under ``"hierqdrant"`` (server >= 1.16 and local mode);
- the model files in a sidecar collection ``<name>--hq-model`` (one 1-d vector per point): a manifest point
  (file names, sizes, sha256, the info dict, a generation token) and chunk points holding base64 of at most
  :attr:`QdrantEngine.model_chunk_bytes` raw bytes each (4 MiB of base64 at the default).

A model write stores the new generation's chunks, then the manifest (one point: the switch-over), then
deletes other generations; metadata is cleared first and set last, so a reader sees either a complete model
or a manifest whose hashes expose what is missing. Sidecars are hidden from :meth:`QdrantEngine.collections`
and deleted with their collection. Nothing here assumes a single node.
"""

from __future__ import annotations

import base64
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models

from hierqdrant.core.errors import EngineError, HierqdrantError, InputError, NotFoundError
from hierqdrant.core.faults import fault
from hierqdrant.store.engines.base import (
    METADATA_KEY,
    SIDECAR_SUFFIX,
    EngineBase,
    Hit,
    Record,
    check_batch_size,
    check_ids,
    hits_of,
    plain_json,
    sha256_hex,
    utc_now,
)
from hierqdrant.store.engines.client_common import (
    _MANIFEST_ID,
    _REQUEST_BYTES,
    _SIDECAR_FORMAT,
    InsecureApiKeyWarning,
    check_manifest,
    chunk_batches,
    chunk_id,
    describe,
    insecure_key_warning,
    join_chunks,
    safe_url,
    translate_errors,
)

__all__ = ["InsecureApiKeyWarning", "QdrantEngine", "insecure_key_warning", "safe_url"]


class QdrantEngine(EngineBase):
    """Engine over a ``QdrantClient`` (server, cloud, cluster, or local mode ``":memory:"`` / ``path=...``).

    ``client`` is kept as :attr:`client`. In local mode payload indexes are accepted but have no effect
    (qdrant-client evaluates filters in Python) and :meth:`optimize` is a no-op.
    """

    kind = "qdrant"
    clustered = True  # create takes shard_number / replication_factor (engines.cluster)
    not_found_hint = "check the name (hierqdrant collections) or --url"
    model_chunk_bytes = 3 * 1024 * 1024
    """Raw bytes per sidecar chunk point (base64 makes it 4 MiB)."""
    optimize_timeout = 3600.0
    """Seconds :meth:`optimize` waits for the collection to turn green."""
    timeout: float | None = None
    """Seconds one request may take, all of it, when :func:`~hierqdrant.store.engines.connect` made the
    client (its errors name it); ``None`` for a client made elsewhere."""

    def __init__(self, client: QdrantClient, *, location: str | None = None) -> None:
        if not isinstance(client, QdrantClient):
            raise InputError(f"expected a QdrantClient, got {type(client).__name__}", "pass a QdrantClient")
        self.client = client
        loc, self.local = describe(client)
        self.location = safe_url(location) if location and "://" in location else (location or loc)
        self._version: tuple[int, ...] | None = None
        self._replicas: dict[str, int] = {}  # replication factor of the collection created last (its sidecar's)

    # -- errors ------------------------------------------------------------------------------------------

    def _errors(self, what: str, name: str | None = None) -> AbstractContextManager[None]:
        """Turn qdrant-client exceptions into one-line hierqdrant errors (never echoing credentials)."""
        return translate_errors(self, what, name)

    def ping(self) -> None:
        """Check that the server answers (and accepts the API key); raise ``EngineError`` otherwise."""
        with self._errors("list collections"):
            self.client.get_collections()

    @property
    def server_version(self) -> tuple[int, ...] | None:
        """The server's version (local mode: the client's), or ``None`` when it does not say."""
        if self._version is None:
            try:
                with self._errors("read the server version"):
                    v = self.client.info().version
                self._version = tuple(int(x) for x in v.split("-")[0].split(".")[:3])
            except (HierqdrantError, ValueError, AttributeError):
                return None
        return self._version

    # -- collections -------------------------------------------------------------------------------------

    def collections(self) -> list[str]:
        """User collections, sorted; sidecars hidden."""
        with self._errors("list collections"):
            cols = self.client.get_collections().collections
        return sorted(c.name for c in cols if not c.name.endswith(SIDECAR_SUFFIX))

    def exists(self, name: str) -> bool:
        """Whether the collection exists."""
        with self._errors("check the collection", name):
            return bool(self.client.collection_exists(name))

    def _create(
        self,
        name: str,
        dim: int,
        integer_index: list[str],
        keyword_index: list[str],
        hnsw_m: int | None,
        hnsw_ef_construct: int | None,
        model: tuple[dict[str, bytes], dict[str, Any]] | None,
        shard_number: int | None = None,
        replication_factor: int | None = None,
    ) -> None:
        """Create a cosine collection with INTEGER / KEYWORD payload indexes (dropping a stale model
        sidecar), then store ``model``; one stopped in between has none (``create_collection`` adds it).
        ``shard_number`` / ``replication_factor`` go to the server (``None``: its defaults); the sidecar
        gets the same replication factor, so the model survives what the points survive."""
        hnsw = None
        if hnsw_m is not None or hnsw_ef_construct is not None:
            hnsw = models.HnswConfigDiff(m=hnsw_m, ef_construct=hnsw_ef_construct)
        with self._errors("create the collection", name):
            if self.client.collection_exists(name + SIDECAR_SUFFIX):  # left by a collection deleted elsewhere
                self.client.delete_collection(name + SIDECAR_SUFFIX)
            self.client.create_collection(
                name,
                vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE),
                hnsw_config=hnsw,
                shard_number=shard_number,
                replication_factor=replication_factor,
            )
            self._replicas = {name: replication_factor} if replication_factor else {}
            with warnings.catch_warnings():
                # local mode warns that payload indexes have no effect there; that is expected
                warnings.filterwarnings("ignore", message="Payload indexes have no effect")
                for field in integer_index:
                    self.client.create_payload_index(name, field, models.PayloadSchemaType.INTEGER, wait=True)
                for field in keyword_index:
                    self.client.create_payload_index(name, field, models.PayloadSchemaType.KEYWORD, wait=True)
        fault("after-create")
        if model is not None:
            self._write_model(name, *model)

    def delete(self, name: str) -> None:
        """Delete the collection and its model sidecar (missing ones are ignored)."""
        with self._errors("delete the collection"):
            for n in (name, name + SIDECAR_SUFFIX):
                if self.client.collection_exists(n):
                    self.client.delete_collection(n)

    def _collection(self, name: str) -> models.CollectionInfo:
        with self._errors("read the collection", name):
            return self.client.get_collection(name)

    def vector_size(self, name: str) -> int:
        """Size of the collection's unnamed vector."""
        vectors = self._collection(name).config.params.vectors
        if isinstance(vectors, models.VectorParams):
            return int(vectors.size)
        if isinstance(vectors, dict) and set(vectors) == {""}:
            return int(vectors[""].size)
        raise InputError(
            f"collection {name!r} uses named vectors",
            "use a collection with one unnamed vector (hierqdrant ingest)",
        )

    def count(self, name: str, filter: models.Filter | None = None) -> int:
        """Exact count of the points matching ``filter``."""
        with self._errors("count", name):
            return int(self.client.count(name, count_filter=filter, exact=True).count)

    # -- points ------------------------------------------------------------------------------------------

    def _upsert_batch(
        self, name: str, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[dict[str, Any]]
    ) -> None:
        """One ``models.Batch`` upsert, acknowledged (``wait=True``)."""
        batch = models.Batch(
            ids=list[Any](check_ids(ids)),
            vectors=vectors.tolist(),
            payloads=[plain_json(p) for p in payloads],
        )
        with self._errors("upsert", name):
            self.client.upsert(name, points=batch, wait=True)

    def _set_payload_groups(
        self, name: str, key: str, parent: str | None, groups: list[tuple[dict[str, Any], list[Any]]]
    ) -> None:
        """One ``batch_update_points`` call for the batch's groups."""
        ops = [
            models.SetPayloadOperation(set_payload=models.SetPayload(payload=payload, points=g, key=parent))
            for payload, g in groups
        ]
        with self._errors("set payload", name):
            try:
                self.client.batch_update_points(name, ops, wait=True)
            except KeyError as e:  # local mode's way of saying a point is missing
                raise NotFoundError(
                    f"no point with id {e.args[0] if e.args else '?'} in collection {name!r}",
                    "upsert the point first",
                ) from None

    def _stored_ids(self, name: str, ids: list[str]) -> list[Any]:
        """A retrieve without payload or vectors."""
        pids = check_ids(ids)
        with self._errors("retrieve", name):
            recs = self.client.retrieve(name, pids, with_payload=False, with_vectors=False)
        return [r.id for r in recs]

    def scroll(
        self,
        name: str,
        *,
        with_vectors: bool = False,
        filter: models.Filter | None = None,
        batch_size: int = 1024,
    ) -> Iterator[list[Record]]:
        """All points (matching ``filter``) in batches, with payloads (and stored, normalised vectors)."""
        check_batch_size(batch_size)
        if not self.exists(name):
            raise self._not_found(name)
        return self._scroll(name, bool(with_vectors), filter, batch_size)

    def _scroll(
        self, name: str, with_vectors: bool, filter: models.Filter | None, batch_size: int
    ) -> Iterator[list[Record]]:
        offset: Any = None
        while True:
            with self._errors("scroll", name):
                recs, offset = self.client.scroll(
                    name,
                    scroll_filter=filter,
                    limit=batch_size,
                    offset=offset,
                    with_payload=True,
                    with_vectors=with_vectors,
                )
            if recs:
                yield [
                    Record(
                        str(r.id),
                        np.asarray(_unnamed(r.vector), dtype=np.float32) if with_vectors and r.vector else None,
                        r.payload or {},
                    )
                    for r in recs
                ]
            if offset is None:
                return

    def query_batch(
        self,
        name: str,
        requests: Sequence[models.QueryRequest],
        *,
        consistency: models.ReadConsistencyType | int | None = None,
    ) -> list[list[Hit]]:
        """One ``query_batch_points`` call for the whole batch; ``consistency``: how many replicas of each
        shard answer (``None``: the server's default, one)."""
        if not requests:
            return []
        with self._errors("query", name), warnings.catch_warnings():
            # local mode is always exact: its warning that search params have no effect is noise here
            warnings.filterwarnings("ignore", message="Local mode performs exact")
            responses = self.client.query_batch_points(name, requests=list(requests), consistency=consistency)
        return [hits_of(r.points) for r in responses]

    def replication_factor(self, name: str) -> int:
        """The collection's replication factor (1 where the server or local mode does not say)."""
        return int(self._collection(name).config.params.replication_factor or 1)

    def optimize(self, name: str) -> None:
        """Wait until the server's optimizers are done (status green); nudge a grey collection once.

        A no-op in local mode, which has no index to build.
        """
        if self.local:
            return
        deadline = time.monotonic() + self.optimize_timeout
        nudged = False
        while True:
            status = self._collection(name).status
            if status == models.CollectionStatus.GREEN:
                return
            if status == models.CollectionStatus.RED:
                raise EngineError(
                    f"collection {name!r} at {self.location} is red (an optimizer failed)",
                    "check the server's logs",
                )
            if status == models.CollectionStatus.GREY and not nudged:
                with self._errors("start the optimizers", name):
                    self.client.update_collection(name, optimizers_config=models.OptimizersConfigDiff())
                nudged = True
            if time.monotonic() > deadline:
                raise EngineError(
                    f"collection {name!r} at {self.location} still optimizing after {self.optimize_timeout:.0f} s",
                    "wait and retry, or search it as it is",
                )
            time.sleep(0.5)

    # -- model -------------------------------------------------------------------------------------------

    def _set_metadata(self, name: str, value: dict[str, Any] | None) -> bool:
        """Set ``metadata["hierqdrant"]``; False where the server does not support collection metadata."""
        version = self.server_version
        if version is not None and version < (1, 16):
            return False
        try:
            with self._errors("update the collection metadata", name):
                self.client.update_collection(name, metadata={METADATA_KEY: value})
        except (InputError, EngineError):
            return False  # an older server (or proxy) without metadata: the sidecar manifest has the info
        return True

    def _write_model(self, name: str, files: dict[str, bytes], info: dict[str, Any]) -> None:
        """Store the model in the sidecar collection and the info dict in the collection metadata."""
        if not self.exists(name):
            raise self._not_found(name)
        side = name + SIDECAR_SUFFIX
        gen = uuid.uuid4().hex
        chunk = int(self.model_chunk_bytes)
        self._set_metadata(name, None)
        with self._errors("store the model", side):
            if not self.client.collection_exists(side):
                self.client.create_collection(
                    side,
                    vectors_config=models.VectorParams(size=1, distance=models.Distance.COSINE),
                    replication_factor=self._replicas.get(name),
                )
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message="Payload indexes have no effect")
                    # strict-mode servers (e.g. some cloud tiers) refuse deletes by an unindexed filter
                    self.client.create_payload_index(side, "gen", models.PayloadSchemaType.KEYWORD, wait=True)
            manifest_files: dict[str, dict[str, Any]] = {}
            pending: list[models.PointStruct] = []
            pending_bytes = 0
            for fname, data in files.items():
                n = max(1, -(-len(data) // chunk))
                manifest_files[fname] = {"sha256": sha256_hex(data), "size": len(data), "chunks": n}
                for k in range(n):
                    b64 = base64.b64encode(data[k * chunk : (k + 1) * chunk]).decode("ascii")
                    pending.append(
                        models.PointStruct(
                            id=chunk_id(gen, fname, k),
                            vector=[1.0],
                            payload={"hq_model": "chunk", "gen": gen, "file": fname, "index": k, "data": b64},
                        )
                    )
                    pending_bytes += len(b64)
                    if pending_bytes >= _REQUEST_BYTES:
                        self.client.upsert(side, points=pending, wait=True)
                        pending, pending_bytes = [], 0
            if pending:
                self.client.upsert(side, points=pending, wait=True)
            manifest = {
                "hq_model": "manifest",
                "format": _SIDECAR_FORMAT,
                "collection": name,
                "gen": gen,
                "chunk_bytes": chunk,
                "files": manifest_files,
                "info": info,
                "written": utc_now(),
            }
            self.client.upsert(
                side, points=[models.PointStruct(id=_MANIFEST_ID, vector=[1.0], payload=manifest)], wait=True
            )
            self.client.delete(
                side,
                points_selector=models.FilterSelector(
                    filter=models.Filter(
                        must_not=[models.FieldCondition(key="gen", match=models.MatchValue(value=gen))]
                    )
                ),
                wait=True,
            )
        self._set_metadata(name, info)

    def _update_info(self, name: str, info: dict[str, Any]) -> None:
        """Replace the info dict in the manifest and the metadata (which :meth:`read_info` prefers): the
        metadata first for ``incomplete``, else last, so no reader sees "complete" before it is true."""
        metadata_last = info.get("state") != "incomplete"
        if not metadata_last:
            self._set_metadata(name, info)
        manifest = self._manifest(name)
        if manifest is not None:
            with self._errors("store the model info", name + SIDECAR_SUFFIX):
                self.client.overwrite_payload(
                    name + SIDECAR_SUFFIX, {**manifest, "info": info}, points=[_MANIFEST_ID], wait=True
                )
        if metadata_last:
            self._set_metadata(name, info)

    def _manifest(self, name: str) -> dict[str, Any] | None:
        side = name + SIDECAR_SUFFIX
        with self._errors("read the model", side):
            if not self.client.collection_exists(side):
                return None
            recs = self.client.retrieve(side, [_MANIFEST_ID], with_payload=True, with_vectors=False)
        if not recs:
            return None
        return check_manifest(name, recs[0].payload or {})

    def read_model(self, name: str) -> tuple[dict[str, bytes], dict[str, Any]] | None:
        """Read the model from the sidecar and verify every file's size and sha256."""
        if not self.exists(name):
            raise self._not_found(name)
        manifest = self._manifest(name)
        if manifest is None:
            return None
        side = name + SIDECAR_SUFFIX
        files: dict[str, bytes] = {}
        for fname, n, size, sha, batches in chunk_batches(name, manifest, self.model_chunk_bytes):
            payloads = []
            for ids in batches:
                with self._errors("read the model", side):
                    recs = self.client.retrieve(side, ids, with_payload=True, with_vectors=False)
                payloads += [r.payload or {} for r in recs]
            files[fname] = join_chunks(name, fname, n, size, sha, payloads)
        return files, dict(manifest.get("info") or {})

    def read_info(self, name: str) -> dict[str, Any] | None:
        """The info dict from the collection metadata (one call), else from the sidecar manifest."""
        meta = getattr(self._collection(name).config, "metadata", None)
        if isinstance(meta, dict) and isinstance(meta.get(METADATA_KEY), dict):
            return dict(meta[METADATA_KEY])
        manifest = self._manifest(name)
        return dict(manifest["info"]) if manifest and isinstance(manifest.get("info"), dict) else None

    def close(self) -> None:
        """Close the client."""
        try:
            self.client.close()
        except Exception:  # closing twice or after a lost connection is harmless
            pass


def _unnamed(v: Any) -> Any:
    if isinstance(v, dict):
        return v.get("")
    return v
