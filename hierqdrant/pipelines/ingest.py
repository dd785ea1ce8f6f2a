"""The ingest pipeline: discover → embed (cached, resumable) → fit → assign → upsert → store the model.

Everything that can be checked is checked before the store is written: the source, the backbone and
its weights, the collection's model and extractor. Re-running the same ingest updates the same point
ids and embeds nothing again (features are cached locally per extractor), and fits nothing again: the
collection records what its model was fitted on (:mod:`hierqdrant.pipelines.fingerprint`), so the same
images, labels and settings continue with the stored model on any machine, and other ones are refused
naming what differs (a collection that records nothing refits and compares model ids).

The whole run holds the collection's writer lock (embedded store; another writer gets a one-line error,
or waits with ``wait``). The collection is marked ``incomplete`` before its first point is written and
``complete`` after the last upsert and optimize, so an ingest stopped at any moment is visible as such and
the same ingest run again completes it (DESIGN.md §2.6). The ``fault(...)`` calls name the write
boundaries that the fault-injection tests stop the process at.

While it runs it reports through :class:`~hierqdrant.evaluation.hooks.Hooks`: a line per phase (the
source scanned, embedding, fitting PCA, the Gaussians and the tree, tuning, upserting) and progress
counters (embedding, each tune grid, upserting) — or, with ``IngestOptions.progress``, rich bars of its
own for embedding and upserting. The summary carries ``warnings``: a randomly initialised extractor and
what :func:`hierqdrant.core.diagnostics.model_warnings` finds in a model this run fitted.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import numpy as np
from rich.console import Console

from hierqdrant.core import diagnostics
from hierqdrant.core.classifiers import LinearClassifier
from hierqdrant.core.errors import InputError, ModelMismatchError
from hierqdrant.core.faults import fault
from hierqdrant.core.model import HierarchyModel, check_leaf_sources
from hierqdrant.core.settings import FitSettings
from hierqdrant.evaluation.hooks import Hooks
from hierqdrant.evaluation.scoring import parse_metric
from hierqdrant.pipelines import fingerprint
from hierqdrant.pipelines.ingest_sources import Skip, Table, from_features_file, from_images
from hierqdrant.pipelines.ingest_subclasses import fit_subclasses, subclass_line, subclass_source, subclass_warnings
from hierqdrant.store.collection import (
    DEFAULT_PAYLOAD_KEY,
    check_intact,
    check_payload_key,
    check_recreate,
    create_collection,
    not_a_hierqdrant_collection,
    read_collection_model,
    refuse_attached,
    upsert_points,
    writing,
)
from hierqdrant.store.engines import Engine
from hierqdrant.store.engines.cluster import check_layout
from hierqdrant.store.lifecycle import check_new_name, mark_complete, open_for_writing
from hierqdrant.vision.devices import Backend
from hierqdrant.vision.extractor import is_random_init


def fitting_line(
    pca: int | float | None,
    classes: int,
    builder: str,
    items: int,
    dims: int,
    settings: FitSettings | None = None,
) -> str:
    """The line that says a fit starts (PCA, Gaussians, the tree and the query classifier run as one step);
    ``settings`` adds the leaf sources."""
    if pca is None:
        kept = "all dims"
    else:
        kept = f"{pca} dim{'s' * (pca != 1)}" if isinstance(pca, int) else f"{pca:g} of the variance"
    line = f"fitting PCA ({kept}), {classes} class Gaussians and the {builder} tree on {items} items of {dims} dims"
    if settings is not None:
        line += f"; leaves: {leaf_sources(settings.query_classifier, settings.leaf_from)}"
    return line


def leaf_sources(query_classifier: str, leaf_from: str) -> str:
    """The leaf sources in words: ``tied query leaf, labels as stored leaves``."""
    stored = "labels as stored leaves" if leaf_from == "label" else "predicted stored leaves"
    return f"{query_classifier} query leaf, {stored}"


def fitted_line(model: HierarchyModel, seconds: float) -> str:
    """The line that says what a fit found."""
    variance = float(model.projection.explained_variance_ratio.sum())
    return (
        f"fitted in {seconds:.1f} s: {model.dims} PCA dims ({variance:.1%} of the variance), "
        f"tree height {model.tree_height}"
    )


def extractor_warnings(description: dict[str, Any] | None) -> list[str]:
    """A warning when the features come from a randomly initialised network (``--weights random``)."""
    if not is_random_init(description):
        return []
    name = (description or {}).get("name", "the backbone")
    return [
        f"the features come from {name} with random weights (--weights random): an untrained network, whose "
        "rankings mean little; use its pretrained weights (omit --weights) or a trained checkpoint (--weights FILE)"
    ]


@dataclass
class IngestOptions(FitSettings):
    """What ``hierqdrant ingest`` takes besides the source and the collection: how to embed, how to
    fit (the :class:`~hierqdrant.core.settings.FitSettings` it extends: builder, threshold, alpha,
    taxonomy, pca, covariance, leaf_from, query_classifier), whether to tune t and α instead, and how to
    store. ``head``: a checkpoint whose final layer is the ``head`` query classifier of a features file
    (from images the backbone's own final layer is used)."""

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
    wait: bool = False  # wait for another process writing the collection instead of failing
    cache_dir: Path = Path(".hierqdrant") / "cache"
    upsert_batch: int = 1024
    progress: bool = True  # rich bars for embedding and upserting (else the hooks' progress counters)
    head: str | None = None  # a checkpoint holding the head of a features file's network
    split_classes: bool = False  # sub-class leaves by an x-means split of each class (DESIGN.md §1.9)
    backend: Backend = "local"  # "ray": embed in a pool of Ray actors (hierqdrant.vision.ray_extract)
    ray_concurrency: int | None = None  # Ray actors (default: one per GPU, else one per CPU)
    shards: int | None = None  # a new collection's shard count on a server (default: the server's, 1)
    replicas: int | None = None  # … and its replication factor; the embedded engine refuses either above 1


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
    warnings: list[str] = field(default_factory=list)
    random_init: bool = False  # embedded by a randomly initialised network

    @property
    def query_classifier(self) -> str:
        return self.model.query_classifier

    @property
    def leaf_from(self) -> str:
        return self.model.leaf_from

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
            "random_init": self.random_init,
            "query_classifier": self.query_classifier,
            "leaf_from": self.leaf_from,
            "warnings": list(self.warnings),
        }


