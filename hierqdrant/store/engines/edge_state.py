"""What the embedded engine knows of its collection folders: damage, and what it keeps between calls —
each ``collection.json`` as last read (read again only when the file changed, so a check per query costs
one ``stat``) and the collection's **generation**, which tells a collection deleted and made again (by this
process or another) from the one an opened shard belongs to.

A collection created by this version records a random token (``"generation"`` in ``collection.json``); one
written before has none, and its generation is its creation time with the identity of its folder.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hierqdrant.core.errors import EngineError, InputError
from hierqdrant.store.engines.base import check_collection_name
from hierqdrant.store.engines.edge_files import holds_collection_files

__all__ = ["READ_ONLY", "Snapshots", "damage", "damaged_folders", "engine_error", "generation_of"]


def generation_of(meta: dict[str, Any], folder: Path) -> str:
    """The generation of the collection in ``folder`` whose ``collection.json`` is ``meta``."""
    token = meta.get("generation")
    if isinstance(token, str) and token:
        return token
    st = os.stat(folder)
    return f"{meta.get('created')}@{st.st_dev}:{st.st_ino}"


class Snapshots:
    """``collection.json`` of each collection folder as last read, keyed by the file's identity and times.

    :meth:`current` raises ``FileNotFoundError`` when the file is gone (the caller's not-found error) and
    passes on what ``read`` raises. Shared by threads; an entry is replaced whole.
    """

    def __init__(self) -> None:
        self._seen: dict[Path, tuple[tuple[int, ...], dict[str, Any], str]] = {}
        self._guard = threading.Lock()

    def current(self, folder: Path, read: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], str]:
        """``(collection.json, generation)`` of ``folder`` as they are now. The dict is shared: do not
        change it (copy it first)."""
        st = os.stat(folder / "collection.json")
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        hit = self._seen.get(folder)
        if hit is not None and hit[0] == key:
            return hit[1], hit[2]
        meta = read()
        generation = generation_of(meta, folder)
        with self._guard:
            self._seen[folder] = (key, meta, generation)
        return meta, generation

    def forget(self, folder: Path) -> None:
        with self._guard:
            self._seen.pop(folder, None)


def damage(folder: Path, name: str, location: str) -> InputError | None:
    """The problem of a collection folder without ``collection.json``: damaged when its shard or model is
    there, not a collection when it holds anything else; ``None`` for a collection, nothing, or an empty
    folder (nothing to lose)."""
    d = folder
    if (d / "collection.json").exists() or not (d.exists() or d.is_symlink()):
        return None
    if d.is_dir() and not d.is_symlink() and not any(d.iterdir()):
        return None
    if d.is_dir() and holds_collection_files(d):
        return InputError(
            f"collection {name!r} in {location} is damaged: {d / 'collection.json'} is missing "
            "although its shard or model is on disk",
            f"restore collection.json from a backup, or rebuild it (hierqdrant ingest … -c {name} "
            "--recreate), which deletes what is there",
        )
    return InputError(f"{d} exists and is not a hierqdrant collection", "move it away or choose another name")


def damaged_folders(data_dir: Path, location: str) -> dict[str, str]:
    """``{name: problem}`` of the folders under ``data_dir`` that hold a shard or model folder without
    ``collection.json``."""
    if not data_dir.is_dir():
        return {}
    out: dict[str, str] = {}
    for p in sorted(data_dir.iterdir()):
        try:
            check_collection_name(p.name)
        except InputError:
            continue
        if p.is_dir() and not (p / "collection.json").exists() and holds_collection_files(p):
            err = damage(p, p.name, location)
            if err is not None:
                out[p.name] = err.problem
    return out


READ_ONLY = "cannot be written here"
"""In the problem of :func:`engine_error` when the store's files cannot be written (``info`` says "read-only")."""


def engine_error(what: str, name: str, e: Exception) -> EngineError:
    """One line for what qdrant-edge raised: another process holds the shard open, the files cannot be
    written (qdrant-edge opens a shard for writing, also to read it), or the operation failed."""
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    if "WouldBlock" in msg or "failed to open WAL" in msg:
        return EngineError(
            f"collection {name!r} is open in another process ({msg})",
            "close the other process (one process at a time may open an embedded collection)",
        )
    if "os error 30" in msg or "os error 13" in msg:
        why = "the file system is read-only" if "os error 30" in msg else "this user may not write its files"
        return EngineError(
            f"collection {name!r} {READ_ONLY}: {why} (qdrant-edge opens a collection for writing, also to read it)",
            "copy the data dir somewhere writable, or run as its owner",
        )
    return EngineError(f"embedded engine failed to {what} on {name!r}: {msg}", "check the request and the data dir")
