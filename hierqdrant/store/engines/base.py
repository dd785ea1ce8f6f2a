"""The storage-engine interface shared by the embedded (qdrant-edge) and the server (qdrant-client) engines.

The common query language is qdrant-client's pydantic models (``qdrant_client.models``): callers pass
``models.Filter`` and ``models.QueryRequest``; each engine runs them natively (server) or translates them
(edge). Everything else is plain Python and NumPy: point ids are strings (UUIDs), vectors ``float32`` arrays.

Vectors are stored under cosine distance, so both engines keep them L2-normalised: a stored vector ``x``
comes back as ``x / ‖x‖`` and the score of a plain query ``q`` is ``cos(q, x) = q·x / (‖q‖ ‖x‖)``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np
from qdrant_client import models

from hierqdrant.core.errors import InputError, NotFoundError
from hierqdrant.core.faults import fault
from hierqdrant.store.engines.cluster import check_layout
from hierqdrant.store.engines.hooks import LifecycleHooks

SIDECAR_SUFFIX = "--hq-model"
"""Suffix of the server engine's sidecar collection that holds a collection's fitted model."""

METADATA_KEY = "hierqdrant"
"""Key of the info dict inside Qdrant collection metadata."""

_E = TypeVar("_E", bound="EngineBase")
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}$")
_FILE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}$")


@dataclass(frozen=True)
class Hit:
    """One scored point from a query."""

    id: str
    score: float
    payload: dict[str, Any]


@dataclass(frozen=True)
class Record:
    """One stored point (its vector is the stored, L2-normalised one, or ``None`` when not requested)."""

    id: str
    vector: np.ndarray | None
    payload: dict[str, Any]


@runtime_checkable
class Engine(Protocol):
    """A vector store holding cosine collections with one unnamed dense vector per point.

    ``kind`` is ``"embedded"`` (qdrant-edge, in-process) or ``"qdrant"`` (qdrant-client: server, cloud or
    the client's local mode); ``location`` is the data directory or the URL, never an API key.
    """

    kind: str
    location: str

    def collections(self) -> list[str]:
        """User collections, sorted; internal sidecar collections are hidden."""
        ...

    def exists(self, name: str) -> bool:
        """Whether the collection exists."""
        ...

    def create(
        self,
        name: str,
        dim: int,
        *,
        integer_index: Sequence[str] = (),
        keyword_index: Sequence[str] = (),
        hnsw_m: int | None = None,
        hnsw_ef_construct: int | None = None,
    ) -> None:
        """Create a cosine collection of ``dim``-d vectors with payload indexes on the given JSON paths."""
        ...

    def delete(self, name: str) -> None:
        """Delete the collection with its stored model; a missing collection is not an error."""
        ...

    def vector_size(self, name: str) -> int:
        """Dimension of the collection's vectors."""
        ...

    def count(self, name: str, filter: models.Filter | None = None) -> int:
        """Exact number of points (matching ``filter``)."""
        ...

    def upsert(
        self,
        name: str,
        ids: Sequence[str],
        vectors: np.ndarray,
        payloads: Sequence[dict[str, Any]],
        *,
        batch_size: int = 1024,
    ) -> None:
        """Insert or replace points ``(ids[i], vectors[i], payloads[i])`` in batches; durable on return."""
        ...

    def set_payload(
        self,
        name: str,
        ids: Sequence[str],
        values: Sequence[Any],
        *,
        key: str,
        batch_size: int = 1024,
    ) -> None:
        """Set ``payload[key] = values[i]`` on point ``ids[i]``, leaving vectors and other keys alone.

        A dotted key ``"a.b"`` sets ``payload["a"]["b"]`` (Qdrant's nested ``key`` semantics). A value of
        ``None`` removes the key (Qdrant merges payloads like a JSON merge-patch), on every engine.
        """
        ...

    def existing_ids(self, name: str, ids: Sequence[str]) -> set[str]:
        """The subset of ``ids`` (as given) that are stored."""
        ...

    def scroll(
        self,
        name: str,
        *,
        with_vectors: bool = False,
        filter: models.Filter | None = None,
        batch_size: int = 1024,
    ) -> Iterator[list[Record]]:
        """All points (matching ``filter``), in batches of at most ``batch_size``, with their payloads."""
        ...

    def query_batch(self, name: str, requests: Sequence[models.QueryRequest]) -> list[list[Hit]]:
        """Run a batch of Query API requests in one engine call; one hit list per request."""
        ...

    def optimize(self, name: str) -> None:
        """Build the indexes (HNSW, payload) and make everything durable."""
        ...

    def write_model(self, name: str, files: Mapping[str, bytes], info: Mapping[str, Any]) -> None:
        """Store the fitted model's files and its small info dict with the collection (replacing any)."""
        ...

    def read_model(self, name: str) -> tuple[dict[str, bytes], dict[str, Any]] | None:
        """The stored model files and info dict, verified against their sha256; ``None`` when none."""
        ...

    def read_info(self, name: str) -> dict[str, Any] | None:
        """Just the stored info dict (model id, payload key, dims, …); ``None`` when none. Cheap."""
        ...

    def close(self) -> None:
        """Flush and release resources."""
        ...


# ---------------------------------------------------------------------------------------------------------
# the checks and loops both engines share


class EngineBase(LifecycleHooks):
    """What both engines do alike: argument checks, batching, grouping and error wording.

    Not part of the :class:`Engine` protocol (a third-party engine needs only the protocol). A subclass
    sets :attr:`kind`, :attr:`location` and :attr:`place`, implements the protocol's remaining methods
    and the hooks ``_create``, ``_upsert_batch``, ``_set_payload_groups``, ``_stored_ids``,
    ``_write_model`` and ``_update_info``; :meth:`_after_write` (a no-op here) makes writes durable.

    Beyond the protocol it gives the collection lifecycle (docs/DESIGN.md §2.6): the hooks of
    :class:`~hierqdrant.store.engines.hooks.LifecycleHooks` (:meth:`writing`, a writer lock; damage;
    :meth:`revision`; none of it here), :meth:`update_info`, and ``create(..., model=...)``, which stores
    the model with the new collection. Every write method holds :meth:`writing` while it writes.
    """

    kind: str
    location: str
    place: str = "at"
    """Preposition before :attr:`location` in messages: "in" a data dir, "at" a URL."""
    not_found_hint: str = "check the name (hierqdrant collections)"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.location!r})"

    def __enter__(self: _E) -> _E:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release resources (engines override)."""

    def exists(self, name: str) -> bool:  # pragma: no cover - every engine overrides it
        raise NotImplementedError

    def vector_size(self, name: str) -> int:  # pragma: no cover - every engine overrides it
        raise NotImplementedError

    def _not_found(self, name: str) -> NotFoundError:
        return NotFoundError(f"collection {name!r} not found {self.place} {self.location}", self.not_found_hint)

    def _after_write(self, name: str) -> None:
        """Make the writes of an ``upsert`` / ``set_payload`` durable (the embedded engine flushes)."""

    # -- the collection lifecycle ---------------------------------------------------------------------

    def update_info(self, name: str, info: Mapping[str, Any]) -> None:
        """Replace the stored info dict, leaving the model files as they are."""
        checked = check_info(info)
        with self.writing(name):
            if not self.exists(name):
                raise self._not_found(name)
            self._update_info(name, checked)

    def _update_info(self, name: str, info: dict[str, Any]) -> None:  # pragma: no cover - engines override
        raise NotImplementedError

    # -- the protocol's methods, written once ---------------------------------------------------------

    def create(
        self,
        name: str,
        dim: int,
        *,
        integer_index: Sequence[str] = (),
        keyword_index: Sequence[str] = (),
        hnsw_m: int | None = None,
        hnsw_ef_construct: int | None = None,
        model: tuple[Mapping[str, bytes], Mapping[str, Any]] | None = None,
        shard_number: int | None = None,
        replication_factor: int | None = None,
    ) -> None:
        """Create a cosine collection of ``dim``-d vectors with integer/keyword payload indexes.

        ``model`` — ``(files, info)`` as for :meth:`write_model` — is stored with it: on the embedded
        engine the collection appears at once with its model; on a server the model is written next.
        ``shard_number`` / ``replication_factor``: a server's layout (``engines.cluster``; > 1 is refused
        by the embedded engine).
        """
        check_collection_name(name)
        dim = check_dim(dim)
        check_hnsw(hnsw_m, hnsw_ef_construct)
        layout = check_layout(self, shard_number, replication_factor)
        stored = None if model is None else (check_model_files(model[0]), check_info(model[1]))
        with self.writing(name):
            if self.exists(name):
                raise InputError(
                    f"collection {name!r} already exists {self.place} {self.location}",
                    "delete it first or choose another name",
                )
            self.check_intact(name)
            self.check_new_name(name)
            ints, keys = list(integer_index), list(keyword_index)
            self._create(name, dim, ints, keys, hnsw_m, hnsw_ef_construct, stored, **layout)

    def _create(
        self,
        name: str,
        dim: int,
        integer_index: list[str],
        keyword_index: list[str],
        hnsw_m: int | None,
        hnsw_ef_construct: int | None,
        model: tuple[dict[str, bytes], dict[str, Any]] | None,
        shard_number: int | None = None,  # only where ``clustered`` (engines.cluster refuses the rest)
        replication_factor: int | None = None,
    ) -> None:  # pragma: no cover - every engine overrides it
        raise NotImplementedError

    def upsert(
        self,
        name: str,
        ids: Sequence[str],
        vectors: np.ndarray,
        payloads: Sequence[dict[str, Any]],
        *,
        batch_size: int = 1024,
    ) -> None:
        """Check the points once, then upsert them ``batch_size`` at a time; durable on return."""
        check_batch_size(batch_size)
        arr = check_points(ids, vectors, payloads, self.vector_size(name))
        with self.writing(name):
            for a in range(0, len(ids), batch_size):
                b = a + batch_size
                self._upsert_batch(name, ids[a:b], arr[a:b], payloads[a:b])
                fault("after-upsert-batch")
            self._after_write(name)

    def _upsert_batch(
        self, name: str, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[dict[str, Any]]
    ) -> None:  # pragma: no cover - every engine overrides it
        raise NotImplementedError

    def set_payload(
        self,
        name: str,
        ids: Sequence[str],
        values: Sequence[Any],
        *,
        key: str,
        batch_size: int = 1024,
    ) -> None:
        """``payload[key] = values[i]`` for each id; per batch, ids sharing a value go in one operation."""
        check_batch_size(batch_size)
        if len(ids) != len(values):
            raise InputError(f"got {len(ids)} ids and {len(values)} values", "pass one value per id")
        parent, leaf = split_key(key)
        with self.writing(name):
            for a in range(0, len(ids), batch_size):
                b = a + batch_size
                groups = group_by_value(check_ids(ids[a:b]), values[a:b])
                self._set_payload_groups(name, key, parent, [({leaf: v}, g) for v, g in groups])
            self._after_write(name)

    def _set_payload_groups(
        self, name: str, key: str, parent: str | None, groups: list[tuple[dict[str, Any], list[Any]]]
    ) -> None:  # pragma: no cover - every engine overrides it
        """Set each ``(payload, point ids)`` group under the nested ``parent`` key (``key`` for messages)."""
        raise NotImplementedError

    def existing_ids(self, name: str, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` (as given) are stored, asked 1024 at a time."""
        found: set[str] = set()
        for a in range(0, len(ids), 1024):
            chunk = list(ids[a : a + 1024])
            by_canon = {canon(i): i for i in chunk}
            found.update(by_canon[c] for c in map(canon, self._stored_ids(name, chunk)) if c in by_canon)
        return found

    def _stored_ids(self, name: str, ids: list[str]) -> list[Any]:  # pragma: no cover - engines override
        """The ids among ``ids`` that are stored, in the engine's own form."""
        raise NotImplementedError

    def write_model(self, name: str, files: Mapping[str, bytes], info: Mapping[str, Any]) -> None:
        """Check the file names, contents and info, then store them (replacing any model)."""
        checked = check_model_files(files), check_info(info)
        with self.writing(name):
            self._write_model(name, *checked)

    def _write_model(
        self, name: str, files: dict[str, bytes], info: dict[str, Any]
    ) -> None:  # pragma: no cover - every engine overrides it
        raise NotImplementedError