def ingest(
    source: str | Path,
    engine: Engine,
    collection: str,
    options: IngestOptions | None = None,
    *,
    console: Console | None = None,
    log: Callable[[str], None] | None = None,
    hooks: Hooks | None = None,
) -> IngestResult:
    """Ingest ``source`` (image folder, train/test folders, CUB, unlabelled folder or features .npz).

    ``hooks``: how it reports while it runs (a line per phase, progress counters); ``log`` alone: the
    lines only.
    """
    opts = options or IngestOptions()
    hooks = hooks or (Hooks(log=log) if log is not None else Hooks())
    say = hooks.log
    started = time.perf_counter()
    check_payload_key(opts.payload_key)
    check_leaf_sources(opts.query_classifier, opts.leaf_from)
    if opts.head is not None and opts.query_classifier != "head":
        raise InputError("--head gives the head query classifier", "add --query-classifier head, or drop --head")
    if opts.tune and opts.query_classifier == "head":
        raise InputError("--tune does not take the head query classifier yet", "drop --tune, or use another one")
    if opts.tune and parse_metric(opts.tune_metric)[0] == "mahp":
        raise InputError(
            f"ingest --tune cannot score {opts.tune_metric}: it needs a taxonomy to score by",
            "use --tune-metric map@r, map@K or p@1, or hierqdrant tune --score-taxonomy FILE",
        )
    if opts.keep_model and (opts.tune or opts.split_classes):
        raise InputError("--keep-model keeps the stored model; --tune and --split-classes fit a new one", "drop one")
    src = Path(source)
    if not src.exists():
        raise InputError(f"{src} does not exist", "pass an image folder or a features .npz")
    _check_backend(opts, src)
    check_layout(engine, opts.shards, opts.replicas)  # before anything is embedded or written

    def waiting(pid: int | None) -> None:
        say(f"collection {collection!r} is being written by another process (pid {pid or '?'}); waiting for it")

    with writing(engine, collection, wait=opts.wait, on_wait=waiting):
        return _ingest(src, engine, collection, opts, console, hooks, started)


