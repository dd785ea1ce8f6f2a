"""Where ingest's items come from: a features file or image folders (embedded, cached, resumable).

:func:`from_features_file` and :func:`from_images` return a :class:`Table` of raw features, keys, labels,
splits and the extractor's description — with the network's final layer when the ``head`` query
classifier is asked for (DESIGN.md §1.5).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from rich.console import Console

from hierqdrant.core.errors import InputError, ModelMismatchError
from hierqdrant.core.features import FeatureSet
from hierqdrant.core.model import HierarchyModel
from hierqdrant.core.names import NOT_UTF8, is_utf8, printable
from hierqdrant.evaluation.hooks import Hooks
from hierqdrant.vision.cache import FeatureCache, file_stamp
from hierqdrant.vision.extractor import (
    describe,
    extractor_from_description,
    has_image_extractor,
    identity,
    same_extractor,
)

if TYPE_CHECKING:
    from hierqdrant.vision.checkpoints import CheckpointHead


class IngestOptions(Protocol):
    """What the sources read of :class:`hierqdrant.pipelines.ingest.IngestOptions` (read-only)."""

    @property
    def backbone(self) -> str | None: ...
    @property
    def weights(self) -> str | None: ...
    @property
    def image_size(self) -> int | None: ...
    @property
    def device(self) -> str: ...
    @property
    def batch_size(self) -> int: ...
    @property
    def num_workers(self) -> int | None: ...
    @property
    def cache_dir(self) -> Path: ...
    @property
    def progress(self) -> bool: ...
    @property
    def query_classifier(self) -> str: ...
    @property
    def head(self) -> str | None: ...
    @property
    def backend(self) -> str: ...
    @property
    def ray_concurrency(self) -> int | None: ...


@dataclass
class Skip:
    path: str
    reason: str


@dataclass
class Table:
    """The items to ingest after embedding: raw features, keys, labels, splits, payloads."""

    features: np.ndarray
    keys: list[str]
    labels: list[int | None]
    splits: list[str | None]
    class_names: list[str]
    kind: str
    extractor: dict[str, Any]
    skipped: list[Skip]
    head: CheckpointHead | None = None  # the network's final layer, read when the head classifier is asked for
    paths: list[Path] | None = None  # each item's image file (None for a features file)
    embedded: int = 0
    reused: int = 0
    embed_seconds: float = 0.0


def from_features_file(path: Path, stored: tuple[HierarchyModel, dict[str, Any]] | None, opts: IngestOptions) -> Table:
    data = FeatureSet.load(path)
    skipped = [Skip(printable(p), NOT_UTF8) for p in data.paths or () if not is_utf8(p)]
    if skipped:  # not storable (point ids, JSON payloads): skipped and reported, before anything is written
        data = data.subset(np.asarray([is_utf8(p) for p in data.paths or ()]))
        if not len(data):
            raise InputError(f"none of the paths in {path} is valid UTF-8", "store the paths as UTF-8 text")
    n = len(data)
    keys = data.paths if data.paths is not None else [f"{path.name}#{i}" for i in range(n)]
    if len(set(keys)) != n:
        raise InputError(f"{path} has duplicate paths", "give each row a unique path (they become point ids)")
    labels: list[int | None] = [None] * n if data.labels is None else [int(v) for v in data.labels]
    extractor = {"name": "features-file", "file": path.name, "feature_dim": int(data.features.shape[1])}
    if stored is not None:
        extractor = stored[0].extractor or extractor
    return Table(
        features=data.features,
        keys=list(keys),
        labels=labels,
        splits=list(data.splits) if data.splits is not None else [None] * n,
        class_names=data.class_names,
        kind="features",
        extractor=extractor,
        skipped=skipped,
        head=_head_file(opts.head, int(data.features.shape[1])) if opts.query_classifier == "head" else None,
    )


def _head_file(path: str | None, feature_dim: int) -> CheckpointHead | None:
    if path is None:
        return None
    from hierqdrant.vision.checkpoints import read_head

    return read_head(path, feature_dim)


def from_images(
    root: Path,
    collection: str,
    opts: IngestOptions,
    stored: tuple[HierarchyModel, dict[str, Any]] | None,
    console: Console | None,
    hooks: Hooks,
) -> Table:
    from hierqdrant.vision import discover, extract_features, load_backbone

    say = hooks.log
    found = discover(root)
    skipped = [Skip(printable(p.path), p.reason) for p in found.problems]
    if not found.items:
        raise InputError(f"{root} has no usable images", "check the folder layout (class subfolders of images)")
    classes = f" of {len(found.class_names)} classes" if found.class_names else ""
    problems = f", {len(found.problems)} skipped" if found.problems else ""
    say(f"scanned {root}: {len(found.items)} images{classes} ({found.kind}){problems}")
    stored_desc = stored[0].extractor if stored is not None else None
    if opts.backbone is None and stored_desc is not None and has_image_extractor(stored_desc):
        backbone = extractor_from_description(stored_desc, opts.weights)
        description = dict(stored_desc)
    else:
        backbone = load_backbone(opts.backbone or "resnet50", opts.weights, image_size=opts.image_size)
        description = describe(backbone, opts.weights)
    if stored_desc is not None and not same_extractor(stored_desc, description):
        raise ModelMismatchError(
            f"collection {collection!r} was embedded with {stored_desc.get('name')} "
            f"({stored_desc.get('weights')}), not {description.get('name')} ({description.get('weights')})",
            "omit --model/--weights to use the collection's extractor, or pass --recreate",
        )

    cache = FeatureCache(opts.cache_dir, collection, identity(description))
    known = cache.load()
    items = found.items
    stamps = [file_stamp(item.path) for item in items]
    feats: list[np.ndarray | None] = [None] * len(items)
    todo: list[int] = []
    for i, item in enumerate(items):
        hit = known.get(item.key)
        if hit is not None and hit[0] == stamps[i]:
            feats[i] = hit[1]
        else:
            todo.append(i)
    reused = len(items) - len(todo)
    if reused:
        say(f"{reused} images already embedded (cache {cache.directory})")
    embed_seconds = 0.0
    embedded = 0
    if todo:
        cache.check_space(len(todo), int(backbone.feature_dim))  # a full disk before embedding, not halfway
        say(f"embedding {len(todo)} images with {backbone.name} (device {opts.device})")

        def on_batch(indices: np.ndarray, batch: np.ndarray) -> None:
            rows = [todo[int(j)] for j in indices]
            cache.add([items[r].key for r in rows], [stamps[r] for r in rows], batch)

        t0 = time.perf_counter()
        with hooks.progress(len(todo), "embedding") if not opts.progress else _bar_of_its_own() as counter:
            paths = [items[i].path for i in todo]
            common: dict[str, Any] = dict(
                device=opts.device, batch_size=opts.batch_size, num_workers=opts.num_workers, on_batch=on_batch,
                progress=True if opts.progress else (counter or False), console=console,
            )  # fmt: skip
            if opts.backend == "ray":  # the same extract_features, in a pool of Ray actors (ray_extract.py)
                from hierqdrant.vision.ray_extract import extract_features_ray

                extracted = extract_features_ray(
                    paths, description, opts.weights, concurrency=opts.ray_concurrency, **common
                )
            else:
                extracted = extract_features(paths, backbone, **common)
        cache.flush()
        embed_seconds = time.perf_counter() - t0
        for j, row in zip(extracted.indices, extracted.features, strict=True):
            feats[todo[int(j)]] = row
        skipped.extend(Skip(printable(s.path), s.reason) for s in extracted.skipped)
        embedded = len(extracted.indices)
    keep = [i for i in range(len(items)) if feats[i] is not None]
    if not keep:
        raise InputError(f"none of the images in {root} could be read", "see the skipped files above")
    head = None
    if opts.query_classifier == "head":
        from hierqdrant.vision.backbones import head_of

        head = head_of(backbone, opts.weights or description.get("weights_path"))
    return Table(
        features=np.stack([feats[i] for i in keep]).astype(np.float32),  # type: ignore[misc]
        keys=[items[i].key for i in keep],
        paths=[items[i].path for i in keep],
        labels=[items[i].label for i in keep],
        splits=[items[i].split for i in keep],
        class_names=list(found.class_names),
        kind=found.kind,
        extractor=description,
        skipped=skipped,
        embedded=embedded,
        reused=reused,
        embed_seconds=embed_seconds,
        head=head,
    )


@contextmanager
def _bar_of_its_own() -> Iterator[None]:
    """No counter: :func:`~hierqdrant.vision.extract_features` draws its own bar."""
    yield None
