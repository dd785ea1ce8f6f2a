"""Nothing lost, second pass, items 12 and 13: a full disk, a read-only one, and options that broke the machine.

- 12: on a small tmpfs ``ingest`` died with SIGBUS (exit 135, no message), and ``info``/``query`` too when
  less than about 60 MB were free: qdrant-edge maps its files sparse and fills them as it goes, and a full
  disk turns that into SIGBUS. The embedded engine now checks the free space before it opens, creates or
  writes a shard (``hierqdrant.store.engines.edge_space``) and says in one line how much it needs; an
  ENOSPC in the feature cache or in any other write is one line too. qdrant-edge-py 0.9 cannot open a
  shard read-only, so ``query`` on a disk without room to open it is refused in one line naming the space.
- 13: a read-only data dir, a ``--data-dir`` that is a file, an empty ``--weights`` file, ``--image-size
  100000`` (a 13 GB worker) and a ``--filter`` integer beyond 64 bits are each one line, exit 2.

The tmpfs and read-only bind-mount cases run where this process may mount (root) and are skipped otherwise;
the same checks are exercised everywhere with ``shutil.disk_usage`` and the writes patched. Whatever may end
in SIGBUS runs in a subprocess, so a regression fails the test instead of killing pytest.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hierqdrant.core.errors import InputError
from hierqdrant.vision.cache import FeatureCache
from tests.cli.test_cli_ingest import make_folder
from tests.conftest import gaussian_classes
from tests.helpers.cli import one_error_line, run

PIXELS = ["--model", "pixels", "--image-size", "8", "--device", "cpu", "--workers", "0", "--threshold", "0.2"]
MiB = 1 << 20


def cli(*args: object, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """The command in its own process (a SIGBUS ends that one, not pytest)."""
    return subprocess.run(
        [sys.executable, "-m", "hierqdrant", *(str(a) for a in args)],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


@pytest.fixture
def features(tmp_path: Path) -> Path:
    x, y = gaussian_classes(np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]]), per_class=20, dims=6, seed=2)
    path = tmp_path / "f.npz"
    np.savez(path, features=x, labels=y)
    return path


def _fake_free(monkeypatch: pytest.MonkeyPatch, free: int) -> None:
    real = shutil.disk_usage

    def disk_usage(path: Any) -> Any:
        total, used, _ = real(path)
        return type(real(path))(total, used, free)

    monkeypatch.setattr(shutil, "disk_usage", disk_usage)


# ---------------------------------------------------------------------------------------------------------
# 12. a full disk: the space is checked first, and named


def test_a_disk_without_room_for_a_new_collection_is_one_line_before_anything_is_written(
    tmp_path: Path, features: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_free(monkeypatch, 20 * MiB)
    store = tmp_path / "store"
    line = one_error_line(*run("ingest", features, "-c", "feats", "--data-dir", store)[::2])
    assert "not enough disk space for creating collection 'feats'" in line, line
    assert "it needs about 164 MB free" in line and "which has 20 MB" in line, line
    assert not (store / "feats").exists()
    monkeypatch.undo()
    assert run("ingest", features, "-c", "feats", "--data-dir", store)[0] == 0  # with room, the same ingest works


def test_opening_a_collection_on_a_full_disk_names_the_space_it_needs(
    tmp_path: Path, features: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "store"
    assert run("ingest", features, "-c", "feats", "--data-dir", store)[0] == 0
    _fake_free(monkeypatch, MiB // 2)  # below any shard's needs (the reserve alone is 4 MB)
    line = one_error_line(*run("query", features, "-c", "feats", "--data-dir", store)[::2])
    assert "not enough disk space for opening collection 'feats'" in line and "MB free" in line, line
    line = one_error_line(*run("ingest", features, "-c", "feats", "--data-dir", store)[::2])
    assert "not enough disk space for opening collection 'feats'" in line, line


def test_enospc_in_the_feature_cache_is_one_line_naming_the_space(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hierqdrant.vision.cache as cache_module

    def full(*_: Any, **__: Any) -> Any:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    cache = FeatureCache(tmp_path / "cache", "pics", {"name": "pixels"})
    cache.add(["a.png", "b.png"], ["1:1", "2:2"], np.ones((2, 1000), np.float32))
    monkeypatch.setattr(cache_module, "atomic_writer", full)
    with pytest.raises(InputError) as caught:
        cache.flush()
    assert "the disk is full while writing the feature cache" in str(caught.value), caught.value
    assert "about 1 MB needed" in str(caught.value) and "\n" not in str(caught.value)
    # through the CLI: one line, and the same ingest finishes once there is room
    src = make_folder(tmp_path / "imgs", classes=3, per_class=4, size=16)
    store = tmp_path / "store"
    line = one_error_line(*run("ingest", src, "-c", "pics", *PIXELS, "--data-dir", store)[::2])
    assert "the disk is full while writing the feature cache" in line, line
    monkeypatch.undo()
    assert run("ingest", src, "-c", "pics", *PIXELS, "--data-dir", store)[0] == 0


def test_enospc_in_any_other_write_is_one_line(tmp_path: Path, features: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hierqdrant.store.engines.edge as edge_module

    def full(path: Any, data: bytes) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(edge_module, "atomic_write", full)  # collection.json of a new collection
    line = one_error_line(*run("ingest", features, "-c", "feats", "--data-dir", tmp_path / "store")[::2])
    assert line.startswith("error: the disk is full under ") and "collection.json" in line, line
    monkeypatch.undo()
    assert run("ingest", features, "-c", "feats", "--data-dir", tmp_path / "store")[0] == 0


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Any]:
    """``mount(size_mb)`` → a fresh tmpfs of that size (skips where mounting is not allowed)."""
    mounted: list[Path] = []

    def mount(size_mb: int) -> Path:
        where = tmp_path / f"tmpfs{len(mounted)}"
        where.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(where)], capture_output=True, check=False
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
        mounted.append(where)
        return where

    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


def test_ingest_on_a_small_tmpfs_is_one_line_not_sigbus(tmpfs: Any, features: Path) -> None:
    small = tmpfs(20)
    done = cli("ingest", features, "-c", "feats", "--data-dir", small / "store", "-q")
    assert done.returncode == 2, (done.returncode, done.stderr)  # was 135 (SIGBUS), with no message
    assert one_error_line(2, done.stderr).startswith("error: not enough disk space for creating collection")


def test_info_and_query_on_a_nearly_full_tmpfs_are_one_line_not_sigbus(
    tmpfs: Any, tmp_path: Path, features: Path
) -> None:
    made = tmpfs(400)
    assert cli("ingest", features, "-c", "feats", "--data-dir", made / "store", "-q").returncode == 0
    disk = tmpfs(120)
    subprocess.run(["cp", "-a", "--sparse=always", str(made / "store"), str(disk)], check=True)  # holes kept
    os.posix_fallocate(
        fd := os.open(disk / "filler", os.O_CREAT | os.O_WRONLY), 0, shutil.disk_usage(disk).free - 16 * MiB
    )
    os.close(fd)
    done = cli("query", features, "-c", "feats", "--data-dir", disk / "store")
    assert done.returncode == 2, (done.returncode, done.stderr)  # was 135
    line = one_error_line(2, done.stderr)
    assert "not enough disk space for opening collection 'feats'" in line and "which has 16 MB" in line, line
    done = cli("info", "--data-dir", disk / "store", "--json")
    assert done.returncode in (0, 2) and "Traceback" not in done.stderr, (done.returncode, done.stderr)
    assert "opening collection 'feats'" in done.stdout + done.stderr  # info lists why it cannot open it


# ---------------------------------------------------------------------------------------------------------
# 13. read-only data dirs, a data dir that is a file, an empty checkpoint, a huge image size, a huge integer


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    """A read-only view of ``tmp_path/rw`` (a read-only bind mount; skips where it cannot be made)."""
    rw, ro = tmp_path / "rw", tmp_path / "ro"
    rw.mkdir()
    ro.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("a bind mount needs root")
    done = subprocess.run(["mount", "--bind", str(rw), str(ro)], capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {done.stderr.decode(errors='replace').strip()}")
    subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], capture_output=True, check=False)
    try:
        if os.access(ro, os.W_OK) and _writable(ro):
            pytest.skip("the bind mount did not become read-only")
        yield ro
    finally:
        subprocess.run(["umount", "-l", str(ro)], capture_output=True, check=False)


def _writable(folder: Path) -> bool:
    try:
        (folder / ".probe").touch()
    except OSError:
        return False
    (folder / ".probe").unlink()
    return True


def test_a_read_only_data_dir_is_one_line_for_every_kind_of_write(
    read_only: Path, features: Path, tmp_path: Path
) -> None:
    rw = tmp_path / "rw"
    assert run("ingest", features, "-c", "feats", "--data-dir", rw / "store")[0] == 0
    src = make_folder(tmp_path / "imgs", classes=3, per_class=4, size=16)
    (rw / "cacheonly" / "cache").mkdir(parents=True)  # the cache's folder only: ingest's cache under it
    cases = [
        ("ingest", features, "-c", "new", "--data-dir", read_only / "missing"),  # the data dir cannot be made
        ("ingest", features, "-c", "feats", "--data-dir", read_only / "store"),  # a store that exists
        ("ingest", features, "-c", "other", "--data-dir", read_only / "store"),  # a new collection in it
        ("ingest", src, "-c", "pics", *PIXELS, "--data-dir", read_only / "cacheonly"),  # the feature cache
    ]
    for args in cases:
        line = one_error_line(*run(*args)[::2])
        assert "Read-only file system" in line or "read-only" in line, (args, line)


def test_a_read_only_data_dir_without_mounts(tmp_path: Path, features: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = Path.mkdir

    def mkdir(self: Path, *args: Any, **kwargs: Any) -> None:
        if "ro" in self.parts:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    line = one_error_line(*run("ingest", features, "-c", "feats", "--data-dir", tmp_path / "ro" / "store")[::2])
    assert "cannot write" in line and "Read-only file system" in line, line


def test_a_data_dir_that_is_a_file_is_one_line(tmp_path: Path, features: Path) -> None:
    (tmp_path / "afile").write_text("x")
    line = one_error_line(*run("ingest", features, "-c", "feats", "--data-dir", tmp_path / "afile")[::2])
    assert "is a file" in line, line
    line = one_error_line(*run("ingest", features, "-c", "feats", "--data-dir", tmp_path / "afile" / "below")[::2])
    assert "is a file" in line, line


def test_an_empty_checkpoint_is_one_line(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "imgs", classes=2, per_class=3, size=16)
    (tmp_path / "empty.pt").write_bytes(b"")
    code, _, err = run("ingest", src, "-c", "pics", "--model", "resnet18", "--weights", tmp_path / "empty.pt",
                       "--device", "cpu", "--workers", "0", "--data-dir", tmp_path / "store")  # fmt: skip
    assert "empty.pt is empty (0 bytes)" in one_error_line(code, err)


@pytest.mark.parametrize("model", ["pixels", "resnet18"])
def test_a_huge_image_size_is_refused_in_one_line_before_anything_runs(tmp_path: Path, model: str) -> None:
    src = make_folder(tmp_path / "imgs", classes=2, per_class=3, size=16)
    code, _, err = run("ingest", src, "-c", "pics", "--model", model, "--image-size", "100000", "--device", "cpu",
                       "--workers", "0", "--data-dir", tmp_path / "store")  # fmt: skip
    assert "image_size 100000 is too large (at most 4096)" in one_error_line(code, err)
    assert not (tmp_path / "store" / "cache" / "pics").exists()  # nothing embedded


@pytest.mark.parametrize("value", [str(2**63), str(-(2**63) - 1), "99999999999999999999999"])
def test_a_filter_integer_beyond_64_bits_is_one_line(tmp_path: Path, features: Path, value: str) -> None:
    store = tmp_path / "store"
    assert run("ingest", features, "-c", "feats", "--data-dir", store)[0] == 0
    code, _, err = run("query", features, "--data-dir", store, "--filter", f"hq.ancestors={value}")
    assert "is beyond a 64-bit integer" in one_error_line(code, err)
    code, out, err = run("query", features, "--data-dir", store, "--filter", f"hq.ancestors={2**63 - 1}", "--json")
    assert code == 0 and json.loads(out)["queries"], err  # the largest one is a filter like any other
