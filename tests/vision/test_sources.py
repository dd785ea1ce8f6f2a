"""Layout detection and discovery: ImageFolder, train/test, CUB-200-2011, unlabelled, and bad entries."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from hierqdrant.core.errors import InputError
from hierqdrant.vision import sources
from hierqdrant.vision.sources import ImageSource, discover
from tests.unprivileged import run_unprivileged, shared_tmp


def _img(path: Path, color: tuple[int, int, int] = (10, 20, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    Image.new("RGB", (4, 4), color).save(path, format=fmt)
    return path


def _reasons(src: ImageSource) -> dict[str, str]:
    return {Path(p.path).name: p.reason for p in src.problems}


def test_imagefolder_sorted_recursive_case_insensitive(tmp_path: Path) -> None:
    _img(tmp_path / "dog" / "b.png")
    _img(tmp_path / "dog" / "a.JPG")
    _img(tmp_path / "dog" / "sub" / "c.Jpeg")
    _img(tmp_path / "cat" / "x.png")
    _img(tmp_path / "Zebra" / "z.png")
    (tmp_path / "dog" / "notes.txt").write_text("hello")
    (tmp_path / "dog" / ".DS_Store").write_text("junk")
    _img(tmp_path / ".ipynb_checkpoints" / "h.png")
    (tmp_path / "README.md").write_text("readme")
    src = discover(tmp_path)
    assert src.kind == "imagefolder"
    assert src.class_names == ["Zebra", "cat", "dog"]  # Python's sorted(), as torchvision does
    assert [(it.key, it.label, it.split) for it in src.items] == [
        ("Zebra/z.png", 0, None),
        ("cat/x.png", 1, None),
        ("dog/a.JPG", 2, None),
        ("dog/b.png", 2, None),
        ("dog/sub/c.Jpeg", 2, None),
    ]
    assert all(it.path.is_absolute() and it.path.exists() for it in src.items)
    assert _reasons(src) == {}  # notes.txt is not an image: left alone, not reported
    assert src.labels == [0, 1, 2, 2, 2] and len(src) == 5 and src.num_classes == 3


def test_empty_class_folder_is_dropped_and_labels_compacted(tmp_path: Path) -> None:
    _img(tmp_path / "a" / "1.png")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "readme.txt").write_text("no images here")
    _img(tmp_path / "c" / "1.png")
    src = discover(tmp_path)
    assert src.class_names == ["a", "c"]
    assert [it.label for it in src.items] == [0, 1]
    empty = [p for p in src.problems if p.path == str(tmp_path / "b")]
    assert empty and empty[0].reason == "class folder has no images"


def test_symlink_loops_and_broken_links_are_skipped(tmp_path: Path) -> None:
    _img(tmp_path / "a" / "ok.png")
    os.symlink(tmp_path / "a" / "loop2.jpg", tmp_path / "a" / "loop1.jpg")
    os.symlink(tmp_path / "a" / "loop1.jpg", tmp_path / "a" / "loop2.jpg")
    os.symlink(tmp_path / "a", tmp_path / "a" / "again")  # directory cycle
    os.symlink(tmp_path / "nowhere.png", tmp_path / "a" / "dangling.png")
    src = discover(tmp_path)
    assert [it.key for it in src.items] == ["a/ok.png"]
    r = _reasons(src)
    assert r["loop1.jpg"] == "symlink loop" and r["loop2.jpg"] == "symlink loop"
    assert r["again"].startswith("symlink loop")
    assert r["dangling.png"] == "broken symlink"


def test_symlinked_class_folder_is_followed(tmp_path: Path) -> None:
    _img(tmp_path / "store" / "p.png")
    data = tmp_path / "data"
    data.mkdir()
    os.symlink(tmp_path / "store", data / "linked")
    src = discover(data)
    assert [(it.key, it.label) for it in src.items] == [("linked/p.png", 0)]


def test_unreadable_class_folder() -> None:
    # as root too: the scan runs as the user nobody there (tests/unprivileged.py)
    with shared_tmp() as folder:
        _img(folder / "a" / "1.png")
        locked = folder / "b"
        _img(locked / "1.png")
        locked.chmod(0)

        def scan() -> tuple[list[str], list[str]]:
            src = discover(folder)
            return src.class_names, [p.reason for p in src.problems]

        class_names, reasons = run_unprivileged(scan)
    assert class_names == ["a"]
    assert any("permission" in r for r in reasons)


def test_unreadable_folder_simulated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same path without depending on the user id: scandir raises PermissionError."""
    _img(tmp_path / "a" / "1.png")
    _img(tmp_path / "b" / "1.png")
    real_scandir = os.scandir

    def scandir(path: str | os.PathLike[str]) -> object:
        if Path(path) == tmp_path / "b":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(sources.os, "scandir", scandir)
    src = discover(tmp_path)
    assert src.class_names == ["a"]
    r = _reasons(src)
    assert r["b"] in ("unreadable (permission denied)", "class folder has no images")
    assert any(p.reason == "unreadable (permission denied)" for p in src.problems)


