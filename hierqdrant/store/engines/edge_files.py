"""The embedded engine's files beside its collections: the writer lock and the temporary names.

Under the data directory, for a collection ``<name>``:

    .<name>.lock                 the writer lock (``fcntl.flock``; holds the writer's pid); kept, never removed;
                                 opened without following a link, and refused unless a plain file
    .<name>.tmp-<32 hex>/        a collection being created, renamed to ``<name>/`` when it is complete
    .<name>.del-<32 hex>/        a collection being deleted (renamed away first, then removed)
    <name>/model-<gen>/          a model's files (:func:`store_model_files`)

Every writer of a collection holds its lock: between processes it is exclusive, within one process it is
re-entrant (the engine serialises its own threads). Only a lock holder makes temporary names, so whatever
temporary name of ``<name>`` exists while the lock is held was left by a process that died: the holder
removes it (:func:`stale_paths`). Names longer than 200 characters are shortened with a hash.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import stat
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hierqdrant.core.errors import EngineError, InputError
from hierqdrant.core.fileio import atomic_write, fsync_dir
from hierqdrant.store.engines.base import sha256_hex, utc_now
from hierqdrant.store.engines.edge_space import make_data_dir

try:  # POSIX; elsewhere the lock is a no-op (one process per data directory is then the caller's duty)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "MODEL_DIR_RE",
    "busy_error",
    "collection_lock",
    "holds_collection_files",
    "is_temporary_file",
    "lock_holder",
    "meta_bytes",
    "not_a_lock_file",
    "remove_leftovers",
    "retry_while_busy",
    "stale_paths",
    "store_model_files",
    "temporary_dir",
]

_HEX32 = "[0-9a-f]{32}"
_TMP_FILE_RE = re.compile(rf"^\..+\.tmp-{_HEX32}$")  # core.fileio.atomic_writer's temporary files
MODEL_DIR_RE = re.compile(r"^model(-[0-9a-f]{16})?$")
"""A collection's model folder: ``model-<gen>``, or ``model`` in collections written before generations."""


@dataclass
class _Held:
    fd: int
    depth: int


_held: dict[str, _Held] = {}
_held_guard = threading.Lock()


def _drop_locks_in_child() -> None:
    """In a forked child (a DataLoader worker): close the lock files this process holds. An ``flock``
    belongs to the open file description, which fork shares, so a worker would otherwise hold the
    collection's lock after its writer died (``kill -9``) until it exits too, and the next writer would be
    told that the dead pid holds it. Closing the child's copy leaves the parent's lock as it is."""
    global _held_guard
    for held in list(_held.values()):
        with suppress(OSError):
            os.close(held.fd)
    _held.clear()
    _held_guard = threading.Lock()  # another thread of the parent may have held it at the fork


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_drop_locks_in_child)


def _short(name: str) -> str:
    if len(name) <= 200:
        return name
    return f"{name[:180]}-{hashlib.sha256(name.encode()).hexdigest()[:16]}"


def lock_path(data_dir: Path, name: str) -> Path:
    return data_dir / f".{_short(name)}.lock"


def temporary_dir(data_dir: Path, name: str, kind: str = "tmp") -> Path:
    """A fresh temporary directory name for building (``tmp``) or deleting (``del``) collection ``name``."""
    return data_dir / f".{_short(name)}.{kind}-{uuid.uuid4().hex}"


def stale_paths(data_dir: Path, name: str) -> list[Path]:
    """The temporary directories of ``name`` under ``data_dir`` (left by a writer that died)."""
    pattern = re.compile(rf"^\.{re.escape(_short(name))}\.(tmp|del)-{_HEX32}$")
    try:
        return [p for p in data_dir.iterdir() if pattern.match(p.name)]
    except OSError:
        return []


