"""One atomic file write for the whole package.

:func:`atomic_write` (bytes) and :func:`atomic_writer` (a file object to stream into, for large ``.npz``
files and checkpoints) write a temporary file in the target's folder, flush and fsync it, rename it over
the target with ``os.replace`` and fsync the folder, so that a reader sees the old content or the new one,
never a mix, and the rename survives a power cut. On an error the temporary file is removed and the old
file is left as it was.

The folder fsync is POSIX: where a directory cannot be opened (Windows) it is skipped.
"""

from __future__ import annotations

import errno
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

from hierqdrant.core.errors import InputError

__all__ = ["atomic_write", "atomic_writer", "check_free_space", "disk_error", "free_bytes", "fsync_dir", "size_text"]

MiB = 1 << 20
#: The errors of a disk that takes no more writes: full, over quota, read-only, not ours to write.
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


def fsync_dir(directory: str | Path) -> None:
    """Make a rename inside ``directory`` durable; a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        # some file systems refuse fsync on a directory; the rename itself is done
        with suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_writer(path: str | Path) -> Iterator[BinaryIO]:
    """Yield a binary file to write; on a clean exit it replaces ``path`` atomically and durably.

    The temporary file ``.<name>.tmp-<random>`` lies next to ``path`` (same file system, so the rename is
    atomic; the leading dot keeps it out of globs such as ``part-*.npz``). The folder must exist.
    """
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex}")
    try:
        with open(tmp, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


def atomic_write(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably (see :func:`atomic_writer`)."""
    with atomic_writer(path) as fh:
        fh.write(data)


def size_text(n: float) -> str:
    """``64 MB``, ``1.5 GB``: a size for a message (powers of 1024)."""
    if n >= 1 << 30:
        return f"{n / (1 << 30):.1f} GB"
    return f"{max(1, round(n / MiB))} MB"


def free_bytes(path: str | Path) -> int:
    """Free bytes for an unprivileged writer on the file system of ``path`` (or of its nearest existing
    folder above, for a path not made yet)."""
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    return int(shutil.disk_usage(p).free)


def check_free_space(path: str | Path, need: int, doing: str) -> None:
    """One :class:`InputError` when the file system of ``path`` has less than ``need`` bytes free, saying how
    much ``doing`` needs (e.g. ``"opening collection 'pics'"``) and how much there is. A check before a
    write that would otherwise fail halfway (or, in a memory-mapped file, end the process with SIGBUS)."""
    free = free_bytes(path)
    if free < need:
        raise InputError(
            f"not enough disk space for {doing}: it needs about {size_text(need)} free on the disk of {path}, "
            f"which has {size_text(free)}",
            "free some space there, or use another folder (--data-dir / HIERQDRANT_DATA)",
        )


def disk_error(exc: OSError, doing: str | None = None, need: int | None = None) -> InputError | None:
    """The one-line error for a write that the disk refused (full, over quota, read-only, no permission),
    naming the file, what was being done and, for a full disk, the space ``need``-ed; None for other errors."""
    if exc.errno not in DISK_ERRNOS:
        return None
    what = f" while {doing}" if doing else ""
    reason = exc.strerror or os.strerror(exc.errno or 0)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        target = f" under {exc.filename}" if exc.filename is not None else ""
        needed = f"; about {size_text(need)} needed" if need else ""
        return InputError(
            f"the disk is full{target}{what} ({reason}{needed})",
            "free some space on that disk, or use another folder (--data-dir / HIERQDRANT_DATA)",
        )
    verb = "write" if exc.errno == errno.EROFS else "use"
    where = exc.filename if exc.filename is not None else "the disk"
    return InputError(
        f"cannot {verb} {where}{what}: {reason}",
        "use a folder you can write (--data-dir / HIERQDRANT_DATA), or make this one writable",
    )