def hits_of(points: Any) -> list[Hit]:
    """:class:`Hit` objects from an engine's scored points (``id``, ``score``, ``payload``)."""
    return [Hit(str(p.id), float(p.score), p.payload or {}) for p in points]


def group_by_value(ids: Sequence[Any], values: Sequence[Any]) -> list[tuple[Any, list[Any]]]:
    """``(value, ids having it)`` for each distinct JSON value, in first-seen order (values made plain)."""
    groups: dict[str, tuple[Any, list[Any]]] = {}
    for i, v in zip(ids, values, strict=True):
        groups.setdefault(json_key(v), (v, []))[1].append(i)
    return [(plain_json(v), g) for v, g in groups.values()]


def corrupt_model(name: str, fname: str, why: str) -> InputError:
    """The error for a stored model file that is missing, truncated or altered."""
    return InputError(
        f"stored model of collection {name!r} is corrupt: {fname!r} ({why})",
        f"restore a backup, or rebuild the collection (hierqdrant ingest <images> -c {name} --recreate; one "
        f"attached to an application's collection: hierqdrant attach {name} --refit)",
    )


def check_model_file(name: str, fname: str, data: bytes, size: int, sha256: str) -> bytes:
    """``data`` if it has the recorded size and sha256, else the corrupt-model error."""
    if len(data) != size or sha256_hex(data) != sha256:
        raise corrupt_model(name, fname, "sha256 mismatch")
    return data