def remove_leftovers(data_dir: Path, name: str, folder: Path, in_use: Callable[[], str | None]) -> None:
    """Remove what a writer of collection ``name`` that died left behind, and only what provably is that
    (the caller holds the lock): its temporary folders beside ``folder`` and temporary files in it and in
    its model folders (names only a lock holder makes), and model folders that ``collection.json`` does not
    use. ``in_use()`` names the folder ``collection.json`` uses once the model there is read and verified
    (``None`` when it is unreadable, names no model, or names one that does not verify: a damaged or edited
    ``collection.json`` may name the wrong folder, so every model folder stays for a restore); it is asked
    only when there are two model folders or more."""
    for p in stale_paths(data_dir, name):
        shutil.rmtree(p, ignore_errors=True)
    if not (folder / "collection.json").is_file():
        return
    models = []
    for p in folder.iterdir():
        if p.is_dir() and not p.is_symlink() and MODEL_DIR_RE.match(p.name):
            models.append(p)
            for f in p.iterdir():
                if is_temporary_file(f):
                    f.unlink(missing_ok=True)
        elif is_temporary_file(p):
            p.unlink(missing_ok=True)
    current = in_use() if len(models) > 1 else None
    if current is not None:
        for p in models:
            if p.name != current:
                shutil.rmtree(p, ignore_errors=True)


def is_temporary_file(path: Path) -> bool:
    """Whether ``path`` is a temporary file of an atomic write (``.<target>.tmp-<32 hex>``)."""
    return bool(_TMP_FILE_RE.match(path.name))


def lock_holder(data_dir: Path, name: str) -> int | None:
    """The pid of another process that holds the writer lock of ``name`` now (0: held, pid not visible),
    ``None`` when nobody else does. Only looks: a reader never takes the lock (a writer starting at that
    moment would be refused). Linux: ``/proc/locks``; elsewhere the pid the last writer left in the lock
    file, when that process is alive."""
    try:
        st = os.stat(lock_path(data_dir, name), follow_symlinks=False)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    try:
        with open("/proc/locks", "rb") as fh:
            table = fh.read().decode("ascii", "replace")
    except OSError:
        return _live_pid(lock_path(data_dir, name))
    where = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in table.splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == where:
            pid = int(fields[4]) if fields[4].isdigit() else 0
            return None if pid == os.getpid() else pid
    return None


def _live_pid(path: Path) -> int | None:
    try:
        text = path.read_bytes().decode("ascii", "replace").strip()
        pid = int(text) if text.isdigit() else 0
        if pid <= 0 or pid == os.getpid():
            return None
        os.kill(pid, 0)
    except PermissionError:  # alive, another user's
        return pid
    except (OSError, ValueError):
        return None
    return pid


def busy_error(name: str, pid: int | None) -> EngineError:
    who = f"pid {pid}" if pid else "pid unknown"
    return EngineError(
        f"collection {name!r} is being written by another process ({who})",
        "wait for it to finish (hierqdrant ingest --wait waits) or use another --collection",
    )


def _read_pid(fd: int) -> int | None:
    for _ in range(20):  # the holder writes its pid right after taking the lock
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        if text.isdigit():
            return int(text)
        time.sleep(0.005)
    return None


_LOCK_FLAGS = (
    os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
)
"""How a lock file is opened: never through a symbolic link (``O_NOFOLLOW``), never blocking on a FIFO."""


def not_a_lock_file(path: str, name: str, what: str) -> InputError:
    """The error for a lock path that is not a plain file of its own (nothing is written to it)."""
    how = "move it away (or remove it)" if what == "a directory" else f"remove it (rm {path})"
    return InputError(
        f"{path}, the writer lock of collection {name!r}, is {what}, not a plain file of its own; nothing was written",
        f"{how}: the next writer creates a new lock file there",
    )