def _check_backend(opts: IngestOptions, src: Path) -> None:
    """The embedding backend is known and, for images through Ray, installed (one line saying how if not),
    before anything is scanned or written; a features file is not embedded and needs no backend."""
    if opts.backend not in get_args(Backend):
        raise InputError(f"unknown backend {opts.backend!r}", f"use {' or '.join(get_args(Backend))}")
    if opts.backend == "ray" and src.is_dir():
        from hierqdrant.vision.ray_extract import require_ray

        require_ray()


def _stored_model(engine: Engine, collection: str) -> tuple[HierarchyModel, dict[str, Any]] | None:
    """The collection's model; ``None`` for an empty collection without one (a create that stopped)."""
    if engine.read_info(collection) is None:
        points = engine.count(collection)
        if points:
            raise not_a_hierqdrant_collection(collection, points)
        return None
    return read_collection_model(engine, collection)


def _ingest(
    src: Path,
    engine: Engine,
    collection: str,
    opts: IngestOptions,
    console: Console | None,
    hooks: Hooks,
    started: float,
) -> IngestResult:
    say = hooks.log
    key = opts.payload_key
    stored: tuple[HierarchyModel, dict[str, Any]] | None = None
    if opts.recreate:
        check_recreate(engine, collection)  # only a collection ingest made (or a damaged one) is ever dropped
    else:
        check_intact(engine, collection)
        if engine.exists(collection):
            refuse_attached(collection, engine.read_info(collection), "ingest into it")
            stored = _stored_model(engine, collection)
            open_for_writing(engine, collection)  # refused here (another process has it open), not midway
    check_new_name(engine, collection, recreate=opts.recreate)  # embedded: 'cache' is the feature cache

    if src.is_file():
        table = from_features_file(src, stored, opts)
        say(f"read {len(table.keys)} × {table.features.shape[1]} features from {src.name}")
    else:
        table = from_images(src, collection, opts, stored, console, hooks)

    labelled = [i for i, y in enumerate(table.labels) if y is not None and table.splits[i] != "test"]
    fitted = False
    warnings = extractor_warnings(table.extractor)
    use_stored = not labelled or (stored is not None and opts.keep_model)
    inputs = None if use_stored else _fit_inputs(table, labelled, opts)  # what a fit would be on
    if stored is not None and (opts.keep_model or not labelled):
        model = stored[0]
        if model.input_dims != table.features.shape[1]:
            raise ModelMismatchError(
                f"collection {collection!r} expects {model.input_dims}-d features, the source gives "
                f"{table.features.shape[1]}-d",
                "embed with the collection's extractor (omit --model/--weights)",
            )
    elif stored is not None and inputs is not None and _fitted_on(collection, stored, inputs, opts):
        model = stored[0]  # fitted on these very inputs: continued with, whatever the machine (DESIGN.md §2.6)
        say(f"continuing with the collection's model {model.model_id}, fitted on the same images and settings")
        idx = np.asarray(labelled)  # what the model is like on its fitting data, said again as a fit says it
        labels_of = np.asarray([table.labels[i] for i in labelled])
        warnings += diagnostics.model_warnings(model, table.features[idx], labels_of, where="on the fitting data")
    else:
        if not labelled:
            raise InputError(
                f"{src} has no labelled images and collection {collection!r} has no model to assign them",
                "ingest a labelled folder first (class subfolders), then unlabelled ones",
            )
        idx = np.asarray(labelled)
        train_x, train_y = table.features[idx], np.asarray([table.labels[i] for i in labelled])
        subclasses = subclass_source(table, opts)  # sub-class leaves (DESIGN.md §1.9)
        if opts.tune:
            from hierqdrant.evaluation.tuning import TuneSettings, tune

            tuned = tune(
                train_x,
                train_y,
                table.class_names,
                fit=opts,
                settings=TuneSettings(metric=opts.tune_metric),
                extractor=table.extractor,
                hooks=hooks,
                splitter=None if subclasses is None else subclasses.split,
            )
            warnings += tuned.warnings
            if subclasses is not None and tuned.model.subclasses is not None:
                say(subclass_line(tuned.model.subclasses.subclass_of, len(table.class_names), subclasses.where))
                split = subclasses.split(train_x, np.asarray(train_y, dtype=np.int64))  # the final model's
                warnings += subclass_warnings(tuned.model, split, train_x, train_y)
            say(
                f"tuned on a validation split: {tuned.best_classifier} query leaf, {tuned.best_dims} PCA dims, "
                f"t={tuned.best_threshold}, "
                f"α={tuned.best_alpha:g} "
                f"({opts.tune_metric} {tuned.best_score:.4f}; cosine {tuned.cosine_score:.4f})"
            )
            model = tuned.model
        elif subclasses is not None:
            model, split = fit_subclasses(subclasses, table, train_x, train_y, opts, say)
            warnings += diagnostics.model_warnings(model, train_x, train_y, where="on the fitting data")
            warnings += subclass_warnings(model, split, train_x, train_y)
        else:
            say(fitting_line(opts.pca, len(table.class_names), opts.builder, len(labelled), train_x.shape[1], opts))
            t0 = time.perf_counter()
            head = _head(table, opts, src)
            model = opts.fit_model(
                train_x, train_y, class_names=table.class_names, extractor=table.extractor, head=head
            )
            say(fitted_line(model, time.perf_counter() - t0))
            warnings += diagnostics.model_warnings(model, train_x, train_y, where="on the fitting data")
        fitted = True
        if stored is not None and stored[0].model_id != model.model_id:
            raise _other_model(collection, stored[0], model)

    labels: list[int | None] = [None if y is None else int(y) for y in table.labels]
    if table.class_names != model.class_names:
        labels = _relabel(table, model)
    # The stored leaves follow the model's leaf sources (its own when it is the stored one). Without labels
    # to use, the default path leaves it to upsert_points (PCA and the leaf per chunk); the head reads the
    # raw features, so its leaves are found here.
    leaves = None
    if model.query_classifier == "head" or (model.leaf_from == "label" and any(y is not None for y in labels)):
        leaves = _database_leaves(model, table.features, labels)

    # Everything is checked: from here on the store is written.
    if opts.recreate:
        check_recreate(engine, collection)  # again, right before the drop: still one that ingest made
        if engine.exists(collection):
            say(f"dropping collection {collection!r}")
        engine.delete(collection)  # also a damaged one; nothing when there is none
    # --shards/--replicas: a new collection only; an existing one keeps its own layout
    create_collection(
        engine, collection, model, payload_key=key, state="incomplete", shards=opts.shards, replicas=opts.replicas,
        fit_inputs=inputs if fitted else None,
    )  # fmt: skip
    upsert_started = time.perf_counter()
    payloads = [{"path": k} for k in table.keys]
    say(f"upserting {len(table.keys)} points into {collection!r}")
    _upsert_with_progress(engine, collection, model, table, labels, payloads, leaves, key, opts, console, hooks)
    engine.optimize(collection)
    fault("before-complete")
    mark_complete(engine, collection)  # the last write: complete, with the point count it leaves
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
        warnings=list(dict.fromkeys(warnings)),
        random_init=is_random_init(table.extractor),
    )


