"""A local cache of embedded features, so an interrupted ingest resumes without embedding again.

Layout: ``<cache_root>/<collection>/<extractor hash>/part-NNNNNN-<random>.npz``, each part holding ``keys``
(item keys), ``stamps`` (``size:mtime_ns`` of the file when it was embedded) and ``features``. A part
is written to a temporary name and renamed, so a kill leaves whole parts only. An item whose file
changed since (other stamp) is embedded again.

Progress survives a kill with bounded loss: the rows of the batches embedded since the last part are
written as a new part once ``flush_seconds`` (default 3 s) have passed or ``flush_every`` rows are
waiting, so a kill loses at most a few seconds of embedding (plus the batch in flight). The number of
parts stays bounded: above ``max_parts`` the smaller half is merged into one part (while writing, and
when loading a cache that a killed run left with many parts). A writer holds ``.writers.lock`` (shared)
while it writes a part, so a temporary file whose writer died is removed by the next run at once when no
part is being written (the lock is free), else once it is old enough to be certainly abandoned.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from hierqdrant.core.errors import InputError
from hierqdrant.core.faults import fault
from hierqdrant.core.fileio import atomic_writer, check_free_space, disk_error

try:  # POSIX; elsewhere temporary files are removed by age only
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

_STALE_TMP_SECONDS = 120.0  # a part is written in well under this; an older temporary file is abandoned
_WRITERS = ".writers.lock"  # held shared while a part is written: free means no temporary file is live
_KEY_BYTES = 256  # a cached row's key and stamp, generously
_MOVE_IT = "move that file away, or use another --data-dir (the cache is DATA_DIR/cache)"


def file_stamp(path: str | Path) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return "missing"
    return f"{st.st_size}:{st.st_mtime_ns}"


def extractor_hash(description: Mapping[str, Any]) -> str:
    canonical = json.dumps(description, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class FeatureCache:
    """Features of already-embedded items, keyed by item key, for one extractor."""

    def __init__(
        self,
        root: str | Path,
        collection: str,
        description: Mapping[str, Any],
        flush_every: int | None = None,
        flush_seconds: float = 3.0,
        max_parts: int = 32,
    ):
        self.directory = Path(root) / collection / extractor_hash(description)
        # $HIERQDRANT_CACHE_FLUSH_ROWS overrides the row count (tests use a few rows per part).
        self.flush_every = flush_every or int(os.environ.get("HIERQDRANT_CACHE_FLUSH_ROWS", "4096"))
        self.flush_seconds = flush_seconds
        self.max_parts = max(2, max_parts)
        self._last_flush = time.monotonic()
        self._keys: list[str] = []
        self._stamps: list[str] = []
        self._rows: list[np.ndarray] = []
        self._next_part = 0
        self._parts: dict[Path, int] = {}  # part → rows, of the parts on disk

    def load(self) -> dict[str, tuple[str, np.ndarray]]:
        """``key → (stamp, feature)`` of every complete part; unreadable parts are ignored (and redone).

        A cache with more than ``max_parts`` parts is compacted into one part first.
        """
        out: dict[str, tuple[str, np.ndarray]] = {}
        if not self.directory.is_dir():
            return out
        self._remove_stale_temporaries()
        self._parts = {}
        for part in sorted(self.directory.glob("part-*.npz")):
            self._next_part = max(self._next_part, _part_number(part) + 1)
            got = _read_part(part)
            if got is None:
                continue
            keys, stamps, feats = got
            for key, stamp, row in zip(keys, stamps, feats, strict=True):
                out[key] = (stamp, row)
            self._parts[part] = len(keys)
        if len(self._parts) > self.max_parts and out:
            old = list(self._parts)
            keys = list(out)
            self._write_part(keys, [out[k][0] for k in keys], np.stack([out[k][1] for k in keys]))
            self._drop(old)
        return out

    def add(self, keys: Sequence[str], stamps: Sequence[str], features: np.ndarray) -> None:
        """Add a batch; write a part when ``flush_every`` rows wait or ``flush_seconds`` have passed."""
        self._keys.extend(keys)
        self._stamps.extend(stamps)
        self._rows.extend(np.asarray(features, dtype=np.float32))
        if len(self._keys) >= self.flush_every or time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def check_space(self, rows: int, dim: int) -> None:
        """One line before embedding when the cache's folder cannot be made (a read-only disk, a file in its
        place) or its disk cannot take ``rows`` more features of ``dim`` floats (with its compaction's
        copy), rather than an error halfway through."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            error = disk_error(exc, f"making the feature cache {self.directory}")
            if error is None and isinstance(exc, (FileExistsError, NotADirectoryError)):
                error = InputError(f"the feature cache {self.directory} is (or is inside) a file", _MOVE_IT)
            if error is None:
                raise
            raise error from None
        need = rows * (4 * dim + _KEY_BYTES) * 2 + (1 << 20)
        check_free_space(self.directory, need, f"the feature cache of {rows} images ({self.directory})")

    def flush(self) -> None:
        """Write the waiting rows as one part (durable on return); compact when there are many parts.
        A full or read-only disk is one :class:`~hierqdrant.core.errors.InputError` naming the space needed."""
        self._last_flush = time.monotonic()
        if not self._keys:
            return
        rows = np.stack(self._rows)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._write_part(self._keys, self._stamps, rows)
            self._keys, self._stamps, self._rows = [], [], []
            if len(self._parts) > self.max_parts:
                self._compact()
        except OSError as exc:
            need = rows.nbytes + _KEY_BYTES * len(self._keys)
            error = disk_error(exc, f"writing the feature cache {self.directory}", need)
            if error is None:
                raise
            raise error from None
        fault("after-cache-flush")

    # -- parts -------------------------------------------------------------------------------------------

    def _write_part(self, keys: Sequence[str], stamps: Sequence[str], features: np.ndarray) -> Path:
        target = self.directory / f"part-{self._next_part:06d}-{uuid.uuid4().hex[:8]}.npz"
        with _lock(self.directory, shared=True), atomic_writer(target) as fh:
            np.savez(
                fh,
                keys=np.asarray(keys, dtype=str),
                stamps=np.asarray(stamps, dtype=str),
                features=features,
            )
        self._next_part += 1
        self._parts[target] = len(keys)
        return target

    def _compact(self) -> None:
        """Merge the smaller half of the parts into one (a size-tiered merge: each row is rewritten a few
        times at most, however long the run)."""
        small = sorted(self._parts, key=lambda p: (self._parts[p], p.name))[: len(self._parts) // 2 + 1]
        keys: list[str] = []
        stamps: list[str] = []
        rows: list[np.ndarray] = []
        for part in sorted(small):  # in writing order, so a later row of a key wins as in load()
            got = _read_part(part)
            if got is not None:
                keys.extend(got[0])
                stamps.extend(got[1])
                rows.append(got[2])
        if keys:
            self._write_part(keys, stamps, np.concatenate(rows))
        self._drop(small)

    def _drop(self, parts: Sequence[Path]) -> None:
        for part in parts:
            part.unlink(missing_ok=True)
            self._parts.pop(part, None)

    def _remove_stale_temporaries(self) -> None:
        """Every temporary part when no writer is writing one (their writers died), else the old ones."""
        now = time.time()
        with _lock(self.directory, shared=False) as alone:
            for tmp in self.directory.glob(".part-*.tmp-*"):
                try:
                    if alone or now - tmp.stat().st_mtime > _STALE_TMP_SECONDS:
                        tmp.unlink()
                except OSError:
                    pass


@contextmanager
def _lock(directory: Path, *, shared: bool) -> Iterator[bool]:
    """The cache's writers lock: ``shared`` waits for it (a part is being written); otherwise it is only
    tried, and the context says whether it was taken (no part is being written anywhere)."""
    if fcntl is None:  # pragma: no cover - Windows
        yield False
        return
    try:
        fd = os.open(directory / _WRITERS, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    except OSError:  # a read-only cache: nothing is written into it either
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX | fcntl.LOCK_NB)
            taken = True
        except BlockingIOError:
            taken = False
        yield taken
    finally:
        os.close(fd)


def _part_number(part: Path) -> int:
    try:
        return int(part.stem.split("-")[1])
    except (IndexError, ValueError):
        return -1


def _read_part(part: Path) -> tuple[list[str], list[str], np.ndarray] | None:
    """A part's keys, stamps and features; ``None`` when it is unreadable (it is redone)."""
    try:
        with np.load(part, allow_pickle=False) as data:
            keys, stamps, feats = data["keys"], data["stamps"], data["features"]
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        return None
    if not (len(keys) == len(stamps) == len(feats)):
        return None
    return [str(k) for k in keys.tolist()], [str(s) for s in stamps.tolist()], np.asarray(feats, dtype=np.float32)
