"""Where the items of an evaluation come from: a features .npz, a labelled image folder (embedded
here, optionally perturbed) or a collection name (read by :mod:`hierqdrant.evaluation.collection`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from hierqdrant.core.errors import InputError, NotFoundError

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "EmbedOptions",
    "Source",
    "SourceKind",
    "load_images",
    "load_npz",
    "load_queries",
    "relabel",
    "resolve_source",
]

SourceKind = Literal["collection", "npz", "folder"]


@dataclass
class Source:
    """Raw features with labels, class names, keys (relative paths) and splits, from a file or images.
    ``origin``: the resolved file or folder they came from; two items are the same item when they
    have the same origin and key (a perturbed copy of an image included)."""

    features: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    keys: list[str]
    splits: list[str] | None
    name: str
    extractor: dict[str, Any] | None = None
    origin: str = ""

    def select(self, split: str | None) -> Source:
        if split is None:
            return self
        if self.splits is None:
            raise InputError(f"{self.name} has no splits, so --*-split {split!r} cannot select from it")
        idx = np.flatnonzero(np.asarray(self.splits) == split)
        if idx.size == 0:
            found = sorted(set(self.splits))
            raise InputError(f"{self.name} has no items of split {split!r}", f"its splits: {', '.join(found)}")
        return Source(
            self.features[idx],
            self.labels[idx],
            self.class_names,
            [self.keys[i] for i in idx],
            [self.splits[i] for i in idx],
            f"{self.name} [{split}]",
            self.extractor,
            self.origin,
        )

    def has_split(self, split: str) -> bool:
        return self.splits is not None and split in self.splits

    def __len__(self) -> int:
        return int(self.features.shape[0])


@dataclass
class EmbedOptions:
    """How image folders are embedded: the backbone (None: the collection's extractor), its input size
    (``image_size``; None: the backbone's, or the one the collection was embedded at) and the loader.
    ``quiet``: no progress bar; ``console``: where the bar and skipped files are reported."""

    model: str | None = None
    weights: str | None = None
    device: str = "auto"
    batch_size: int = 128
    workers: int | None = None
    quiet: bool = False
    console: Console | None = None
    on_skip: Callable[[str, str], None] | None = None  # (path, reason) of an image that could not be read
    image_size: int | None = None


def load_npz(path: Path) -> Source:
    from hierqdrant.core.features import FeatureSet

    data = FeatureSet.load(path)
    if data.labels is None:
        raise InputError(f"{path} has no labels", "evaluation needs labelled features (a 'labels' array)")
    keys = data.paths if data.paths is not None else [f"{path.name}#{i}" for i in range(len(data))]
    return Source(
        data.features,
        np.asarray(data.labels),
        data.class_names,
        list(keys),
        [s or "" for s in data.splits] if data.splits is not None else None,
        path.name,
        origin=str(path.resolve()),
    )


def load_images(
    folder: Path,
    opts: EmbedOptions,
    extractor: dict[str, Any] | None,
    perturb: str | None,
    seed: int,
    split: str | None,
) -> Source:
    """Embed a labelled image folder (optionally one split, optionally perturbed with a fixed seed)."""
    from hierqdrant.vision import discover, extract_features, load_backbone
    from hierqdrant.vision.extractor import describe, extractor_from_description, has_image_extractor

    found = discover(folder)
    items = [it for it in found.items if split is None or it.split == split]
    if split is not None and not items:
        raise InputError(f"{folder} has no images of split {split!r}", "check --db-split / --query-split")
    if any(it.label is None for it in items):
        raise InputError(f"{folder} holds unlabelled images", "evaluation needs class subfolders")
    if opts.model is not None:
        backbone = load_backbone(opts.model, opts.weights, image_size=opts.image_size)
        description = describe(backbone, opts.weights)
    elif extractor is not None and has_image_extractor(extractor):
        stored_size = extractor.get("image_size")
        if opts.image_size is not None and stored_size is not None and int(stored_size) != opts.image_size:
            raise InputError(
                f"--image-size {opts.image_size} would embed the queries differently from the collection "
                f"(embedded at {stored_size})",
                "leave --image-size out: queries are embedded as the collection was",
            )
        backbone = extractor_from_description(extractor, opts.weights)
        description = dict(extractor)
    else:
        raise InputError(
            f"embedding {folder} needs a feature extractor",
            "pass --model NAME (and --weights PATH), or evaluate a collection that stores its extractor",
        )
    hook = None
    if perturb is not None:
        from hierqdrant.evaluation.perturb import parse_perturbation, perturbation_hook

        hook = perturbation_hook(parse_perturbation(perturb), seed)
    got = extract_features(
        [it.path for it in items],
        backbone,
        device=opts.device,
        batch_size=opts.batch_size,
        num_workers=opts.workers,
        image_hook=hook,
        progress=not opts.quiet,
        console=opts.console,
    )
    if opts.on_skip is not None:
        for s in got.skipped:
            opts.on_skip(s.path, s.reason)
    kept = [items[i] for i in got.indices]
    if not kept:
        raise InputError(f"none of the images in {folder} could be read")
    return Source(
        got.features,
        np.asarray([it.label for it in kept], dtype=np.int64),
        list(found.class_names),
        [it.key for it in kept],
        [it.split or "" for it in kept] if any(it.split for it in kept) else None,
        folder.name + (f" ({perturb})" if perturb else ""),
        description,
        str(folder.resolve()),
    )


def load_queries(
    path: Path,
    split: str | None,
    opts: EmbedOptions,
    extractor: dict[str, Any] | None,
    perturb: str | None,
    seed: int,
) -> Source:
    """Query images (a folder, embedded) or query features (an .npz), optionally of one split."""
    if path.is_dir():
        return load_images(path, opts, extractor, perturb, seed, split)
    return load_npz(path).select(split)


def relabel(source: Source, class_names: Sequence[str]) -> np.ndarray:
    """The source's labels as indices into ``class_names`` (matched by name)."""
    if list(source.class_names) == list(class_names):
        return source.labels
    index = {name: i for i, name in enumerate(class_names)}
    unknown = sorted({source.class_names[y] for y in set(source.labels.tolist())} - set(index))
    if unknown:
        raise InputError(
            f"{source.name} has classes the model does not know: {', '.join(unknown[:5])}",
            "evaluate with the classes the database was built on",
        )
    mapping = np.asarray([index.get(name, -1) for name in source.class_names], dtype=np.int64)
    return mapping[source.labels]


def _is_path(text: str) -> bool:
    return "/" in text or "\\" in text or text.endswith(".npz") or text in (".", "..")


def resolve_source(value: str, what: str) -> tuple[SourceKind, Path | None]:
    """("collection", None) | ("npz", path) | ("folder", path)."""
    path = Path(value).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".npz":
            raise InputError(f"{what} {value} is a file but not a features .npz", "pass an .npz or a folder")
        return "npz", path
    if path.is_dir():
        return "folder", path
    if _is_path(value):
        raise NotFoundError(f"{what} {value} does not exist", "pass an existing .npz, folder or a collection name")
    return "collection", None