def _fit_inputs(table: Table, labelled: list[int], opts: IngestOptions) -> dict[str, Any]:
    """The fingerprint of a fit on the ``labelled`` rows of ``table`` (:mod:`.fingerprint`)."""
    return fingerprint.fit_inputs(
        table.keys, table.labels, table.splits, table.class_names, labelled, table.extractor, opts,
        paths=table.paths, features=table.features,
    )  # fmt: skip


def _fitted_on(
    collection: str, stored: tuple[HierarchyModel, dict[str, Any]], inputs: dict[str, Any], opts: IngestOptions
) -> bool:
    """Whether the stored model was fitted on ``inputs``: True when its recorded fingerprint is equal, False
    when the collection records none to compare (then the fit runs and model ids are compared, as before);
    ``ModelMismatchError`` naming what differs otherwise."""
    then = fingerprint.recorded(stored[1], inputs)
    if then is None:
        return False
    why = fingerprint.differences(then, inputs)
    if fingerprint.leaf_sources_differ(then, inputs):
        why.insert(0, _leaves_differ(stored[0], opts.query_classifier, opts.leaf_from))
    if not why:
        return True
    model = stored[0]
    raise ModelMismatchError(
        f"collection {collection!r} holds model {model.model_id}, fitted on other inputs than this ingest's: "
        + "; ".join(why),
        _other_model_fix(model, opts.query_classifier, opts.leaf_from),
    )


