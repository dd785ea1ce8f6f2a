"""The one atomic write: content, no temporary file left behind, the old file intact on an error."""

from __future__ import annotations

from pathlib import Path

import pytest

from hierqdrant.core import fileio
from hierqdrant.core.fileio import atomic_write, atomic_writer, fsync_dir


def test_atomic_write_writes_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "a.bin"
    atomic_write(target, b"first")
    assert target.read_bytes() == b"first"
    atomic_write(target, b"second, longer")
    assert target.read_bytes() == b"second, longer"
    atomic_write(str(target), b"")  # str paths and empty content
    assert target.read_bytes() == b""
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]  # no temporary file left behind


def test_atomic_writer_streams(tmp_path: Path) -> None:
    target = tmp_path / "b.bin"
    with atomic_writer(target) as fh:
        fh.write(b"ab")
        fh.write(b"cd")
        assert not target.exists()  # nothing visible before the rename
    assert target.read_bytes() == b"abcd"
    assert [p.name for p in tmp_path.iterdir()] == ["b.bin"]


def test_an_error_mid_write_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "c.bin"
    atomic_write(target, b"old")
    with pytest.raises(RuntimeError, match="disk full"), atomic_writer(target) as fh:
        fh.write(b"half of the new")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["c.bin"]


def test_a_failed_rename_leaves_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "d.bin"
    atomic_write(target, b"old")

    def refuse(src: object, dst: object) -> None:
        raise OSError("rename refused")

    monkeypatch.setattr(fileio.os, "replace", refuse)
    with pytest.raises(OSError, match="rename refused"):
        atomic_write(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["d.bin"]


def test_the_folder_is_fsynced_and_a_platform_without_it_is_tolerated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real_fsync = fileio.os.fsync
    monkeypatch.setattr(fileio.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    atomic_write(tmp_path / "e.bin", b"x")
    assert len(synced) == 2  # the file, then its folder

    def no_dirs(*args: object, **kwargs: object) -> int:
        raise PermissionError("directories cannot be opened here")  # as on Windows

    monkeypatch.setattr(fileio.os, "open", no_dirs)
    fsync_dir(tmp_path)  # skipped without an error
    atomic_write(tmp_path / "f.bin", b"y")
    assert (tmp_path / "f.bin").read_bytes() == b"y"