def _open_lock(path: str, name: str) -> int:
    """Open (or create) the lock file at ``path``: a plain file with no other hard link. A symbolic link
    (also a dangling one, or one to ``/dev/null``), a directory, a FIFO, a device or a hard link to some
    other file is refused with :func:`not_a_lock_file` before anything is written to it: the lock file
    is truncated to the writer's pid, which must not land in another file."""
    try:
        fd = os.open(path, _LOCK_FLAGS, 0o644)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.EMLINK):  # O_NOFOLLOW on a link (EMLINK on FreeBSD)
            raise not_a_lock_file(path, name, "a symbolic link") from None
        if e.errno == errno.EISDIR:
            raise not_a_lock_file(path, name, "a directory") from None
        if e.errno == errno.ENXIO:  # a socket, or a device without a driver
            raise not_a_lock_file(path, name, "a socket or device") from None
        raise EngineError(
            f"cannot open {path}, the writer lock of collection {name!r}: {e.strerror or e}",
            "check the data dir's permissions (--data-dir / HIERQDRANT_DATA)",
        ) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a device"
            raise not_a_lock_file(path, name, kind)
        if st.st_nlink > 1:
            raise not_a_lock_file(path, name, f"a file with {st.st_nlink} hard links")
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextmanager
def collection_lock(
    data_dir: Path,
    name: str,
    *,
    wait: bool = False,
    on_wait: Callable[[int | None], None] | None = None,
) -> Iterator[bool]:
    """Hold the writer lock of collection ``name``; yields whether this call took it (the process's first).

    When another process holds it: raise :func:`busy_error` naming its pid, or with ``wait`` call
    ``on_wait(pid)`` once and block until it is free.
    """
    if fcntl is None:  # pragma: no cover - Windows
        yield True
        return
    key = str(lock_path(data_dir, name))
    with _held_guard:
        held = _held.get(key)
        if held is not None:
            held.depth += 1
        else:
            make_data_dir(data_dir)  # one line for a file in its place, a read-only or full disk
            fd = _open_lock(key, name)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                got = True
            except BlockingIOError:
                got = False
            except BaseException:
                os.close(fd)
                raise
            if got:
                held = _held[key] = _Held(fd, 1)
    if held is None:  # another process holds it
        pid = _read_pid(fd)
        if not wait:
            os.close(fd)
            raise busy_error(name, pid)
        if on_wait is not None:
            on_wait(pid)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        with _held_guard:
            held = _held[key] = _Held(fd, 1)
    first = held.depth == 1
    if first:
        os.ftruncate(held.fd, 0)
        os.pwrite(held.fd, f"{os.getpid()}\n".encode(), 0)
    try:
        yield first
    finally:
        with _held_guard:
            held.depth -= 1
            if held.depth == 0:
                del _held[key]
                fcntl.flock(held.fd, fcntl.LOCK_UN)
                os.close(held.fd)


def meta_bytes(meta: dict[str, Any]) -> bytes:
    return json.dumps(meta, indent=2, sort_keys=True, allow_nan=False).encode()


def store_model_files(collection_dir: Path, files: dict[str, bytes]) -> dict[str, Any]:
    """Write ``files`` durably into a new ``model-<gen>/`` of ``collection_dir``; its ``collection.json`` entry."""
    folder = f"model-{uuid.uuid4().hex[:16]}"
    mdir = collection_dir / folder
    mdir.mkdir()
    for fname, data in files.items():
        atomic_write(mdir / fname, data)
    fsync_dir(collection_dir)
    return {
        "dir": folder,
        "written": utc_now(),
        "files": {f: {"sha256": sha256_hex(b), "size": len(b)} for f, b in files.items()},
    }


def holds_collection_files(folder: Path) -> bool:
    """Whether ``folder`` has a shard or a model folder (the rest of a collection)."""
    try:
        return any(p.name == "shard" or MODEL_DIR_RE.match(p.name) for p in folder.iterdir() if p.is_dir())
    except OSError:
        return False


def retry_while_busy(open_shard: Callable[[], object], timeout: float = 60.0) -> None:
    """Call ``open_shard`` until it stops failing with "open in another process" (``timeout`` seconds at
    most): a writer releases the collection's lock before it closes its shard, whose WAL stays locked a
    moment longer. Other errors are raised at once."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            open_shard()
            return
        except EngineError as e:
            if "open in another process" not in e.problem or time.monotonic() > deadline:
                raise
            time.sleep(0.1)
