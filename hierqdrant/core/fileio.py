"""One atomic file write for the whole package.

:func:`atomic_write` (bytes) and :func:`atomic_writer` (a file object to stream into, for large ``.npz``
files and checkpoints) write a temporary file in the target's folder, flush and fsync it, rename it over
the target with ``os.replace`` and fsync the folder, so that a reader sees the old content or the new one,
never a mix, and the rename survives a power cut. On an error the temporary file is removed and the old
file is left as it was.

The folder fsync is POSIX: where a directory cannot be opened (Windows) it is skipped.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_write", "atomic_writer", "fsync_dir"]


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
