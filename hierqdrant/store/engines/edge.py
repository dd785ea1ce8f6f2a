"""The embedded engine: Qdrant's engine in-process through ``qdrant-edge-py`` (one EdgeShard per collection).

Layout under the data directory::

    <data_dir>/<name>/shard/              the EdgeShard (segments, WAL)
    <data_dir>/<name>/collection.json     dim, distance, payload indexes, HNSW settings, creation time,
                                          info dict, the model's folder and the sha256 of every model file
    <data_dir>/<name>/model-<gen>/<files> the fitted model's files (``model/`` in collections made before)
    <data_dir>/.<name>.lock               the writer lock (:mod:`~hierqdrant.store.engines.edge_files`)

A collection is built in a temporary directory — shard, model files, then ``collection.json``, the last
file written — and renamed into place, so ``<name>/`` always holds a complete ``collection.json``. A model
write stores its files in a new ``model-<gen>/`` and switches ``collection.json`` to it last. Every writer
holds the collection's lock; a directory at ``<name>/`` without ``collection.json`` is damaged (or not a
collection) and is never replaced except by :meth:`EdgeEngine.delete`. Every JSON/model write is atomic and
durable (:func:`hierqdrant.core.fileio.atomic_write`). An opened shard belongs to one generation of its
collection (:mod:`~hierqdrant.store.engines.edge_state`, checked with a ``stat`` per call): one deleted and
made again since, by any process, is closed unflushed and the new one opened.

Queries arrive as qdrant-client models and are translated into ``qdrant_edge`` objects by
:mod:`hierqdrant.store.engines.edge_convert` (:func:`edge_request`, re-exported here), which raises
``InputError`` naming any construct the embedded engine does not run.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe
from qdrant_client import models

from hierqdrant.core.errors import InputError, NotFoundError
from hierqdrant.core.faults import fault
from hierqdrant.core.fileio import atomic_write, fsync_dir
from hierqdrant.store.engines.base import (
    EngineBase,
    Hit,
    Record,
    check_batch_size,
    check_collection_name,
    check_model_file,
    check_model_files,
    corrupt_model,
    hits_of,
    to_point_id,
    utc_now,
)
from hierqdrant.store.engines.edge_convert import (
    edge_expression,
    edge_filter,
    edge_params,
    edge_request,
    fast_ids,
    point_error,
)
from hierqdrant.store.engines.edge_files import (
    MODEL_DIR_RE,
    collection_lock,
    holds_collection_files,
    lock_holder,
    meta_bytes,
    remove_leftovers,
    retry_while_busy,
    stale_paths,
    store_model_files,
    temporary_dir,
)
from hierqdrant.store.engines.edge_space import check_create, check_open, check_write
from hierqdrant.store.engines.edge_state import Snapshots, damage, damaged_folders
from hierqdrant.store.engines.edge_state import engine_error as _engine_error

__all__ = ["EdgeEngine", "edge_expression", "edge_filter", "edge_params", "edge_request", "default_data_dir"]

_FORMAT = "hierqdrant-edge-collection/1"
_DEFAULT_HNSW_M = 16  # Qdrant's defaults; edge uses the same when no HNSW config is given
_DEFAULT_EF_CONSTRUCT = 100
_DEFAULT_FULL_SCAN_KB = 10_000


def default_data_dir() -> Path:
    """``$HIERQDRANT_DATA`` if set, else ``./.hierqdrant``."""
    return Path(os.environ.get("HIERQDRANT_DATA") or ".hierqdrant")


class EdgeEngine(EngineBase):
    """Embedded engine: one qdrant-edge ``EdgeShard`` per collection under ``data_dir``.

    Shards are opened lazily and cached; :meth:`close` flushes and closes them (the engine is also a
    context manager). Only one process may open a collection at a time (the shard's WAL is locked), and
    only one may write it (:meth:`writing`, the collection's lock).
    """

    kind = "embedded"
    place = "in"
    not_found_hint = "check the name (hierqdrant collections) or the data dir (--data-dir / HIERQDRANT_DATA)"

    def __init__(self, data_dir: str | Path | None = None) -> None:
        self.data_dir = Path(data_dir if data_dir is not None else default_data_dir()).expanduser().resolve()
        self.location = str(self.data_dir)
        self._shards: dict[str, qe.EdgeShard] = {}
        self._opened: dict[str, str] = {}  # the generation each opened shard belongs to
        self._snapshots = Snapshots()  # collection.json read once per change: a stat per query
        self._lock = threading.RLock()

    # -- paths and metadata ------------------------------------------------------------------------------

    def _dir(self, name: str) -> Path:
        return self.data_dir / check_collection_name(name)

    def _meta(self, name: str) -> dict[str, Any]:
        path = self._dir(name) / "collection.json"
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise self._not_found(name) from None
        except (OSError, ValueError) as e:
            raise InputError(f"{path} is unreadable or corrupt: {e}", "restore it or delete the collection") from e
        if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
            raise InputError(f"{path} is not a hierqdrant collection file", "restore it or delete the collection")
        return meta

    def _write_meta(self, name: str, meta: dict[str, Any]) -> None:
        atomic_write(self._dir(name) / "collection.json", meta_bytes(meta))

    def _current(self, name: str) -> tuple[dict[str, Any], str]:
        """``collection.json`` as it is now (shared: not to be changed) and the collection's generation."""
        d = self._dir(name)
        try:
            return self._snapshots.current(d, lambda: self._meta(name))
        except FileNotFoundError:
            raise self._not_found(name) from None
        except OSError as e:
            raise InputError(f"{d / 'collection.json'} is unreadable: {e.strerror}", "check its permissions") from e

    def shard(self, name: str) -> qe.EdgeShard:
        """The opened ``EdgeShard`` of a collection (for inspection, e.g. ``shard(name).info()``). A shard of a
        collection deleted and made again since it was opened (by any process) is closed and the new one opened."""
        with self._lock:
            generation = self._current(name)[1]  # NotFoundError before touching the shard
            s = self._shards.get(name)
            if s is not None and self._opened.get(name) == generation:
                return s
            self._release(name)
            check_open(self._dir(name) / "shard", name)  # opening maps the vectors in: SIGBUS on a full disk
            try:
                s = qe.EdgeShard.load(str(self._dir(name) / "shard"))
            except Exception as e:
                raise _engine_error("open the shard", name, e) from e
            self._shards[name], self._opened[name] = s, generation
            return s

    def _release(self, name: str) -> None:
        """Close the shard of ``name`` without flushing (its collection is gone or was replaced: a flush
        would write into the new one's folder)."""
        self._opened.pop(name, None)
        s = self._shards.pop(name, None)
        if s is not None:
            with suppress(Exception):  # nothing of it is wanted any more
                s.close()

    def revision(self, name: str) -> tuple[str | None, str | None]:
        """``(generation, model id)`` from ``collection.json`` (a ``stat`` when it did not change)."""
        meta, generation = self._current(name)
        return generation, (meta.get("info") or {}).get("model_id")

    def writer(self, name: str) -> int | None:
        """The pid of another process holding the collection's writer lock now (only looked at, never taken)."""
        return lock_holder(self.data_dir, check_collection_name(name))

    def open_for_writing(self, name: str) -> None:
        """Open the shard, which another process may hold open (EngineError "open in another process")."""
        self.shard(name)

    def check_new_name(self, name: str) -> None:
        """Refuse ``cache``: the folder beside the collections where ``hierqdrant ingest`` caches features."""
        if name == "cache":
            raise InputError(
                f"the collection name 'cache' is reserved in the embedded store: {self.data_dir / 'cache'} holds "
                "the feature cache",
                "choose another --collection name",
            )

    # -- collections -------------------------------------------------------------------------------------

    def collections(self) -> list[str]:
        """User collections (directories holding a ``collection.json``), sorted."""
        if not self.data_dir.is_dir():
            return []
        out = []
        for p in self.data_dir.iterdir():
            try:
                check_collection_name(p.name)
            except InputError:
                continue
            if (p / "collection.json").is_file():
                out.append(p.name)
        return sorted(out)

    def exists(self, name: str) -> bool:
        """Whether ``<data_dir>/<name>/collection.json`` exists."""
        return (self._dir(name) / "collection.json").is_file()

    # -- the lifecycle: lock, damage, atomic create, delete ----------------------------------------------

    def writing(
        self, name: str, *, wait: bool = False, on_wait: Callable[[int | None], None] | None = None
    ) -> AbstractContextManager[None]:
        """Hold the collection's writer lock (``<data_dir>/.<name>.lock``) for a sequence of writes.

        Exclusive between processes, re-entrant within this one; every write method takes it too. When
        another process holds it: ``EngineError`` "being written by another process (pid N)", or with
        ``wait`` ``on_wait(pid)`` and a blocking wait. Taking it first removes temporary files and folders
        that a writer which died left behind.
        """
        return self._writing(check_collection_name(name), wait, on_wait)

    @contextmanager
    def _writing(self, name: str, wait: bool, on_wait: Callable[[int | None], None] | None) -> Iterator[None]:
        waited = []  # the writer we waited for releases the lock, then closes the shard: retry the open

        def note(pid: int | None) -> None:
            waited.append(pid)
            if on_wait is not None:
                on_wait(pid)

        with collection_lock(self.data_dir, name, wait=wait, on_wait=note) as first:
            if first:
                self._remove_stale(name)
            if waited and self.exists(name):
                retry_while_busy(lambda: self.shard(name))
            yield

    def _remove_stale(self, name: str) -> None:
        """What a writer of ``name`` that died left behind, and only that (lock held): see
        :func:`~hierqdrant.store.engines.edge_files.remove_leftovers`."""
        remove_leftovers(self.data_dir, name, self._dir(name), lambda: self._model_in_use(name))

    def _model_in_use(self, name: str) -> str | None:
        """The model folder ``collection.json`` names once that model is read and verified, else ``None``."""
        try:
            if self.read_model(name) is None:
                return None
            return str((self._meta(name).get("model") or {}).get("dir", "model"))
        except (InputError, NotFoundError):
            return None

    def check_intact(self, name: str) -> None:
        """Raise ``InputError`` when ``<name>/`` exists without ``collection.json`` (damaged or foreign)."""
        problem = damage(self._dir(name), name, self.location)
        if problem is not None:
            raise problem

    def check_replaceable(self, name: str) -> None:
        """Raise ``InputError`` when ``<name>`` is there but is neither a collection nor a damaged one (a
        folder holding a shard or a model folder): another folder or file, e.g. the feature cache."""
        d = self._dir(name)
        problem = damage(self._dir(name), name, self.location)
        if problem is not None and not (d.is_dir() and holds_collection_files(d)):
            raise problem

    def damaged(self) -> dict[str, str]:
        """Collection folders whose ``collection.json`` is missing although a shard or model is there."""
        return damaged_folders(self.data_dir, self.location)

    def _create(
        self,
        name: str,
        dim: int,
        integer_index: list[str],
        keyword_index: list[str],
        hnsw_m: int | None,
        hnsw_ef_construct: int | None,
        model: tuple[dict[str, bytes], dict[str, Any]] | None,
        shard_number: int | None = None,  # always None here: EngineBase.create refuses more than one shard
        replication_factor: int | None = None,  # … and replicas (engines.cluster.check_layout)
    ) -> None:
        """Build shard, indexes, model and ``collection.json`` (last) in a temporary folder; rename it.

        The caller holds the lock and has checked that ``<name>/`` is free (absent or an empty folder).
        """
        hnsw = None
        if hnsw_m is not None or hnsw_ef_construct is not None:
            hnsw = qe.HnswIndexConfig(
                m=_DEFAULT_HNSW_M if hnsw_m is None else hnsw_m,
                ef_construct=_DEFAULT_EF_CONSTRUCT if hnsw_ef_construct is None else hnsw_ef_construct,
                full_scan_threshold=_DEFAULT_FULL_SCAN_KB,
            )
        config = qe.EdgeConfig(vectors=qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine), hnsw_config=hnsw)
        meta: dict[str, Any] = {
            "format": _FORMAT,
            "name": name,
            "dim": dim,
            "distance": "Cosine",
            "integer_index": integer_index,
            "keyword_index": keyword_index,
            "hnsw": {
                "m": _DEFAULT_HNSW_M if hnsw_m is None else hnsw_m,
                "ef_construct": _DEFAULT_EF_CONSTRUCT if hnsw_ef_construct is None else hnsw_ef_construct,
            },
            "created": utc_now(),
            "generation": str((model[1] if model else {}).get("generation") or uuid.uuid4().hex[:16]),
            "info": None,
            "model": None,
        }
        self._build(name, config, meta, integer_index, keyword_index, model)

    def _build(
        self,
        name: str,
        config: qe.EdgeConfig,
        meta: dict[str, Any],
        integer_index: list[str],
        keyword_index: list[str],
        model: tuple[dict[str, bytes], dict[str, Any]] | None,
    ) -> None:
        """Create the shard with ``config``, its payload indexes, ``model`` and ``meta`` (as ``collection.json``,
        last) in a temporary folder and rename it to ``<name>/`` (the lock is held, the name is free)."""
        d = self._dir(name)
        with self._lock:
            check_create(self.data_dir, name, sum(len(b) for b in model[0].values()) if model else 0)
            tmp = temporary_dir(self.data_dir, name)
            tmp.mkdir(parents=True)
            try:
                try:
                    s = qe.EdgeShard.create(str(tmp / "shard"), config)
                    for field in integer_index:
                        s.update(qe.UpdateOperation.create_field_index(field, qe.PayloadSchemaType.Integer))
                    for field in keyword_index:
                        s.update(qe.UpdateOperation.create_field_index(field, qe.PayloadSchemaType.Keyword))
                    s.flush()
                    s.close()  # the shard keeps its path: reopened from <name>/ after the rename
                except Exception as e:
                    raise _engine_error("create the collection", name, e) from e
                if model is not None:
                    meta["info"], meta["model"] = model[1], store_model_files(tmp, model[0])
                atomic_write(tmp / "collection.json", meta_bytes(meta))
                fsync_dir(tmp)
                fault("before-create-rename")
                try:
                    os.rename(tmp, d)  # replaces an empty folder; anything else stops the rename
                except OSError as e:
                    raise (damage(d, name, self.location) or _engine_error("create the collection", name, e)) from None
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            fsync_dir(self.data_dir)
        fault("after-create")

    def delete(self, name: str) -> None:
        """Remove the collection's folder (model included; also a damaged one): renamed away, then removed."""
        d = self._dir(name)
        if not (d.exists() or d.is_symlink() or stale_paths(self.data_dir, name)):
            return
        with self.writing(name), self._lock:
            self._release(name)
            self._snapshots.forget(d)
            if d.is_symlink() or d.is_file():
                d.unlink()
            elif d.exists():
                gone = temporary_dir(self.data_dir, name, "del")
                os.rename(d, gone)
                fsync_dir(self.data_dir)
                shutil.rmtree(gone)

    def vector_size(self, name: str) -> int:
        """Dimension of the unnamed vector, from ``collection.json`` (``InputError`` for named vectors)."""
        dims = self.vector_dims(name)
        if "" not in dims:
            raise InputError(
                f"collection {name!r} uses named vectors ({', '.join(sorted(dims))})",
                "name the vector (e.g. HierarchicalSearcher(..., vector=NAME) after hierqdrant attach), or use "
                "a collection with one unnamed vector (hierqdrant ingest)",
            )
        return dims[""]

    def vector_dims(self, name: str) -> dict[str, int]:
        """Size of each dense vector, by name (``""``: the unnamed vector of a collection of our own)."""
        meta = self._current(name)[0]  # a stat per query while collection.json does not change
        named = meta.get("vectors")
        if isinstance(named, dict) and named:
            return {str(k): int(v["size"]) for k, v in named.items()}
        return {"": int(meta["dim"])}

    def count(self, name: str, filter: models.Filter | None = None) -> int:
        """Exact count of the points matching ``filter``."""
        f = edge_filter(filter)
        s = self.shard(name)
        try:
            return int(s.count(qe.CountRequest(exact=True, filter=f)))
        except Exception as e:
            raise _engine_error("count", name, e) from e

    # -- points ------------------------------------------------------------------------------------------

    def _upsert_batch(
        self, name: str, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[dict[str, Any]]
    ) -> None:
        """One ``upsert_points`` operation (one ``vectors.tolist()``); :meth:`_after_write` flushes."""
        s = self.shard(name)
        check_write(self._dir(name) / "shard", name, vectors.nbytes + 512 * len(ids))  # the WAL and the segment
        pids = fast_ids(ids)
        Point = qe.Point
        try:
            points = [Point(i, v, p) for i, v, p in zip(pids, vectors.tolist(), payloads, strict=True)]
        except (ValueError, TypeError) as e:
            raise point_error(pids, payloads, e) from e
        try:
            s.update(qe.UpdateOperation.upsert_points(points))
        except Exception as e:
            raise _engine_error("upsert", name, e) from e

    def _after_write(self, name: str) -> None:
        """Flush the shard, so the points persist."""
        s = self.shard(name)
        try:
            s.flush()
        except Exception as e:
            raise _engine_error("flush", name, e) from e

    def _set_payload_groups(
        self, name: str, key: str, parent: str | None, groups: list[tuple[dict[str, Any], list[Any]]]
    ) -> None:
        """One ``set_payload`` operation per group of ids sharing a value."""
        s = self.shard(name)
        for payload, group in groups:
            try:
                op = qe.UpdateOperation.set_payload(group, payload, key=parent)
            except (ValueError, TypeError) as e:
                raise InputError(f"cannot set {key!r}: {e}", "use UUID string ids and JSON values") from e
            try:
                s.update(op)
            except Exception as e:
                if "No point with id" in str(e):
                    raise NotFoundError(f"{e} in collection {name!r}", "upsert the point first") from e
                raise _engine_error("set payload", name, e) from e

    def _stored_ids(self, name: str, ids: list[str]) -> list[Any]:
        """A retrieve without payload or vectors."""
        s = self.shard(name)
        try:
            recs = s.retrieve([to_point_id(i) for i in ids], False, False)
        except ValueError as e:
            raise InputError(f"invalid point id: {e}", "use UUID strings") from e
        except Exception as e:
            raise _engine_error("retrieve", name, e) from e
        return [r.id for r in recs]

    def scroll(
        self,
        name: str,
        *,
        with_vectors: bool = False,
        filter: models.Filter | None = None,
        batch_size: int = 1024,
    ) -> Iterator[list[Record]]:
        """All points (matching ``filter``) in id order, in batches; vectors are stored (normalised) ones."""
        check_batch_size(batch_size)
        f = edge_filter(filter)
        s = self.shard(name)
        return self._scroll(name, s, f, bool(with_vectors), batch_size)

    @staticmethod
    def _scroll(
        name: str, s: qe.EdgeShard, f: qe.Filter | None, with_vectors: bool, batch_size: int
    ) -> Iterator[list[Record]]:
        offset: Any = None
        while True:
            try:
                recs, offset = s.scroll(
                    qe.ScrollRequest(
                        offset=offset, limit=batch_size, filter=f, with_payload=True, with_vector=with_vectors
                    )
                )
            except Exception as e:
                raise _engine_error("scroll", name, e) from e
            if recs:
                yield [
                    Record(
                        str(r.id),
                        np.asarray(r.vector, dtype=np.float32) if with_vectors and r.vector is not None else None,
                        r.payload or {},
                    )
                    for r in recs
                ]
            if offset is None:
                return

    def query_batch(self, name: str, requests: Sequence[models.QueryRequest]) -> list[list[Hit]]:
        """Translate the requests and run them with one ``EdgeShard.query_batch`` call."""
        if not requests:
            return []
        dims = self.vector_dims(name)
        batch = qe.QueryBatchRequest([edge_request(r, dims) for r in requests])
        s = self.shard(name)
        try:
            results = s.query_batch(batch)
        except Exception as e:
            raise _engine_error("query", name, e) from e
        return [hits_of(res) for res in results]

    def optimize(self, name: str) -> None:
        """Run the segment optimizers (builds HNSW once a segment passes the indexing threshold) and flush."""
        s = self.shard(name)
        check_write(self._dir(name) / "shard", name, rewrite=True)  # an optimizer may copy the segments
        try:
            s.optimize()
        except Exception as e:
            raise _engine_error("optimize", name, e) from e
        self._after_write(name)

    # -- model -------------------------------------------------------------------------------------------

    def _write_model(self, name: str, files: dict[str, bytes], info: dict[str, Any]) -> None:
        """Write the files to a new ``model-<gen>/``, switch ``collection.json`` to it, drop the old folder.

        ``collection.json`` is replaced last, so an interrupted write leaves the old model in use (and a
        folder that the next writer removes).
        """
        with self._lock:
            meta = self._meta(name)
            old = (meta.get("model") or {}).get("dir", "model")
            meta["model"] = store_model_files(self._dir(name), files)
            meta["info"] = info
            fault("after-model-files")
            self._write_meta(name, meta)
            if old != meta["model"]["dir"] and MODEL_DIR_RE.match(str(old)):
                shutil.rmtree(self._dir(name) / str(old), ignore_errors=True)

    def _update_info(self, name: str, info: dict[str, Any]) -> None:
        """Replace the info dict in ``collection.json`` (one atomic write)."""
        with self._lock:
            meta = self._meta(name)
            meta["info"] = info
            self._write_meta(name, meta)

    def read_model(self, name: str) -> tuple[dict[str, bytes], dict[str, Any]] | None:
        """Read and verify the model files (size and sha256 from ``collection.json``)."""
        meta = self._meta(name)
        model = meta.get("model")
        if not model:
            if meta.get("info") is not None:  # written together: an info dict without files is damage
                raise corrupt_model(name, "collection.json", "its info names a model but no model files")
            return None
        try:
            folder = str(model.get("dir", "model"))
            entries = [(str(f), int(r["size"]), str(r["sha256"])) for f, r in model["files"].items()]
        except (KeyError, TypeError, ValueError, AttributeError):
            raise corrupt_model(name, "collection.json", "unreadable model file list") from None
        if not MODEL_DIR_RE.match(folder):  # a tampered collection.json must not reach outside the collection
            raise corrupt_model(name, "collection.json", f"invalid model folder {folder!r}")
        mdir = self._dir(name) / folder
        files: dict[str, bytes] = {}
        for fname, size, sha in entries:
            check_model_files({fname: b""})  # a tampered collection.json must not reach outside model/
            try:
                data = (mdir / fname).read_bytes()
            except FileNotFoundError:
                raise corrupt_model(name, fname, "missing") from None
            files[fname] = check_model_file(name, fname, data, size, sha)
        return files, dict(meta.get("info") or {})

    def read_info(self, name: str) -> dict[str, Any] | None:
        """The info dict from ``collection.json`` (read again only when the file changed)."""
        info = self._current(name)[0].get("info")
        return copy.deepcopy(info) if info is not None else None

    def close(self) -> None:
        """Flush and close every opened shard."""
        with self._lock:
            for name in [n for n in self._shards if not self._still_current(n)]:
                self._release(name)  # deleted or made again by another process: nothing of it to flush
            shards, self._shards = self._shards, {}
            self._opened.clear()
            errors = []
            for name, s in shards.items():
                try:
                    s.flush()
                    s.close()
                except Exception as e:  # close the others before reporting
                    errors.append(_engine_error("close", name, e))
            if errors:
                raise errors[0]

    def _still_current(self, name: str) -> bool:
        with suppress(InputError, NotFoundError):
            return self._current(name)[1] == self._opened.get(name)
        return False

