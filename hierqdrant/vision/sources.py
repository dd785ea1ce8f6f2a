"""Find the images of a dataset on disk and their labels.

Four layouts are recognised (:func:`discover` checks them in this order):

``cub``
    CUB-200-2011 as distributed: ``images/``, ``images.txt`` (``id relpath``), ``image_class_labels.txt``
    (``id class_id``, class ids 1-based), ``classes.txt`` (``class_id name``) and optionally
    ``train_test_split.txt`` (``id is_train``, 1 = train, 0 = test). The folder that holds them or
    its parent (the tarball extracts to ``CUB_200_2011/``) may be given.
``train-test``
    A folder with ``train/`` and ``test/``, each an ImageFolder. Classes come from ``train/``; a test
    class without training images is an error.
``unlabelled``
    Image files directly in the folder (and, recursively, in its subfolders); labels are ``None``.
``imagefolder``
    One subfolder per class (torchvision's ``ImageFolder``): classes sorted by name as torchvision
    sorts them, images found recursively inside each class folder.

Rules common to all layouts: image files are recognised by extension
(:data:`~hierqdrant.vision.images.IMAGE_EXTENSIONS`, case-insensitive); hidden entries (names that
start with ``.``, e.g. ``.DS_Store``, ``.ipynb_checkpoints``) are ignored; a class with no images is
reported in ``problems`` and dropped, the remaining classes keep their sorted order and are numbered
0..K-1; symlinks are followed, a symlink loop or an unreadable entry becomes a :class:`Skipped`
problem, never an exception, and so does an image-named entry that is not a regular file (a FIFO, a
device, a link to ``/dev/zero``) and a file or folder whose name is not valid UTF-8 (it could not be
stored: point ids and payloads are UTF-8). The order of ``items`` is deterministic: split (train before test),
then label, then ``key``.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from hierqdrant.core.errors import InputError
from hierqdrant.core.names import NOT_UTF8, check_class_names, is_utf8, printable
from hierqdrant.vision.images import IMAGE_EXTENSIONS, is_image_file, os_error_reason, regular_file_reason

__all__ = ["ImageItem", "Skipped", "ImageSource", "SourceKind", "discover"]

SourceKind = Literal["imagefolder", "train-test", "cub", "unlabelled"]
_KINDS: tuple[str, ...] = ("imagefolder", "train-test", "cub", "unlabelled")
_EXT_LIST = " ".join(sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS))


@dataclass(frozen=True)
class ImageItem:
    """One image: ``key`` is its POSIX path relative to the source root (stable across machines,
    used to derive deterministic point ids); ``label`` indexes ``ImageSource.class_names``."""

    path: Path
    key: str
    label: int | None
    split: str | None


@dataclass(frozen=True)
class Skipped:
    """A file or folder that was left out, with a short reason."""

    path: str
    reason: str


@dataclass
class ImageSource:
    """The images found under ``root`` and what was left out."""

    root: Path
    kind: SourceKind
    items: list[ImageItem]
    class_names: list[str]
    problems: list[Skipped] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def paths(self) -> list[Path]:
        """The image paths in item order."""
        return [it.path for it in self.items]

    @property
    def labels(self) -> list[int | None]:
        """The labels in item order (``None`` for unlabelled images)."""
        return [it.label for it in self.items]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def split(self, name: str) -> list[ImageItem]:
        """The items of one split (``"train"`` or ``"test"``)."""
        return [it for it in self.items if it.split == name]


def _scandir_sorted(directory: Path, problems: list[Skipped]) -> list[os.DirEntry[str]]:
    """Entries of ``directory`` sorted by name, hidden ones dropped; errors go to ``problems``."""
    try:
        with os.scandir(directory) as it:
            entries = [e for e in it if not e.name.startswith(".")]
    except OSError as exc:
        problems.append(Skipped(printable(directory), os_error_reason(exc)))
        return []
    named = [e for e in entries if is_utf8(e.name)]
    if len(named) < len(entries):  # a non-UTF-8 name cannot be stored (point ids, JSON): reported, left out
        for e in entries:
            if not is_utf8(e.name) and (is_image_file(e.name) or _is_dir(e)):
                problems.append(Skipped(printable(e.path), NOT_UTF8))
    return sorted(named, key=lambda e: e.name)


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _classify(entry: os.DirEntry[str], problems: list[Skipped]) -> Literal["dir", "file", "other"]:
    """Whether an entry is a directory or a regular file, following symlinks."""
    try:
        if entry.is_dir():
            return "dir"
        if entry.is_file():
            return "file"
    except OSError as exc:  # ELOOP from a symlink loop, EACCES, ...
        problems.append(Skipped(entry.path, os_error_reason(exc)))
        return "other"
    if entry.is_symlink() or is_image_file(entry.name):  # a FIFO, a device, a link to /dev/zero: reported
        reason = regular_file_reason(entry.path)  # follows the link
        if reason is not None:
            problems.append(Skipped(entry.path, "broken symlink" if reason.startswith("missing") else reason))
    return "other"


def _dir_id(path: str | Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _walk_images(
    directory: Path, root: Path, problems: list[Skipped], visited: set[tuple[int, int]] | None = None
) -> list[tuple[Path, str]]:
    """All image files below ``directory`` (recursively) as ``(path, key)``, sorted by key.

    Directories are identified by (device, inode) so a symlink that points back up the tree is
    reported once instead of being followed forever.
    """
    if visited is None:
        visited = set()
    did = _dir_id(directory)
    if did is not None:
        visited.add(did)
    found: list[tuple[Path, str]] = []
    for entry in _scandir_sorted(directory, problems):
        kind = _classify(entry, problems)
        path = Path(entry.path)
        if kind == "dir":
            sub = _dir_id(path)
            if sub is None:
                problems.append(Skipped(entry.path, "unreadable directory"))
            elif sub in visited:
                problems.append(Skipped(entry.path, "symlink loop (directory already visited)"))
            else:
                found.extend(_walk_images(path, root, problems, visited))
        elif kind == "file":
            # Files without an image extension (notes, annotations, READMEs) are not images that
            # failed: they are left alone without a report.
            if is_image_file(entry.name):
                found.append((path, path.relative_to(root).as_posix()))
    found.sort(key=lambda pk: pk[1])
    return found


def _top_level(directory: Path, problems: list[Skipped]) -> tuple[list[Path], list[Path], list[Path]]:
    """(sub-directories, image files, other files) directly inside ``directory``."""
    dirs: list[Path] = []
    images: list[Path] = []
    others: list[Path] = []
    for entry in _scandir_sorted(directory, problems):
        kind = _classify(entry, problems)
        if kind == "dir":
            dirs.append(Path(entry.path))
        elif kind == "file":
            (images if is_image_file(entry.name) else others).append(Path(entry.path))
    return dirs, images, others


def _class_folders(directory: Path, root: Path, problems: list[Skipped]) -> list[tuple[str, list[tuple[Path, str]]]]:
    """ImageFolder classes of ``directory`` (sorted by name) with their images; empty ones dropped."""
    dirs, loose_images, _ = _top_level(directory, problems)
    for p in loose_images:
        problems.append(Skipped(str(p), "image outside any class folder; ignored"))
    classes: list[tuple[str, list[tuple[Path, str]]]] = []
    for d in dirs:
        files = _walk_images(d, root, problems)
        if files:
            classes.append((d.name, files))
        else:
            problems.append(Skipped(str(d), "class folder has no images"))
    return classes


def _discover_imagefolder(root: Path, problems: list[Skipped]) -> tuple[list[ImageItem], list[str]]:
    classes = _class_folders(root, root, problems)
    items = [
        ImageItem(path=p, key=k, label=label, split=None) for label, (_, files) in enumerate(classes) for p, k in files
    ]
    return items, [name for name, _ in classes]


def _discover_train_test(root: Path, problems: list[Skipped]) -> tuple[list[ImageItem], list[str]]:
    for entry in _scandir_sorted(root, problems):
        if entry.name not in ("train", "test") and (entry.is_dir() or is_image_file(entry.name)):
            problems.append(Skipped(entry.path, "ignored (only train/ and test/ are read)"))
    train = _class_folders(root / "train", root, problems)
    if not train:
        raise InputError(
            f"{root / 'train'} has no class folders with images",
            "put the training images in train/<class>/ (one subfolder per class)",
        )
    test = _class_folders(root / "test", root, problems)
    class_names = [name for name, _ in train]
    index = {name: i for i, name in enumerate(class_names)}
    missing = [name for name, _ in test if name not in index]
    if missing:
        shown = ", ".join(repr(m) for m in missing[:5]) + (" …" if len(missing) > 5 else "")
        raise InputError(
            f"test class(es) {shown} have no images in {root / 'train'} ({len(missing)} of {len(test)} test classes)",
            "add their training images under train/<class>/ or remove those folders from test/",
        )
    items = [
        ImageItem(path=p, key=k, label=label, split="train") for label, (_, files) in enumerate(train) for p, k in files
    ]
    items += [ImageItem(path=p, key=k, label=index[name], split="test") for name, files in test for p, k in files]
    return items, class_names


def _read_table(path: Path, what: str) -> list[tuple[int, str, int]]:
    """Lines ``<int id> <rest>`` of a CUB metadata file as (id, rest, line number)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise InputError(
            f"CUB layout: {path.name} is missing in {path.parent}",
            f"restore {path.name} ({what}) from the CUB-200-2011 archive",
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"CUB layout: cannot read {path} ({exc})", "check the file's permissions") from exc
    rows: list[tuple[int, str, int]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or not parts[0].isdigit():
            raise InputError(
                f"CUB layout: {path}:{lineno} is not '<id> <{what}>': {line[:80]!r}",
                f"fix or restore {path.name} from the CUB-200-2011 archive",
            )
        rows.append((int(parts[0]), parts[1].strip(), lineno))
    return rows


def _discover_cub(root: Path, problems: list[Skipped]) -> tuple[list[ImageItem], list[str]]:
    images = _read_table(root / "images.txt", "relative image path")
    labels = {i: v for i, v, _ in _read_table(root / "image_class_labels.txt", "class id")}
    classes = _read_table(root / "classes.txt", "class name")
    split_path = root / "train_test_split.txt"
    splits = {i: v for i, v, _ in _read_table(split_path, "is_training_image")} if split_path.exists() else {}
    class_name = {cid: name for cid, name, _ in classes}
    check_class_names(list(class_name.values()), f"CUB layout: {root / 'classes.txt'}")
    by_class: dict[int, list[tuple[int, ImageItem]]] = {cid: [] for cid in class_name}
    img_root = root / "images"
    for image_id, rel, _ in sorted(images):
        path = img_root / rel
        raw_label = labels.get(image_id)
        if raw_label is None or not raw_label.isdigit():
            problems.append(Skipped(str(path), "no class id in image_class_labels.txt"))
            continue
        cid = int(raw_label)
        if cid not in class_name:
            raise InputError(
                f"CUB layout: image {image_id} has class id {cid}, which classes.txt does not list",
                "restore classes.txt and image_class_labels.txt from the same CUB-200-2011 archive",
            )
        try:
            mode = os.stat(path).st_mode
        except OSError as exc:
            problems.append(Skipped(str(path), os_error_reason(exc)))
            continue
        if not stat.S_ISREG(mode):
            problems.append(Skipped(str(path), "listed in images.txt but not a file"))
            continue
        split_flag = splits.get(image_id)
        split = None if split_flag is None else ("train" if split_flag.strip() == "1" else "test")
        key = path.relative_to(root).as_posix()
        by_class[cid].append((image_id, ImageItem(path=path, key=key, label=None, split=split)))
    class_names: list[str] = []
    items: list[ImageItem] = []
    for cid in sorted(class_name):  # 1-based ids in order → labels 0..K-1 (compacted if one is empty)
        members = by_class[cid]
        if not members:
            problems.append(Skipped(str(img_root / class_name[cid]), "class has no images"))
            continue
        label = len(class_names)
        class_names.append(class_name[cid])
        items.extend(ImageItem(path=it.path, key=it.key, label=label, split=it.split) for _, it in sorted(members))
    return items, class_names


def _discover_unlabelled(root: Path, problems: list[Skipped]) -> tuple[list[ImageItem], list[str]]:
    files = _walk_images(root, root, problems)
    return [ImageItem(path=p, key=k, label=None, split=None) for p, k in files], []


def _detect(root: Path) -> tuple[SourceKind, Path]:
    if (root / "images.txt").is_file() and (root / "images").is_dir():
        return "cub", root
    nested = root / "CUB_200_2011"
    if (nested / "images.txt").is_file() and (nested / "images").is_dir():
        return "cub", nested
    if (root / "train").is_dir() and (root / "test").is_dir():
        return "train-test", root
    _, loose_images, _ = _top_level(root, [])
    if loose_images:
        return "unlabelled", root
    return "imagefolder", root


def _sort_key(it: ImageItem) -> tuple[int, int, str]:
    split_rank = {"train": 0, "test": 1}.get(it.split or "", 2)
    return (split_rank, -1 if it.label is None else it.label, it.key)


def discover(root: str | os.PathLike[str], *, kind: SourceKind | None = None) -> ImageSource:
    """Find the images under ``root``; ``kind`` forces a layout instead of detecting it.

    Detection: CUB metadata files → ``cub``; ``train/`` and ``test/`` → ``train-test``; image files
    directly in ``root`` → ``unlabelled`` (recursively); otherwise ``imagefolder``.
    Raises :class:`~hierqdrant.core.errors.InputError` when ``root`` is not a directory, when no image
    is found, or when the layout's metadata is inconsistent.
    """
    base = Path(os.path.abspath(os.path.expanduser(os.fspath(root))))
    if not base.exists():
        raise InputError(f"image folder {base} does not exist", "pass the folder that holds the images")
    if not base.is_dir():
        raise InputError(
            f"{base} is not a directory",
            "pass the folder that holds the images (class subfolders, train/ and test/, or CUB-200-2011)",
        )
    if kind is not None and kind not in _KINDS:
        raise InputError(f"unknown layout {kind!r}", f"use one of: {', '.join(_KINDS)}")
    detected, src_root = _detect(base)
    if kind == "cub" and detected != "cub":
        raise InputError(
            f"{base} is not a CUB-200-2011 folder (no images.txt next to images/)",
            "pass the CUB_200_2011 folder of the extracted archive",
        )
    layout: SourceKind = kind or detected
    if layout != "cub":
        src_root = base
    problems: list[Skipped] = []
    if layout == "cub":
        items, class_names = _discover_cub(src_root, problems)
    elif layout == "train-test":
        if not ((base / "train").is_dir() and (base / "test").is_dir()):
            raise InputError(f"{base} has no train/ and test/ folders", "create them or let the layout be detected")
        items, class_names = _discover_train_test(base, problems)
    elif layout == "unlabelled":
        items, class_names = _discover_unlabelled(base, problems)
    else:
        items, class_names = _discover_imagefolder(base, problems)
    if not items:
        hint = (
            f" ({len(problems)} entries skipped, first: {problems[0].path}: {problems[0].reason})" if problems else ""
        )
        raise InputError(
            f"no images found in {base} (layout {layout}){hint}",
            f"put image files ({_EXT_LIST}) in class subfolders <folder>/<class>/ or directly in the folder",
        )
    items.sort(key=_sort_key)
    return ImageSource(root=src_root, kind=layout, items=items, class_names=class_names, problems=problems)