def _leaves_differ(stored: HierarchyModel, query_classifier: str, leaf_from: str) -> str:
    was = leaf_sources(stored.query_classifier, stored.leaf_from)
    return f"its leaves: {was}; this ingest's: {leaf_sources(query_classifier, leaf_from)}"


def _other_model_fix(stored: HierarchyModel, query_classifier: str, leaf_from: str) -> str:
    """How to go on when the collection holds another model: --paper first when that is what it was."""
    fix = (
        "pass --recreate to rebuild the collection, --keep-model to assign with the stored model, "
        "or choose another --collection"
    )
    paper = ("mahalanobis", "predicted")
    if (stored.query_classifier, stored.leaf_from) == paper and (query_classifier, leaf_from) != paper:
        fix = "pass --paper to fit the paper's setting as before, " + fix
    return fix


def _other_model(collection: str, stored: HierarchyModel, model: HierarchyModel) -> ModelMismatchError:
    """The collection holds another model than this ingest fits; say so, naming differing leaf sources."""
    why = "other images or settings"
    if (stored.query_classifier, stored.leaf_from) != (model.query_classifier, model.leaf_from):
        why = _leaves_differ(stored, model.query_classifier, model.leaf_from)
    return ModelMismatchError(
        f"collection {collection!r} holds model {stored.model_id}; this ingest fits model {model.model_id} ({why})",
        _other_model_fix(stored, model.query_classifier, model.leaf_from),
    )


def _database_leaves(
    model: HierarchyModel, features: np.ndarray, labels: list[int | None], chunk: int = 32768
) -> np.ndarray:
    """:meth:`HierarchyModel.database_leaves` in chunks (PCA of a chunk at a time, as upsert_points does)."""
    out = np.empty(features.shape[0], dtype=np.int64)
    for start in range(0, features.shape[0], chunk):
        stop = min(start + chunk, features.shape[0])
        out[start:stop] = model.database_leaves(features[start:stop], labels[start:stop])
    return out


def _head(table: Table, opts: IngestOptions, src: Path) -> LinearClassifier | None:
    """The network's final layer for ``query_classifier="head"`` (None otherwise), checked against the classes."""
    if opts.query_classifier != "head":
        return None
    if table.head is None:
        raise InputError(
            f"{src.name} is a features file: the network's final layer (the head query classifier) is not in it",
            "pass --head CHECKPOINT (the network the features came from), or use --query-classifier tied",
        )
    return table.head.check(table.class_names, opts.head or str(table.extractor.get("weights") or "the network"))


def _relabel(table: Table, model: HierarchyModel) -> list[int | None]:
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
    table: Table,
    labels: list[int | None],
    payloads: list[dict[str, Any]],
    leaves: np.ndarray | None,
    key: str,
    opts: IngestOptions,
    console: Console | None,
    hooks: Hooks,
) -> None:
    def upsert(advance: Callable[[int], None] | None) -> None:
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

    if not opts.progress:
        with hooks.progress(len(table.keys), "upserting") as counter:
            upsert(counter)
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    columns = [
        TextColumn("upserting"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} points"),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("upsert", total=len(table.keys), rate="")
        t0 = time.perf_counter()

        def advance(n: int) -> None:
            bar.advance(task, n)
            done = bar.tasks[0].completed
            bar.update(task, rate=f"{done / max(time.perf_counter() - t0, 1e-9):,.0f} points/s")

        upsert(advance)