def test_train_test_layout(tmp_path: Path) -> None:
    _img(tmp_path / "train" / "cat" / "1.png")
    _img(tmp_path / "train" / "cat" / "2.png")
    _img(tmp_path / "train" / "dog" / "1.png")
    _img(tmp_path / "test" / "dog" / "9.png")
    (tmp_path / "test" / "cat").mkdir()  # empty in test: reported, not an error
    (tmp_path / "LICENSE").write_text("x")  # not an image: left alone
    _img(tmp_path / "val" / "cat" / "5.png")  # a folder that is neither train nor test: reported
    src = discover(tmp_path)
    assert src.kind == "train-test"
    assert src.class_names == ["cat", "dog"]
    assert [(it.key, it.label, it.split) for it in src.items] == [
        ("train/cat/1.png", 0, "train"),
        ("train/cat/2.png", 0, "train"),
        ("train/dog/1.png", 1, "train"),
        ("test/dog/9.png", 1, "test"),
    ]
    assert [it.key for it in src.split("test")] == ["test/dog/9.png"]
    r = _reasons(src)
    assert r["cat"] == "class folder has no images" and "ignored" in r["val"] and "LICENSE" not in r


def test_train_test_classes_come_from_train(tmp_path: Path) -> None:
    _img(tmp_path / "train" / "cat" / "1.png")
    _img(tmp_path / "test" / "cat" / "1.png")
    _img(tmp_path / "test" / "wolf" / "1.png")
    with pytest.raises(InputError, match="wolf"):
        discover(tmp_path)


def _make_cub(root: Path, with_split: bool = True) -> None:
    classes = ["001.Albatross", "002.Auklet", "003.Blackbird"]
    rows = [  # image id, class id (1-based), is_train
        (1, 1, 1),
        (2, 1, 0),
        (3, 2, 1),
        (4, 3, 0),
        (5, 3, 1),
    ]
    imgs, labels, split = [], [], []
    for image_id, cid, is_train in rows:
        rel = f"{classes[cid - 1]}/img_{image_id}.jpg"
        _img(root / "images" / rel)
        imgs.append(f"{image_id} {rel}")
        labels.append(f"{image_id} {cid}")
        split.append(f"{image_id} {is_train}")
    (root / "images.txt").write_text("\n".join(imgs) + "\n")
    (root / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (root / "classes.txt").write_text("\n".join(f"{i + 1} {c}" for i, c in enumerate(classes)) + "\n")
    if with_split:
        (root / "train_test_split.txt").write_text("\n".join(split) + "\n")


def test_cub_layout_one_based_ids(tmp_path: Path) -> None:
    _make_cub(tmp_path)
    src = discover(tmp_path)
    assert src.kind == "cub"
    assert src.class_names == ["001.Albatross", "002.Auklet", "003.Blackbird"]
    assert [(it.key, it.label, it.split) for it in src.items] == [
        ("images/001.Albatross/img_1.jpg", 0, "train"),
        ("images/002.Auklet/img_3.jpg", 1, "train"),
        ("images/003.Blackbird/img_5.jpg", 2, "train"),
        ("images/001.Albatross/img_2.jpg", 0, "test"),
        ("images/003.Blackbird/img_4.jpg", 2, "test"),
    ]


def test_cub_parent_folder_missing_file_and_no_split(tmp_path: Path) -> None:
    cub = tmp_path / "CUB_200_2011"
    _make_cub(cub, with_split=False)
    (cub / "images" / "002.Auklet" / "img_3.jpg").unlink()  # listed but gone → class 2 empty
    src = discover(tmp_path)
    assert src.kind == "cub" and src.root == cub
    assert src.class_names == ["001.Albatross", "003.Blackbird"]
    assert [(it.label, it.split) for it in src.items] == [(0, None), (0, None), (1, None), (1, None)]
    r = _reasons(src)
    assert "missing" in r["img_3.jpg"] and r["002.Auklet"] == "class has no images"


def test_cub_malformed_metadata(tmp_path: Path) -> None:
    _make_cub(tmp_path)
    (tmp_path / "image_class_labels.txt").write_text("1 1\nthis is not a row\n")
    with pytest.raises(InputError, match="image_class_labels.txt:2"):
        discover(tmp_path)


def test_unlabelled_folder(tmp_path: Path) -> None:
    _img(tmp_path / "b.png")
    _img(tmp_path / "a.webp")
    _img(tmp_path / "more" / "c.bmp")
    src = discover(tmp_path)
    assert src.kind == "unlabelled"
    assert src.class_names == []
    assert [(it.key, it.label, it.split) for it in src.items] == [
        ("a.webp", None, None),
        ("b.png", None, None),
        ("more/c.bmp", None, None),
    ]


def test_forced_unlabelled_on_class_folders(tmp_path: Path) -> None:
    _img(tmp_path / "2021" / "x.png")
    _img(tmp_path / "2022" / "y.png")
    assert discover(tmp_path).kind == "imagefolder"
    src = discover(tmp_path, kind="unlabelled")
    assert [it.key for it in src.items] == ["2021/x.png", "2022/y.png"]
    with pytest.raises(InputError, match="CUB"):
        discover(tmp_path, kind="cub")


def test_not_a_directory_and_no_images(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        discover(tmp_path / "missing")
    f = _img(tmp_path / "one.png")
    with pytest.raises(InputError, match="not a directory"):
        discover(f)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no images found"):
        discover(empty)
    txt = tmp_path / "txt"
    (txt / "a").mkdir(parents=True)
    (txt / "a" / "x.txt").write_text("x")
    with pytest.raises(InputError) as err:
        discover(txt)
    assert err.value.fix and "class subfolders" in err.value.fix


def test_deterministic(tmp_path: Path) -> None:
    for i in (5, 3, 9, 1):
        _img(tmp_path / f"c{i % 2}" / f"{i}.png")
    a, b = discover(tmp_path), discover(tmp_path)
    assert a.items == b.items and a.class_names == b.class_names
