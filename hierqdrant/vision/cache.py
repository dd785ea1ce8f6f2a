"""A local cache of embedded features, so an interrupted ingest resumes without embedding again.

Layout: ``<cache_root>/<collection>/<extractor hash>/part-NNNNNN.npz``, each part holding ``keys``
(item keys), ``stamps`` (``size:mtime_ns`` of the file when it was embedded) and ``features``. A part
is written to a temporary name and renamed, so a kill leaves whole parts only. An item whose file
changed since (other stamp) is embedded again.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hierqdrant.core.fileio import atomic_writer


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
        flush_seconds: float = 30.0,
    ):
        self.directory = Path(root) / collection / extractor_hash(description)
        # Rows per part: few parts for big ingests, but one at least every ``flush_seconds`` so a kill
        # loses little work. $HIERQDRANT_CACHE_FLUSH_ROWS overrides the row count.
        self.flush_every = flush_every or int(os.environ.get("HIERQDRANT_CACHE_FLUSH_ROWS", "4096"))
        self.flush_seconds = flush_seconds
        self._last_flush = time.monotonic()
        self._keys: list[str] = []
        self._stamps: list[str] = []
        self._rows: list[np.ndarray] = []
        self._next_part = 0

    def load(self) -> dict[str, tuple[str, np.ndarray]]:
        """``key → (stamp, feature)`` of every complete part; unreadable parts are ignored (and redone)."""
        out: dict[str, tuple[str, np.ndarray]] = {}
        if not self.directory.is_dir():
            return out
        for part in sorted(self.directory.glob("part-*.npz")):
            try:
                with np.load(part, allow_pickle=False) as data:
                    keys, stamps, feats = data["keys"], data["stamps"], data["features"]
            except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
                continue
            for key, stamp, row in zip(keys.tolist(), stamps.tolist(), feats, strict=True):
                out[str(key)] = (str(stamp), row)
            self._next_part = max(self._next_part, int(part.stem.split("-")[1]) + 1)
        return out

    def add(self, keys: Sequence[str], stamps: Sequence[str], features: np.ndarray) -> None:
        self._keys.extend(keys)
        self._stamps.extend(stamps)
        self._rows.extend(np.asarray(features, dtype=np.float32))
        if len(self._keys) >= self.flush_every or time.monotonic() - self._last_flush > self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        self._last_flush = time.monotonic()
        if not self._keys:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.directory / f"part-{self._next_part:06d}.npz"
        with atomic_writer(target) as fh:
            np.savez(
                fh,
                keys=np.asarray(self._keys, dtype=str),
                stamps=np.asarray(self._stamps, dtype=str),
                features=np.stack(self._rows),
            )
        self._next_part += 1
        self._keys, self._stamps, self._rows = [], [], []