def utc_now() -> str:
    """The current UTC time, ISO 8601 to the second (the timestamps of stored models)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------------------
# helpers shared by both engines


def check_collection_name(name: str) -> str:
    """Reject names that are unsafe as a directory name or reserved for sidecars; return ``name``."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InputError(
            f"invalid collection name {name!r}",
            "use 1-255 letters, digits, '_', '-' or '.', starting with a letter, digit or '_'",
        )
    if name.endswith(SIDECAR_SUFFIX):
        raise InputError(
            f"invalid collection name {name!r}: the suffix {SIDECAR_SUFFIX!r} is reserved for stored models",
            "choose a name without that suffix",
        )
    return name


def check_model_files(files: Mapping[str, bytes]) -> dict[str, bytes]:
    """Validate model file names (flat, no path parts) and contents (bytes)."""
    out: dict[str, bytes] = {}
    for fname, data in files.items():
        if not isinstance(fname, str) or not _FILE_RE.match(fname):
            raise InputError(
                f"invalid model file name {fname!r}",
                "use letters, digits, '_', '-' or '.' and no directories",
            )
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InputError(f"model file {fname!r} is {type(data).__name__}, not bytes", "pass bytes")
        out[fname] = bytes(data)
    return out


def check_info(info: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``info`` as a plain dict after checking it round-trips through strict JSON."""
    try:
        return dict(json.loads(json.dumps(dict(info), allow_nan=False)))
    except (TypeError, ValueError) as e:
        raise InputError(f"model info is not JSON-serialisable: {e}", "pass plain str/int/float/list/dict") from e


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def check_dim(dim: int) -> int:
    """A positive vector dimension."""
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or int(dim) < 1:
        raise InputError(f"invalid vector size {dim!r}", "pass a positive integer")
    return int(dim)


def check_hnsw(hnsw_m: int | None, hnsw_ef_construct: int | None) -> None:
    """Reject nonsensical HNSW parameters (m = 0 is allowed: it disables the graph)."""
    if hnsw_m is not None and (not isinstance(hnsw_m, int) or hnsw_m < 0):
        raise InputError(f"invalid hnsw_m {hnsw_m!r}", "pass a non-negative integer (default 16)")
    if hnsw_ef_construct is not None and (not isinstance(hnsw_ef_construct, int) or hnsw_ef_construct < 4):
        raise InputError(f"invalid hnsw_ef_construct {hnsw_ef_construct!r}", "pass an integer >= 4 (default 100)")


def check_batch_size(batch_size: int) -> int:
    """A positive batch size."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"invalid batch_size {batch_size!r}", "pass a positive integer")
    return batch_size


def check_points(ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[dict[str, Any]], dim: int) -> np.ndarray:
    """Validate an upsert: matching lengths, ``(n, dim)`` finite vectors, dict payloads; return float32."""
    arr = np.asarray(vectors, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise InputError(
            f"vectors have shape {tuple(arr.shape)}, the collection expects (n, {dim})",
            "project the features with the collection's model before upserting",
        )
    if not (len(ids) == arr.shape[0] == len(payloads)):
        raise InputError(
            f"got {len(ids)} ids, {arr.shape[0]} vectors and {len(payloads)} payloads",
            "pass one id and one payload per vector",
        )
    if arr.size and not np.isfinite(arr).all():
        bad = int(np.flatnonzero(~np.isfinite(arr).all(axis=1))[0])
        raise InputError(f"vector {bad} (id {ids[bad]!r}) has NaN or infinite values", "fix the features")
    return arr


def to_point_id(pid: str | int | uuid.UUID) -> str | int:
    """A Qdrant point id from our string form: unsigned-integer strings become ints, the rest stay UUIDs."""
    if isinstance(pid, str):
        return int(pid) if pid.isdigit() else pid
    if isinstance(pid, uuid.UUID):
        return str(pid)
    if isinstance(pid, (int, np.integer)) and not isinstance(pid, bool) and pid >= 0:
        return int(pid)
    raise InputError(f"invalid point id {pid!r}", "use UUID strings (or unsigned integers)")


def canonical_id(pid: str | int | uuid.UUID) -> str:
    """The string form engines return for ``pid``: lower-case hyphenated UUID or decimal integer."""
    p = to_point_id(pid)
    if isinstance(p, int):
        return str(p)
    try:
        return str(uuid.UUID(p))
    except ValueError as e:
        raise InputError(f"invalid point id {pid!r}", "use UUID strings (or unsigned integers)") from e


def canon(pid: Any) -> str:
    """A lenient :func:`canonical_id` for matching ids: the canonical form where there is one, else ``str``."""
    if isinstance(pid, (int, np.integer)) and not isinstance(pid, bool):
        return str(int(pid))
    s = str(pid)
    if s.isdigit():
        return str(int(s))
    try:
        return str(uuid.UUID(s))
    except ValueError:
        return s


def check_ids(ids: Sequence[str]) -> list[str | int]:
    """Parse ids for an engine call, raising one ``InputError`` naming the first bad id."""
    out = [to_point_id(i) for i in ids]
    for p, orig in zip(out, ids, strict=True):
        if isinstance(p, str):
            try:
                uuid.UUID(p)
            except ValueError as e:
                raise InputError(f"invalid point id {orig!r}", "use UUID strings (or unsigned integers)") from e
    return out


def split_key(key: str) -> tuple[str | None, str]:
    """Split a payload key ``"a.b.c"`` into Qdrant's nested ``key`` (``"a.b"``) and the leaf (``"c"``)."""
    if not isinstance(key, str) or not key or key.startswith(".") or key.endswith("."):
        raise InputError(f"invalid payload key {key!r}", "pass a key such as 'hq' or 'hq.leaf'")
    parent, _, leaf = key.rpartition(".")
    return (parent or None), leaf


def json_key(value: Any) -> str:
    """A hashable, order-independent key for grouping equal JSON values."""
    try:
        return json.dumps(value, sort_keys=True, allow_nan=False, default=_np_default)
    except (TypeError, ValueError) as e:
        raise InputError(f"payload value {value!r} is not JSON-serialisable", "pass plain JSON values") from e


def _np_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"{type(o).__name__} is not JSON-serialisable")


def plain_json(value: Any) -> Any:
    """Convert NumPy scalars/arrays inside a payload value to plain Python (rejects NaN)."""
    if isinstance(value, dict):
        return {str(k): plain_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return plain_json(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        raise InputError("payload contains NaN or infinity", "replace it with null or a finite number")
    return value
