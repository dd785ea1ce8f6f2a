"""The disk space the embedded engine needs, checked before a shard is opened, created or written.

qdrant-edge keeps a shard in memory-mapped files that it creates at full size but sparse (holes, no blocks
yet) and fills as it goes: two 32 MiB write-ahead-log segments, 32 MiB chunks of vectors, 32 MiB pages of
payload, a few MiB per payload index. On a full disk, filling a hole of a mapped file does not fail with an
error: the kernel ends the process with SIGBUS (exit 135, no message) — also for ``info`` and ``query``,
because opening a shard maps its vectors in and fills their holes (qdrant-edge-py 0.9 has no read-only
open: ``EdgeShard.load(path, config)`` is all there is). So every open, create and write is preceded by a
check that the disk can take every hole it may fill, and refused in one line naming the space otherwise:

* opening: the holes of the vector files (:func:`check_open`);
* creating: :data:`NEW_SHARD` (what a new shard's files come to as they fill) plus the model files;
* writing: every hole of the shard plus twice the new data (the WAL and the segment; :func:`check_write`).

``free`` is what an unprivileged writer may use (``shutil.disk_usage``). Holes are ``size − blocks × 512``
of each file (an overestimate where a file system compresses, which only makes the check safer).
"""

from __future__ import annotations

import os
from pathlib import Path

from hierqdrant.core.errors import InputError
from hierqdrant.core.fileio import MiB, check_free_space, disk_error, free_bytes

__all__ = ["NEW_SHARD", "SEGMENT", "check_create", "check_open", "check_write", "holes", "make_data_dir"]

#: qdrant-edge's unit of preallocation: a WAL segment, a vector chunk, a payload page (0.9: 32 MiB each).
SEGMENT = 32 * MiB
#: A new shard's files once written: two WAL segments, a vector chunk, a payload page and the payload
#: indexes (about 152 MiB of sparse files, filled as points arrive).
NEW_SHARD = 5 * SEGMENT
#: Above this much free space no hole count can matter (a shard's appendable segments hold a few hundred
#: MiB of holes at most): the check is one ``statvfs`` and no walk of the files.
_PLENTY = 1 << 30
_RESERVE = 4 * MiB  # collection.json, the lock file, model files rewritten


def holes(folder: Path, under: str | None = None) -> int:
    """Bytes the sparse files below ``folder`` may still allocate (only files with a folder named ``under``
    on their path, when given)."""
    total = 0
    for dirpath, _dirs, files in os.walk(folder):
        if under is not None and under not in Path(dirpath).relative_to(folder).parts:
            continue
        for f in files:
            try:
                st = os.stat(os.path.join(dirpath, f))
            except OSError:
                continue
            total += max(0, st.st_size - st.st_blocks * 512)
    return total


def _allocated(folder: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(folder):
        for f in files:
            try:
                total += os.stat(os.path.join(dirpath, f)).st_blocks * 512
            except OSError:
                continue
    return total


def _unindexed(segments: Path) -> int:
    """Bytes of the segments without an HNSW index: what an optimizer may rewrite into an indexed copy."""
    total = 0
    try:
        folders = [p for p in segments.iterdir() if p.is_dir()]
    except OSError:
        return 0
    for seg in folders:
        try:
            plain = '"hnsw"' not in (seg / "segment.json").read_text(encoding="utf-8", errors="replace")
        except OSError:
            plain = True
        if plain:
            total += _allocated(seg)
    return total


def _read_only(path: Path) -> bool:
    """Whether ``path`` is on a file system mounted read-only: nothing can be filled there, and what it
    reports as free means nothing; the engine's own one-line error says it is read-only."""
    try:
        return bool(os.statvfs(path).f_flag & getattr(os, "ST_RDONLY", 1))
    except (OSError, AttributeError):
        return False


def check_open(shard: Path, name: str) -> None:
    """Before ``EdgeShard.load``: the disk takes the holes of the vector files, which opening fills."""
    if free_bytes(shard) >= _PLENTY or _read_only(shard):
        return
    need = holes(shard, "vector_storage") + _RESERVE
    check_free_space(shard, need, f"opening collection {name!r} (the embedded engine maps its vectors in)")


def check_create(data_dir: Path, name: str, model_bytes: int = 0) -> None:
    """Before ``EdgeShard.create``: the disk takes a new shard's files and the model's."""
    need = NEW_SHARD + 2 * model_bytes + _RESERVE
    if free_bytes(data_dir) < need and not _read_only(data_dir):
        check_free_space(data_dir, need, f"creating collection {name!r}")


def check_write(shard: Path, name: str, new_bytes: int = 0, *, rewrite: bool = False) -> None:
    """Before a write of ``new_bytes``: the disk takes every hole of the shard (any may be filled) and the new
    data twice (the WAL and the segment); ``rewrite``: an optimize, which may copy the segments that have no
    HNSW index yet into an indexed one."""
    if (free_bytes(shard) >= _PLENTY + 2 * new_bytes and not rewrite) or _read_only(shard):
        return
    need = holes(shard) + 2 * new_bytes + (_unindexed(shard / "segments") if rewrite else 0) + _RESERVE
    check_free_space(shard, need, f"writing collection {name!r}")


def make_data_dir(data_dir: Path) -> None:
    """Create the data directory (and its parents), or one ``InputError``: a file in its place, a read-only or
    full disk, no permission."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise InputError(
            f"the data dir {data_dir} is a file (or inside one), not a folder",
            "pass a folder (--data-dir / HIERQDRANT_DATA), or move that file away",
        ) from None
    except OSError as exc:
        error = disk_error(exc, f"creating the data dir {data_dir}")
        if error is None:
            raise
        raise error from None
    if not data_dir.is_dir():  # pragma: no cover - a race with another process
        raise InputError(f"the data dir {data_dir} is not a folder", "pass a folder (--data-dir / HIERQDRANT_DATA)")
