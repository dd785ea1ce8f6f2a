"""The ingest pipeline: discover → embed (cached, resumable) → fit → assign → upsert → store the model.

Everything that can be checked is checked before the store is written: the source, the backbone and
its weights, the collection's model and extractor. Re-running the same ingest updates the same point
ids and embeds nothing again (features are cached locally per extractor).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from hierqdrant.core.errors import InputError, ModelMismatchError
from hierqdrant.core.features import FeatureSet
from hierqdrant.core.model import HierarchyModel
from hierqdrant.core.settings import FitSettings
from hierqdrant.store.collection import (
    DEFAULT_PAYLOAD_KEY,
    check_payload_key,
    create_collection,
    read_collection_model,
    upsert_points,
)
from hierqdrant.store.engines import Engine
from hierqdrant.vision.cache import FeatureCache, file_stamp
from hierqdrant.vision.extractor import (
    describe,
    extractor_from_description,
    has_image_extractor,
    identity,
    same_extractor,
)


@dataclass
class IngestOptions(FitSettings):
    """What ``hierqdrant ingest`` takes besides the source and the collection: how to embed, how to
    fit (the :class:`~hierqdrant.core.settings.FitSettings` it extends: builder, threshold, alpha,
    taxonomy, pca, covariance, leaf_from), whether to tune t and α instead, and how to store."""

    backbone: str | None = None  # default: the collection's extractor, else resnet50
    weights: str | None = None
    image_size: int | None = None
    device: str = "auto"
    batch_size: int = 128
    num_workers: int | None = None
    payload_key: str = DEFAULT_PAYLOAD_KEY
    tune: bool = False  # choose t and α on a validation split of the labelled training images
    tune_metric: str = "map@r"  # on CIFAR-10 validation map@10 barely separates α values; map@r does
    keep_model: bool = False  # assign with the collection's stored model instead of refitting
    recreate: bool = False  # drop the collection first
    cache_dir: Path = Path(".hierqdrant") / "cache"
    upsert_batch: int = 1024
    progress: bool = True


@dataclass
class Skip:
    path: str
    reason: str


@dataclass
class IngestResult:
    collection: str
    model_id: str
    source_kind: str
    ingested: int
    embedded: int
    reused: int
    skipped: list[Skip]
    classes: int
    height: int
    levels: int
    fitted: bool
    seconds: float
    embed_seconds: float
    upsert_seconds: float
    model: HierarchyModel
    splits: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "model_id": self.model_id,
            "source": self.source_kind,
            "ingested": self.ingested,
            "embedded": self.embedded,
            "reused_from_cache": self.reused,
            "skipped": [{"path": s.path, "reason": s.reason} for s in self.skipped],
            "classes": self.classes,
            "height": self.height,
            "levels": self.levels,
            "fitted": self.fitted,
            "splits": self.splits,
            "seconds": round(self.seconds, 2),
            "embed_images_per_s": round(self.embedded / self.embed_seconds, 1) if self.embed_seconds > 0 else None,
            "upsert_points_per_s": round(self.ingested / self.upsert_seconds, 1) if self.upsert_seconds > 0 else None,
        }


@dataclass
class _Table:
    """The items to ingest after embedding: raw features, keys, labels, splits, payloads."""

    features: np.ndarray
    keys: list[str]
    labels: list[int | None]
    splits: list[str | None]
    class_names: list[str]
    kind: str
    extractor: dict[str, Any]
    skipped: list[Skip]
    embedded: int = 0
    reused: int = 0
    embed_seconds: float = 0.0


def ingest(
    source: str | Path,
    engine: Engine,
    collection: str,
    options: IngestOptions | None = None,
    *,
    console: Console | None = None,
    log: Callable[[str], None] | None = None,
) -> IngestResult:
    """Ingest ``source`` (image folder, train/test folders, CUB, unlabelled folder or features .npz)."""
    opts = options or IngestOptions()
    say = log or (lambda _msg: None)
    started = time.perf_counter()
    key = check_payload_key(opts.payload_key)
    src = Path(source)
    if not src.exists():
        raise InputError(f"{src} does not exist", "pass an image folder or a features .npz")

    stored: tuple[HierarchyModel, dict[str, Any]] | None = None
    if engine.exists(collection) and not opts.recreate:
        stored = read_collection_model(engine, collection)

    if src.is_file():
        table = _from_features_file(src, stored)
    else:
        table = _from_images(src, collection, opts, stored, console, say)

    labelled = [i for i, y in enumerate(table.labels) if y is not None and table.splits[i] != "test"]
    fitted = False
    if stored is not None and (opts.keep_model or not labelled):
        model = stored[0]
        if model.input_dims != table.features.shape[1]:
            raise ModelMismatchError(
                f"collection {collection!r} expects {model.input_dims}-d features, the source gives "
                f"{table.features.shape[1]}-d",
                "embed with the collection's extractor (omit --model/--weights)",
            )
    else:
        if not labelled:
            raise InputError(
                f"{src} has no labelled images and collection {collection!r} has no model to assign them",
                "ingest a labelled folder first (class subfolders), then unlabelled ones",
            )
        say(f"fitting PCA, class Gaussians and the {opts.builder} hierarchy on {len(labelled)} labelled images")
        idx = np.asarray(labelled)
        train_x, train_y = table.features[idx], np.asarray([table.labels[i] for i in labelled])
        if opts.tune:
            from hierqdrant.evaluation.tuning import TuneSettings, tune

            tuned = tune(
                train_x,
                train_y,
                table.class_names,
                fit=opts,
                settings=TuneSettings(metric=opts.tune_metric),
                extractor=table.extractor,
            )
            say(
                f"tuned on a validation split: t={tuned.best_threshold}, α={tuned.best_alpha} "
                f"({opts.tune_metric} {tuned.best_score:.4f}; cosine {tuned.cosine_score:.4f})"
            )
            model = tuned.model
        else:
            model = opts.fit_model(train_x, train_y, class_names=table.class_names, extractor=table.extractor)
        fitted = True
        if stored is not None and stored[0].model_id != model.model_id:
            raise ModelMismatchError(
                f"collection {collection!r} holds model {stored[0].model_id}; this ingest fits model "
                f"{model.model_id} (other images or settings)",
                "pass --recreate to rebuild the collection, --keep-model to assign with the stored model, "
                "or choose another --collection",
            )

    labels: list[int | None] = [None if y is None else int(y) for y in table.labels]
    if table.class_names != model.class_names:
        labels = _relabel(table, model)
    leaves = None
    if opts.leaf_from == "label":
        leaves = np.asarray([-1 if y is None else y for y in labels], dtype=np.int64)
        unknown = leaves < 0
        if unknown.any():
            leaves[unknown] = model.assign(table.features[unknown])

    # Everything is checked: from here on the store is written.
    if opts.recreate and engine.exists(collection):
        say(f"dropping collection {collection!r}")
        engine.delete(collection)
    create_collection(engine, collection, model, payload_key=key)
    upsert_started = time.perf_counter()
    payloads = [{"path": k} for k in table.keys]
    _upsert_with_progress(engine, collection, model, table, labels, payloads, leaves, key, opts, console)
    engine.optimize(collection)
    upsert_seconds = time.perf_counter() - upsert_started
    splits: dict[str, int] = {}
    for s in table.splits:
        splits[s or "all"] = splits.get(s or "all", 0) + 1
    return IngestResult(
        collection=collection,
        model_id=model.model_id,
        source_kind=table.kind,
        ingested=len(table.keys),
        embedded=table.embedded,
        reused=table.reused,
        skipped=table.skipped,
        classes=model.num_classes,
        height=model.tree_height,
        levels=model.hierarchy.num_levels,
        fitted=fitted,
        seconds=time.perf_counter() - started,
        embed_seconds=table.embed_seconds,
        upsert_seconds=upsert_seconds,
        model=model,
        splits=splits,
    )


def _relabel(table: _Table, model: HierarchyModel) -> list[int | None]:
    """Map the source's class indices onto the stored model's class list (by name)."""
    index = {name: i for i, name in enumerate(model.class_names)}
    out: list[int | None] = []
    for y in table.labels:
        out.append(None if y is None else index.get(table.class_names[y]))
    return out


def _upsert_with_progress(
    engine: Engine,
    collection: str,
    model: HierarchyModel,
    table: _Table,
    labels: list[int | None],
    payloads: list[dict[str, Any]],
    leaves: np.ndarray | None,
    key: str,
    opts: IngestOptions,
    console: Console | None,
) -> None:
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    columns = [
        TextColumn("upserting"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} points"),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=console, disable=not opts.progress, transient=True) as bar:
        task = bar.add_task("upsert", total=len(table.keys), rate="")
        t0 = time.perf_counter()

        def advance(n: int) -> None:
            bar.advance(task, n)
            done = bar.tasks[0].completed
            bar.update(task, rate=f"{done / max(time.perf_counter() - t0, 1e-9):,.0f} points/s")

        upsert_points(
            engine,
            collection,
            model,
            table.features,
            table.keys,
            labels=labels,
            splits=table.splits,
            payloads=payloads,
            leaves=leaves,
            payload_key=key,
            batch_size=opts.upsert_batch,
            on_batch=advance,
        )


def _from_features_file(path: Path, stored: tuple[HierarchyModel, dict[str, Any]] | None) -> _Table:
    data = FeatureSet.load(path)
    n = len(data)
    keys = data.paths if data.paths is not None else [f"{path.name}#{i}" for i in range(n)]
    if len(set(keys)) != n:
        raise InputError(f"{path} has duplicate paths", "give each row a unique path (they become point ids)")
    labels: list[int | None] = [None] * n if data.labels is None else [int(v) for v in data.labels]
    extractor = {"name": "features-file", "file": path.name, "feature_dim": int(data.features.shape[1])}
    if stored is not None:
        extractor = stored[0].extractor or extractor
    return _Table(
        features=data.features,
        keys=list(keys),
        labels=labels,
        splits=list(data.splits) if data.splits is not None else [None] * n,
        class_names=data.class_names,
        kind="features",
        extractor=extractor,
        skipped=[],
    )


def _from_images(
    root: Path,
    collection: str,
    opts: IngestOptions,
    stored: tuple[HierarchyModel, dict[str, Any]] | None,
    console: Console | None,
    say: Callable[[str], None],
) -> _Table:
    from hierqdrant.vision import discover, extract_features, load_backbone

    found = discover(root)
    skipped = [Skip(p.path, p.reason) for p in found.problems]
    if not found.items:
        raise InputError(f"{root} has no usable images", "check the folder layout (class subfolders of images)")
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
        say(f"embedding {len(todo)} images with {backbone.name}")

        def on_batch(indices: np.ndarray, batch: np.ndarray) -> None:
            rows = [todo[int(j)] for j in indices]
            cache.add([items[r].key for r in rows], [stamps[r] for r in rows], batch)

        t0 = time.perf_counter()
        extracted = extract_features(
            [items[i].path for i in todo],
            backbone,
            device=opts.device,
            batch_size=opts.batch_size,
            num_workers=opts.num_workers,
            on_batch=on_batch,
            progress=opts.progress,
            console=console,
        )
        cache.flush()
        embed_seconds = time.perf_counter() - t0
        for j, row in zip(extracted.indices, extracted.features, strict=True):
            feats[todo[int(j)]] = row
        skipped.extend(Skip(s.path, s.reason) for s in extracted.skipped)
        embedded = len(extracted.indices)
    keep = [i for i in range(len(items)) if feats[i] is not None]
    if not keep:
        raise InputError(f"none of the images in {root} could be read", "see the skipped files above")
    return _Table(
        features=np.stack([feats[i] for i in keep]).astype(np.float32),  # type: ignore[misc]
        keys=[items[i].key for i in keep],
        labels=[items[i].label for i in keep],
        splits=[items[i].split for i in keep],
        class_names=list(found.class_names),
        kind=found.kind,
        extractor=description,
        skipped=skipped,
        embedded=embedded,
        reused=reused,
        embed_seconds=embed_seconds,
    )
